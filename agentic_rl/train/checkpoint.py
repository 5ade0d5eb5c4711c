"""Checkpoints with orbax: train state (params, optimizer, step, PRNG) + host state as JSON.

Layout: `workdir/checkpoints/<step>/{state,host}` (one orbax step directory, written
atomically) plus `<step>/agentic_rl_manifest.json`. The state is saved as a flat
{index: array} dict with the leaf paths, shapes and dtypes listed in the host JSON, so any
pytree (nnx States, optax states) round-trips exactly and a restore into a different
structure fails with a message naming the mismatch. The frozen base weights and the KL
reference are not saved: they are rebuilt from the base model.

Integrity: after orbax has written (and renamed into place) a step directory, the
manifest lists the size and sha256 of every file in it, with a digest of its own
content; it is written to a temporary name and renamed, so it is the commit marker. A
step without a manifest is *incomplete* (the process died while saving it); a step whose
manifest or files do not match, or that fails to load, or whose arrays are not all finite,
is *corrupt*. Restoring verifies the step first; `restore_latest` tries the newest step,
then older ones, saying on stderr which step was skipped and why. Deleting a step removes
its manifest first, so a step half-deleted by a kill is incomplete, never "corrupt".

Multi-process runs (train/distributed.py): every process calls `save`, `restore*` and
the deletions (orbax's save, restore and delete are collective: each process writes or
reads its own shards, the primary host commits); only process 0 writes the manifest and
deletes or moves files, with a barrier after each, so every process then sees the same
directory. Arrays are saved with their global shapes, so a checkpoint restores into any
number of processes and devices (the target state's shardings decide the layout).

Retention: the `keep` most recent steps plus the best step by the eval metric; the
host JSON of every checkpoint carries `best` so `latest` and `best` both resolve.

Imports: orbax, jax, numpy and the train modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from agentic_rl.train import distributed
from agentic_rl.train.state import TrainState

MANIFEST = "agentic_rl_manifest.json"
MANIFEST_FORMAT = 1
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's in-progress step directories
FRESH_HINT = ("delete the run directory (or move it away) to start afresh, or pass a fresh "
              "--workdir")


def _saved_tree(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "rng": state.rng}


def _flatten(tree) -> tuple[dict[str, Any], list[str], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
    flat = {f"{i:06d}": leaf for i, (_, leaf) in enumerate(leaves_with_path)}
    return flat, names, treedef


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint of the requested kind in the directory."""


class CorruptCheckpointError(CheckpointNotFoundError):
    """A checkpoint (or every checkpoint) failed verification: no usable one is left."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was written by a run with another model/optimizer structure."""


class _BadStep(Exception):
    """One step failed verification. kind: 'incomplete' or 'corrupt'."""

    def __init__(self, step: int, kind: str, reason: str):
        super().__init__(f"checkpoint at step {step} is {kind} ({reason})")
        self.step, self.kind, self.reason = step, kind, reason


# ------------------------------------------------------------------ manifests


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _step_files(step_dir: Path) -> dict[str, Path]:
    """Every file of a step directory but the manifest (and its temporary), by relative
    path. Symlinks count as files (their target is hashed), directories are walked."""
    out = {}
    for root, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(step_dir).as_posix()
            if rel not in (MANIFEST, MANIFEST + ".tmp"):
                out[rel] = path
    return out


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(step_dir: Path, step: int) -> dict[str, Any]:
    """Writes `step_dir/agentic_rl_manifest.json` atomically (tmp + fsync + rename)."""
    files = {rel: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for rel, p in _step_files(step_dir).items()}
    body = {"format": MANIFEST_FORMAT, "step": int(step), "files": files}
    manifest = {**body, "digest": _digest(body)}
    tmp = step_dir / (MANIFEST + ".tmp")
    with tmp.open("w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(step_dir / MANIFEST)
    _fsync_dir(step_dir)
    return manifest


def verify_step(step_dir: Path, step: int) -> None:
    """Raises _BadStep unless every file of the step matches its manifest."""
    if not step_dir.is_dir():
        raise _BadStep(step, "incomplete", "its directory is missing")
    path = step_dir / MANIFEST
    if not path.is_file():
        raise _BadStep(step, "incomplete",
                       "no manifest: the process was probably killed while saving it")
    try:
        manifest = json.loads(path.read_text())
        body = {k: manifest[k] for k in ("format", "step", "files")}
        ok = manifest["digest"] == _digest(body) and isinstance(body["files"], dict)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise _BadStep(step, "corrupt", f"its manifest is unreadable: {e}") from None
    if not ok:
        raise _BadStep(step, "corrupt", "its manifest does not match its own digest")
    if body["format"] != MANIFEST_FORMAT or body["step"] != step:
        raise _BadStep(step, "corrupt", f"its manifest is for step {body['step']} "
                       f"(format {body['format']})")
    found = _step_files(step_dir)
    for rel, want in sorted(body["files"].items()):
        p = found.pop(rel, None)
        if p is None or not p.is_file():
            raise _BadStep(step, "corrupt", f"file {rel} is missing")
        size = p.stat().st_size
        if size != want["size"]:
            raise _BadStep(step, "corrupt",
                           f"file {rel} has {size} bytes, expected {want['size']}")
        if _sha256(p) != want["sha256"]:
            raise _BadStep(step, "corrupt", f"file {rel} fails its sha256 checksum")
    if found:
        raise _BadStep(step, "corrupt", f"file {sorted(found)[0]} is not in its manifest")


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the checkpointer


class Checkpointer:
    """Saves and restores `TrainState` + host state under `directory`.

    read_only: never create, delete or move anything (for evaluation of a run)."""

    def __init__(self, directory: str | Path, *, keep: int = 3, best_mode: str = "max",
                 read_only: bool = False, log: Callable[[str], None] = _warn):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.best_mode = best_mode
        self.read_only = read_only
        self.log = log
        self._verified: set[int] = set()
        # read_only is enforced here (orbax's own read-only mode logs warnings on stderr)
        options = ocp.CheckpointManagerOptions(
            create=not read_only, enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "host"))

    def close(self) -> None:
        self.manager.close()

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def all_steps(self) -> list[int]:
        """Every step directory on disk, committed or not."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.name.isascii() and p.name.isdigit() and str(int(p.name)) == p.name
                      and p.is_dir())

    def steps(self) -> list[int]:
        """The committed steps (a manifest is present; not yet verified)."""
        return [s for s in self.all_steps() if (self.step_dir(s) / MANIFEST).is_file()]

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def is_better(self, value: float, best: dict | None) -> bool:
        if best is None or value is None or not np.isfinite(value):
            return best is None and value is not None and bool(np.isfinite(value))
        return value > best["value"] if self.best_mode == "max" else value < best["value"]

    # ------------------------------------------------------------------ writing

    def save(self, step: int, state: TrainState, host: dict[str, Any]) -> None:
        """Writes a checkpoint (overwriting one at the same step), commits it with its
        manifest and prunes old ones.

        `host["best"]`, when set, is {"step", "value", "metric"}; that step is kept."""
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only")
        flat, names, _ = _flatten(_saved_tree(state))
        host = {**host, "leaf_paths": names,
                "leaf_shapes": [list(np.shape(x)) for x in flat.values()],
                "leaf_dtypes": [str(np.dtype(x.dtype)) for x in flat.values()]}
        if step in self.all_steps():
            self._delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flat), host=ocp.args.JsonSave(host)), force=True)
        self.manager.wait_until_finished()
        if not self.step_dir(step).is_dir():
            raise RuntimeError(f"orbax wrote no directory for step {step} in {self.directory}")
        if distributed.is_primary():
            write_manifest(self.step_dir(step), step)
        distributed.barrier(f"agentic_rl:manifest:{step}")
        self._verified.add(step)
        self._prune(host.get("best"))

    def _delete(self, step: int) -> None:
        """Un-commits (manifest first), then removes a step directory."""
        self._verified.discard(step)
        path = self.step_dir(step)
        primary = distributed.is_primary()
        if primary:
            (path / MANIFEST).unlink(missing_ok=True)
        distributed.barrier(f"agentic_rl:uncommit:{step}")
        if step in self.manager.all_steps():
            self.manager.delete(step)  # collective: every process calls it
        if primary and path.exists():  # a directory orbax does not track (no metadata)
            shutil.rmtree(path, ignore_errors=True)
        distributed.barrier(f"agentic_rl:deleted:{step}")
        self.manager.reload()

    def _prune(self, best: dict | None) -> None:
        protected = set(self.steps()[-self.keep:])
        if best is not None:
            protected.add(int(best["step"]))
        for s in self.all_steps():
            if s not in protected:
                self._delete(s)

    def _quarantine(self, step: int) -> Path:
        """Moves a corrupt step out of the way (kept for inspection) to
        `<directory>.corrupt/<step>[-n]`."""
        root = self.directory.with_name(self.directory.name + ".corrupt")
        dest, n = root / str(step), 1
        while dest.exists():
            dest, n = root / f"{step}-{n}", n + 1
        self._verified.discard(step)
        distributed.barrier(f"agentic_rl:quarantine:{step}")  # all have chosen `dest`
        if distributed.is_primary():
            root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.step_dir(step)), dest)
        distributed.barrier(f"agentic_rl:quarantined:{step}")
        self.manager.reload()
        return dest

    # ------------------------------------------------------------------ reading

    def verify(self, step: int) -> None:
        """Raises CorruptCheckpointError (kind and reason in the message) unless the step's
        files match its manifest."""
        try:
            self._verify(step)
        except _BadStep as e:
            raise CorruptCheckpointError(f"{e}; {FRESH_HINT}") from None

    def _verify(self, step: int) -> None:
        if step not in self._verified:
            verify_step(self.step_dir(step), step)
            self._verified.add(step)

    def resolve(self, which: str | int = "latest") -> int:
        """A step number from 'latest' (the newest step that verifies), 'best' or an int."""
        if not self.all_steps():
            raise CheckpointNotFoundError(f"no checkpoint in {self.directory}")
        if which == "latest":
            return self._newest_good(self.all_steps())
        if which == "best":
            best = self.read_host(self.resolve("latest")).get("best")
            if best is None:
                raise CheckpointNotFoundError(
                    f"no best checkpoint in {self.directory}: no evaluation has run yet "
                    "(use --checkpoint latest)"
                )
            step = int(best["step"])
            if step not in self.all_steps():
                raise CheckpointNotFoundError(
                    f"the best checkpoint (step {step}) is no longer in {self.directory}; "
                    "use --checkpoint latest")
            return step
        try:
            step = int(which)
        except (TypeError, ValueError):
            raise CheckpointNotFoundError(
                f"--checkpoint must be latest, best or a step number, got {which!r}") from None
        if step not in self.all_steps():
            raise CheckpointNotFoundError(f"no checkpoint at step {step}; have {self.steps()}")
        return step

    def _newest_good(self, steps: list[int]) -> int:
        bad: list[_BadStep] = []
        for i, s in enumerate(sorted(steps, reverse=True)):
            try:
                self._verify(s)
                return s
            except _BadStep as e:
                bad.append(e)
                self._report(e, older=sorted(steps, reverse=True)[i + 1:])
        raise self._none_intact(bad)

    def _report(self, e: _BadStep, older: list[int]) -> None:
        then = f"falling back to step {older[0]}" if older else "no older checkpoint is left"
        self.log(f"{e}; {then}")

    def _none_intact(self, bad: list[_BadStep]) -> CorruptCheckpointError:
        found = "; ".join(f"step {e.step}: {e.kind} ({e.reason})" for e in bad)
        return CorruptCheckpointError(
            f"no intact checkpoint in {self.directory} (found {found}); {FRESH_HINT}")

    def read_host(self, step: int) -> dict[str, Any]:
        """The host JSON of a step (not verified); CorruptCheckpointError if unreadable."""
        try:
            return self._read_host(step)
        except _BadStep as e:
            raise CorruptCheckpointError(f"{e}; {FRESH_HINT}") from None

    def _read_host(self, step: int) -> dict[str, Any]:
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                host=ocp.args.JsonRestore()))
            host = dict(out["host"])
        except Exception as e:  # noqa: BLE001 - any failure to read it means a bad step
            raise _BadStep(step, "corrupt", f"its host state is unreadable: "
                           f"{type(e).__name__}: {_first_line(e)}") from None
        if not isinstance(host.get("step"), int) or not isinstance(host.get("leaf_paths"), list):
            raise _BadStep(step, "corrupt", "its host state lacks step / leaf_paths")
        return host

    def _check_compatible(self, step: int, host: dict[str, Any], flat: dict[str, Any],
                          names: list[str]) -> None:
        where = f"checkpoint {self.step_dir(step)}"
        hint = (f"it was written by a run with another config; {FRESH_HINT} for this config, "
                "or run with the config the run was started with")
        if host.get("leaf_paths") != names:
            saved = set(host.get("leaf_paths", []))
            diff = sorted(set(names) ^ saved)[:3]
            raise IncompatibleCheckpointError(
                f"{where} is incompatible with this model/optimizer (differing leaves, e.g. "
                f"{diff}): {hint}")
        shapes, dtypes = host.get("leaf_shapes"), host.get("leaf_dtypes")
        if shapes is None or dtypes is None:
            return  # written before shapes were recorded; orbax checks them on restore
        for name, x, shape, dtype in zip(names, flat.values(), shapes, dtypes):
            if list(np.shape(x)) != list(shape) or str(np.dtype(x.dtype)) != dtype:
                raise IncompatibleCheckpointError(
                    f"{where} is incompatible with this model/optimizer: {name} is "
                    f"{dtype}{list(shape)} there, {np.dtype(x.dtype)}{list(np.shape(x))} "
                    f"here: {hint}")

    def _restore(self, step: int, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """Verified restore; raises _BadStep or IncompatibleCheckpointError."""
        self._verify(step)
        flat, names, treedef = _flatten(_saved_tree(state))
        host = self._read_host(step)
        self._check_compatible(step, host, flat, names)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), flat)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
            restored = out["state"]
            tree = jax.tree.unflatten(treedef, [restored[k] for k in sorted(restored)])
        except Exception as e:  # noqa: BLE001 - verified files that do not load: a bad step
            raise _BadStep(step, "corrupt", f"orbax could not load it: {type(e).__name__}: "
                           f"{_first_line(e)}") from None
        bad = [n for n, x in zip(names, jax.tree.leaves(tree)) if not _finite(x)]
        if bad:
            raise _BadStep(step, "corrupt", f"it holds non-finite values in {len(bad)} "
                           f"array(s), e.g. {bad[0]}")
        state = state.replace(params=tree["params"], opt_state=tree["opt_state"],
                              step=tree["step"], rng=tree["rng"])
        return state, host

    def restore(self, step: int, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """Restores `step` (verified) into `state`'s structure and shardings; returns
        (state, host). Raises CorruptCheckpointError or IncompatibleCheckpointError."""
        try:
            return self._restore(step, state)
        except _BadStep as e:
            raise CorruptCheckpointError(f"{e}; {FRESH_HINT}") from None

    def restore_latest(self, state: TrainState, *, repair: bool = True
                       ) -> tuple[int, TrainState, dict[str, Any]] | None:
        """The newest step that verifies, loads and is finite: (step, state, host), or None
        when there is no committed checkpoint at all (a fresh start).

        Each skipped step is reported on stderr. With `repair`, steps newer than the one
        restored (and all steps when none was ever committed) are removed from
        `directory`: incomplete ones are deleted, corrupt ones moved to
        `<directory>.corrupt/`. Raises CorruptCheckpointError when committed checkpoints
        exist but none is intact, IncompatibleCheckpointError when one is for another
        model/optimizer."""
        steps = sorted(self.all_steps(), reverse=True)
        bad: list[_BadStep] = []
        for i, s in enumerate(steps):
            try:
                state, host = self._restore(s, state)
            except _BadStep as e:
                bad.append(e)
                self._report(e, steps[i + 1:])
                continue
            if repair and not self.read_only:
                self._remove(bad)
            return s, state, host
        if not bad or any(e.kind == "corrupt" for e in bad):
            if bad:
                raise self._none_intact(bad)
            return None
        if repair and not self.read_only:  # only interrupted saves: nothing was committed
            self._remove(bad)
        self.log(f"no committed checkpoint in {self.directory}; starting from step 0")
        return None

    def _remove(self, bad: list[_BadStep]) -> None:
        for e in bad:
            if e.kind == "corrupt":
                dest = self._quarantine(e.step)
                self.log(f"moved the corrupt checkpoint of step {e.step} to {dest}")
            else:
                self._delete(e.step)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _finite(x) -> bool:
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return True
    return bool(jnp.all(jnp.isfinite(x)))


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def load_trained_policy(workdir: str | Path, which: str | int = "latest"):
    """The policy of a training run at a checkpoint: (PolicyBundle, config, step).

    Rebuilds the model from the run's saved `config.json` and restores the trained params
    into it (LoRA adapters stay attached; the sampler handles them). 'latest' is the newest
    intact checkpoint (a corrupt newer one is skipped with a warning); nothing in the run
    directory is changed.
    """
    from agentic_rl.train import builders
    from agentic_rl.train.config import ConfigError
    from agentic_rl.train.config_files import from_dict
    from agentic_rl.train.state import init_train_state

    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(f"{workdir} is not a training run directory "
                                      "(no config.json)")
    try:
        cfg = from_dict(json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise CheckpointNotFoundError(
            f"{config_path} is unreadable or not a run config ({type(e).__name__}: "
            f"{_first_line(e)}); is {workdir} a training run directory?") from None
    if not (workdir / "checkpoints").is_dir():
        raise CheckpointNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint.keep,
                        best_mode=cfg.checkpoint.best_mode, read_only=True)
    try:
        try:
            built = builders.build_policy(cfg)
        except (ConfigError, TypeError, ValueError) as e:
            raise CheckpointNotFoundError(f"{config_path}: {_first_line(e)}") from None
        state = init_train_state(built.model, builders.optimizer(cfg), seed=cfg.seed,
                                 need_ref_copy=False)
        if which == "latest":
            found = ckpt.restore_latest(state, repair=False)
            if found is None:
                raise CheckpointNotFoundError(f"no checkpoint in {ckpt.directory}")
            step, state, _ = found
        else:
            step = ckpt.resolve(which)
            try:
                state, _ = ckpt.restore(step, state)
            except CorruptCheckpointError as e:
                msg = str(e).removesuffix(f"; {FRESH_HINT}")
                raise CorruptCheckpointError(
                    f"{msg}; use --checkpoint latest for the newest intact one") from None
    finally:
        ckpt.close()
    built.model = state.model()
    return built, cfg, step
