"""Multi-process (multi-host) JAX: initialisation, and moving arrays between hosts.

Why: one JAX process sees only its host's accelerators. To train over several hosts
(or several processes of one host, as the tests do on CPU), every process calls
`jax.distributed.initialize` before it touches a device; then `jax.devices()` lists the
devices of all processes, the trainer's mesh (`state.make_mesh`) spans them, and every
jitted update is one SPMD program whose collectives cross processes (gloo on CPU,
NCCL on GPU, ICI/DCN on TPU).

Where the settings come from (`initialize`): `cfg.distributed` first; an empty field
falls back to the environment:
  coordinator_address  JAX_COORDINATOR_ADDRESS (host:port of process 0's coordinator)
  num_processes        JAX_NUM_PROCESSES
  process_id           JAX_PROCESS_ID
  local_device_ids     JAX_LOCAL_DEVICE_IDS (comma-separated)
With none of them set the run is a single process (nothing is initialised), unless
`cfg.distributed.auto` asks JAX to detect a cluster (SLURM, Open MPI, Kubernetes, Cloud
TPU) itself. On CPU the cross-process collectives are gloo's.

What the trainer guarantees with N processes (train/loop.py):
  * every process rolls out the *same* episodes (same tasks, same seeds, a process-local
    copy of the weights), so every process holds the same host batch; the batch then
    becomes one global array sharded over the whole mesh, and the update is the one a
    single process with all the devices would make (to float tolerance). A digest of the
    batch is compared across processes each step, so rollouts that diverge stop the run
    instead of training silently on inconsistent data. Rollout work is duplicated, not
    split: the simple, exactly reproducible choice (splitting it needs batch-invariant
    sampling numerics to keep that guarantee);
  * only process 0 writes files (config.json, metrics, trajectories, the export, the
    checkpoint manifests); every process takes part in orbax's checkpoint saves and
    restores (orbax writes each process's shards and lets the primary host commit), so a
    checkpoint of an N-process run resumes with M processes and vice versa.

Imports: jax only.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID", "local_device_ids": "JAX_LOCAL_DEVICE_IDS"}


def settings(dcfg=None) -> dict[str, Any]:
    """The resolved settings: {coordinator_address, num_processes, process_id,
    local_device_ids, auto}; config fields first, then the environment variables."""
    get = (lambda k, d: dcfg.get(k, d)) if dcfg is not None else (lambda k, d: d)
    address = str(get("coordinator_address", "") or os.environ.get(ENV["coordinator_address"], ""))
    num = int(get("num_processes", 0) or os.environ.get(ENV["num_processes"], 0) or 0)
    pid = get("process_id", -1)
    pid = int(os.environ.get(ENV["process_id"], -1)) if pid is None or int(pid) < 0 else int(pid)
    ids = str(get("local_device_ids", "") or os.environ.get(ENV["local_device_ids"], ""))
    return {"coordinator_address": address, "num_processes": num, "process_id": pid,
            "local_device_ids": [int(i) for i in ids.split(",") if i.strip()] or None,
            "auto": bool(get("auto", False))}


def initialize(dcfg=None) -> bool:
    """Calls `jax.distributed.initialize` when settings ask for more than one process
    (or `auto`); returns whether the run is multi-process. Idempotent: a second call
    (the CLI, then the Trainer) does nothing. Must run before any device is used."""
    if jax.distributed.is_initialized():
        return True
    s = settings(dcfg)
    if not s["auto"] and s["num_processes"] <= 1 and not s["coordinator_address"]:
        return False
    if not s["auto"]:
        missing = [k for k, bad in (("coordinator_address", not s["coordinator_address"]),
                                    ("num_processes", s["num_processes"] < 1),
                                    ("process_id", s["process_id"] < 0)) if bad]
        if missing:
            raise ValueError(
                f"multi-process training needs {', '.join(missing)} (config "
                f"distributed.* or {', '.join(ENV[k] for k in missing)})")
    # gloo is this jax's default for CPU; set it explicitly (a no-op on GPU/TPU)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if not s["auto"]:
        kwargs = {"coordinator_address": s["coordinator_address"],
                  "num_processes": s["num_processes"], "process_id": s["process_id"]}
    if s["local_device_ids"] is not None:
        kwargs["local_device_ids"] = s["local_device_ids"]
    jax.distributed.initialize(**kwargs)
    return True


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_primary() -> bool:
    """Process 0: the one that writes files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches `name` (a no-op with one process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
    """`jax.device_get` that also works on global arrays spanning other processes: a
    replicated one is read from a local shard, a sharded one is gathered from all
    processes (every process must call this with the same tree)."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return jax.device_get(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_shards[0].data)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def local_copy(tree: Any, device=None) -> Any:
    """The tree's arrays on one local device (default: this process's first), for
    process-local work such as sampling. A no-op with one process."""
    if not is_multiprocess():
        return tree
    device = device or jax.local_devices()[0]
    return jax.device_put(to_host(tree), device)


def assert_same_on_all(name: str, *arrays: np.ndarray) -> None:
    """Raises unless every process holds the same arrays (compares a 32-byte digest)."""
    if not is_multiprocess():
        return
    import hashlib

    from jax.experimental import multihost_utils

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    digest = np.frombuffer(h.digest(), dtype=np.uint32)
    everyone = np.asarray(multihost_utils.process_allgather(digest))
    if not (everyone == everyone[0]).all():
        raise RuntimeError(
            f"{name} differs between processes (process {jax.process_index()} of "
            f"{jax.process_count()}): the processes' rollouts diverged")
