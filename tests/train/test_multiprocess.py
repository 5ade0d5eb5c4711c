"""Multi-process JAX: 2 real processes (gloo, 2 forced CPU devices each) train the tiny
model like 1 process with 4 devices, and checkpoints move between the two layouts.

Runs (tiny guess-number GRPO config, 2 steps, 4 global devices in every run):
  one      1 process, data parallel: the reference;
  two      2 processes, data parallel, from scratch (and the multi-process export);
  two_fsdp 2 processes, FSDP, resumed from `one`'s step-1 checkpoint: step 2;
  one_res  1 process, data parallel, resumed from `two`'s step-1 checkpoint: step 2.
Every run's final params equal `one`'s to float tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scripts.launch_multihost import launch
from tests.train.conftest import REPO

pytestmark = pytest.mark.slow

WORKER = [sys.executable, "-m", "tests.train.multiprocess_worker"]
TIMEOUT = 420


def _env(cache) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENTIC_RL_CACHE": str(cache),
           "JAX_PLATFORMS": "cpu"}
    for k in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _one_process(env, args) -> None:
    env = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([*WORKER, *args], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-4000:]


def _two_processes(env, args) -> None:
    prefix = f"{args[0]}.p"
    rc = launch([*WORKER, *args], 2, devices=2, timeout=TIMEOUT, env=env, cwd=str(REPO),
                log_prefix=prefix)
    if rc != 0:
        logs = []
        for i in range(2):
            text = open(f"{prefix}{i}.log", errors="replace").read().splitlines()
            keep = [x for x in text if not x.startswith(("W", "I", "[Gloo]", "    @"))]
            logs.append(f"--- process {i} ---\n" + "\n".join(keep[-40:]))
        pytest.fail(f"2-process run failed ({rc}):\n" + "\n".join(logs))


def _params(path, *, processes: int, resumed_from=None) -> dict[str, np.ndarray]:
    info = json.loads(path.with_name(path.name + ".json").read_text())
    assert info == {"step": 2, "resumed_from": resumed_from, "processes": processes,
                    "devices": 4}, info
    with np.load(path) as f:
        return {k: f[k] for k in f}


def _assert_close(a, b, what) -> None:
    assert sorted(a) == sorted(b), what
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst < 1e-4, f"{what}: params differ by up to {worst}"
    moved = max(float(np.max(np.abs(a[k]))) for k in a)
    assert moved > 1e-3, "the runs did not train"


def _resume_copy(src, dst, keep_step: int) -> None:
    """A copy of a run directory with its checkpoints after `keep_step` removed."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").iterdir():
        if p.name.isdigit() and int(p.name) > keep_step:
            shutil.rmtree(p)
    shutil.rmtree(dst / "export", ignore_errors=True)


def _losses(workdir) -> list[float]:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows]


def test_two_processes_train_and_resume_like_one(tmp_path, compile_cache):
    env = _env(compile_cache)
    no_export = "--config.checkpoint.export_final=False"
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(env, [str(one), str(tmp_path / "one.npz"), "2", "False", no_export])
    _two_processes(env, [str(two), str(tmp_path / "two.npz"), "2", "False"])
    ref = _params(tmp_path / "one.npz", processes=1)
    _assert_close(ref, _params(tmp_path / "two.npz", processes=2),
                  "2 processes vs 1 (data parallel)")
    # only process 0 wrote files: one metrics line per step, an export, two checkpoints
    assert len(_losses(two)) == 2
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-4, atol=1e-6)
    assert (two / "export" / "model.safetensors").is_file()
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["1", "2"]

    # a 1-process checkpoint resumes in 2 processes (with FSDP: another layout)
    _resume_copy(one, tmp_path / "two_fsdp", keep_step=1)
    _two_processes(env, [str(tmp_path / "two_fsdp"), str(tmp_path / "two_fsdp.npz"), "2",
                         "True", no_export])
    _assert_close(ref, _params(tmp_path / "two_fsdp.npz", processes=2, resumed_from=1),
                  "1-process checkpoint resumed by 2 processes (FSDP)")
    # a 2-process checkpoint resumes in 1 process
    _resume_copy(two, tmp_path / "one_res", keep_step=1)
    _one_process(env, [str(tmp_path / "one_res"), str(tmp_path / "one_res.npz"), "2", "False",
                       no_export])
    _assert_close(ref, _params(tmp_path / "one_res.npz", processes=1, resumed_from=1),
                  "2-process checkpoint resumed by 1 process")
    assert len(_losses(tmp_path / "one_res")) == 2
