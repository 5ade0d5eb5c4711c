"""Checkpoint integrity: a corrupt or incomplete latest checkpoint falls back to the newest
intact one (with a message) and the run still ends exactly where an uninterrupted run does;
no intact checkpoint at all stops with a clear error.

A reference run of 4 steps and a "killed" run of 3 steps (checkpoints 2 and 3 kept) are
made once per module; each test damages a copy of the killed run and resumes it to step 4.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides, load_config_file
from agentic_rl.train.metrics import is_timing, read_jsonl
from tests.train.conftest import TINY

MANIFEST = "agentic_rl_manifest.json"


def config(steps: int):
    return apply_overrides(load_config_file(f"{TINY}:grpo"), {
        "train.max_steps": str(steps), "checkpoint.every": "1", "checkpoint.keep": "2",
        "checkpoint.export_final": "false", "log.tensorboard": "false"})


def run(cfg, workdir):
    trainer = Trainer(cfg, workdir)
    try:
        trainer.train()
        return trainer.resumed_from, leaves(trainer.state.params)
    finally:
        trainer.close()


def leaves(tree) -> list[np.ndarray]:
    return [np.array(x) for x in jax.tree.leaves(tree)]


def strip_timing(rows):
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


def bitwise_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(a, b))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    request.getfixturevalue("compile_cache")
    root = tmp_path_factory.mktemp("integrity")
    _, params = run(config(4), root / "full")
    run(config(3), root / "killed")  # "killed" after step 3: checkpoints 2 and 3 remain
    steps = sorted(int(p.name) for p in (root / "killed" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps == [2, 3]
    return {"full": root / "full", "killed": root / "killed", "params": params}


@pytest.fixture
def killed(runs, tmp_path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(runs["killed"], work)
    return work


def step_dir(work: Path, step: int) -> Path:
    return work / "checkpoints" / str(step)


def largest_file(directory: Path) -> Path:
    files = [p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def flip_bytes(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - n // 2)
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_resumes_like_uninterrupted(runs, work: Path, capsys, reason: str) -> None:
    resumed_from, params = run(config(4), work)
    err = capsys.readouterr().err
    assert resumed_from == 2, err
    assert re.search(rf"checkpoint at step 3 .*{reason}", err), err
    assert "falling back to step 2" in err, err
    a = strip_timing(read_jsonl(runs["full"] / "metrics.jsonl"))
    b = strip_timing(read_jsonl(work / "metrics.jsonl"))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert bitwise_equal(runs["params"], params)


def test_flipped_bytes_in_latest_fall_back_to_the_older_checkpoint(runs, killed, capsys):
    flip_bytes(largest_file(step_dir(killed, 3)))
    assert_resumes_like_uninterrupted(runs, killed, capsys, "corrupt")


def test_truncated_file_in_latest_falls_back(runs, killed, capsys):
    target = largest_file(step_dir(killed, 3))
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    assert_resumes_like_uninterrupted(runs, killed, capsys, "corrupt")


def test_missing_manifest_is_an_incomplete_checkpoint(runs, killed, capsys):
    # killed after orbax renamed the step directory but before the manifest was written
    (step_dir(killed, 3) / MANIFEST).unlink(missing_ok=True)
    # plus a temporary directory of a save that was killed earlier still
    (killed / "checkpoints" / "4.orbax-checkpoint-tmp-1234").mkdir()
    assert_resumes_like_uninterrupted(runs, killed, capsys, "incomplete")


def test_nonfinite_params_in_a_verified_checkpoint_fall_back(runs, killed, capsys):
    from agentic_rl.train.checkpoint import Checkpointer

    trainer = Trainer(config(4), killed)  # resumes from the intact step 3
    try:
        state = trainer.state
        bad = jax.tree.map(lambda x: x * np.float32("nan"), state.params)
        trainer.ckpt.close()
        ckpt = Checkpointer(killed / "checkpoints", keep=5)
        host = {**trainer.host_state(), "step": 3}
        # replace step 3 by a well-formed checkpoint holding NaN params
        ckpt.save(3, state.replace(params=bad), host)
        ckpt.close()
    finally:
        trainer.close()
    capsys.readouterr()
    assert_resumes_like_uninterrupted(runs, killed, capsys, "non-finite")


def test_every_checkpoint_corrupt_is_a_clear_error(killed):
    from agentic_rl.train.checkpoint import CheckpointNotFoundError

    for step in (2, 3):
        flip_bytes(largest_file(step_dir(killed, step)))
    with pytest.raises(CheckpointNotFoundError) as e:
        Trainer(config(4), killed).close()
    msg = str(e.value)
    assert "no intact checkpoint" in msg and "2" in msg and "3" in msg
    assert "fresh --workdir" in msg and "\n" not in msg
    # nothing was overwritten: both bad steps are still there for inspection
    assert step_dir(killed, 2).is_dir() and step_dir(killed, 3).is_dir()


def test_corrupt_latest_is_skipped_by_evaluate_resolution(killed, capsys):
    from agentic_rl.train.checkpoint import load_trained_policy

    flip_bytes(largest_file(step_dir(killed, 3)))
    _, _, step = load_trained_policy(killed, "latest")
    assert step == 2
    assert "checkpoint at step 3" in capsys.readouterr().err
    assert step_dir(killed, 3).is_dir()  # a reader does not move or delete anything
