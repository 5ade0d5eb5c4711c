"""Attacks on the trainer's checkpoints and command lines: hostile files on disk, hostile input.

On disk: a run directory with checkpoints at steps 1 and 2 (a tiny 2-step run, built once
per code version and copied for each attack) is damaged: bytes flipped, files truncated,
replaced by symlinks, manifests deleted or forged, NaN weights saved as a well-formed
checkpoint, junk step directories, a metrics line cut short. The defence holds when the
trainer resumes from the newest intact checkpoint and says which step it skipped and why
(or, with nothing intact, stops with one clear error); it escapes when it resumes silently
from damaged data, loads non-finite values, or crashes with a traceback.

On the command line: bad values, files, variants, models, work directories, each given to
the real entry point in a subprocess. The defence holds on exit status 2 with a single
`error:` line and no traceback.

Items: 14 (checkpoint integrity), 15 (CLI errors).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import Attack

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY = REPO / "experiments" / "tiny_guess_number.py"
MANIFEST = "agentic_rl_manifest.json"
RUN = {"train.max_steps": "2", "eval.every": "0", "checkpoint.every": "1",
       "checkpoint.keep": "2", "checkpoint.export_final": "false", "log.tensorboard": "false",
       "log.progress": "false"}


def _train_cmd(workdir: Path, *extra: str, spec: str = f"{TINY}:grpo",
               overrides: dict[str, str] | None = None) -> list[str]:
    ov = {**RUN, **(overrides or {})}
    return [sys.executable, "-m", "agentic_rl.train", "--config", spec, "--workdir",
            str(workdir), *[f"--config.{k}={v}" for k, v in ov.items()], *extra]


@functools.cache
def _base_run() -> Path:
    """A finished 2-step tiny run (checkpoints 1 and 2), cached per code version."""
    key = hashlib.sha256()
    for p in (REPO / "agentic_rl" / "train" / "checkpoint.py", TINY):
        key.update(p.read_bytes())
    root = Path(tempfile.gettempdir()) / f"agentic_rl_attack_ckpt_{key.hexdigest()[:12]}"
    if (root / "checkpoints" / "2" / MANIFEST).is_file():
        return root
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".build-", dir=root.parent))
    out = subprocess.run(_train_cmd(tmp / "run"), capture_output=True, text=True, cwd=REPO,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"building the base run failed: {out.stderr[-500:]}")
    try:
        os.rename(tmp / "run", root)
    except OSError:  # built concurrently by another attack: use that one
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return root


def _copy() -> Path:
    work = Path(tempfile.mkdtemp(prefix="ckpt_attack_")) / "run"
    shutil.copytree(_base_run(), work)
    return work


def _step(work: Path, step: int) -> Path:
    return work / "checkpoints" / str(step)


def _largest(step_dir: Path) -> Path:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


def _flip(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - n // 2)
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _reforge_manifest(step_dir: Path, step: int) -> None:
    """An attacker with write access re-commits the damaged step with a fresh manifest."""
    from agentic_rl.train.checkpoint import write_manifest

    write_manifest(step_dir, step)


def _resume(work: Path):
    """Builds the Trainer on `work` as the CLI would (restore only, no training):
    (trainer or None, the exception if any, captured stderr)."""
    from agentic_rl.train import Trainer
    from agentic_rl.train.config_files import apply_overrides, load_config_file

    cfg = apply_overrides(load_config_file(f"{TINY}:grpo"), {**RUN, "train.max_steps": "3"})
    err = io.StringIO()
    trainer, exc = None, None
    with contextlib.redirect_stderr(err):
        try:
            trainer = Trainer(cfg, work)
        except Exception as e:  # noqa: BLE001 - classified by the caller
            exc = e
    return trainer, exc, err.getvalue()


def _finite(trainer) -> bool:
    import jax
    import numpy as np

    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trainer.state.params))


def _expect_fallback(work: Path, reason: str, *, bad_step: int = 2, to: int | None = 1
                     ) -> str | None:
    """None when the Trainer skipped `bad_step` with a message naming `reason` and resumed
    from `to` (or, to=None, started afresh), with finite params."""
    trainer, exc, err = _resume(work)
    if exc is not None:
        return f"restore raised {type(exc).__name__}: {str(exc)[:200]}"
    try:
        if trainer.resumed_from != to:
            return (f"resumed from step {trainer.resumed_from} (expected {to}) without "
                    f"noticing; stderr: {err.strip()[-300:]}")
        if f"checkpoint at step {bad_step}" not in err or reason not in err:
            return f"skipped step {bad_step} without a clear message: {err.strip()[-300:]!r}"
        if not _finite(trainer):
            return "restored non-finite parameters"
    finally:
        trainer.close()
    return None


# ------------------------------------------------------------------ hostile files on disk


def flipped_bytes() -> str | None:
    work = _copy()
    _flip(_largest(_step(work, 2)))
    return _expect_fallback(work, "sha256")


def truncated_file() -> str | None:
    work = _copy()
    f = _largest(_step(work, 2))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return _expect_fallback(work, "bytes, expected")


def deleted_file() -> str | None:
    work = _copy()
    _largest(_step(work, 2)).unlink()
    return _expect_fallback(work, "missing")


def symlinked_file() -> str | None:
    work = _copy()
    f = _largest(_step(work, 2))
    f.unlink()
    f.symlink_to("/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd")
    return _expect_fallback(work, "corrupt")


def manifest_deleted() -> str | None:
    """Killed after orbax renamed the step into place, before the manifest was written."""
    work = _copy()
    (_step(work, 2) / MANIFEST).unlink()
    return _expect_fallback(work, "incomplete")


def manifest_edited() -> str | None:
    """A manifest edited by hand to match flipped data (its digest no longer matches)."""
    work = _copy()
    f = _largest(_step(work, 2))
    _flip(f)
    path = _step(work, 2) / MANIFEST
    m = json.loads(path.read_text())
    rel = f.relative_to(_step(work, 2)).as_posix()
    m["files"][rel]["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    path.write_text(json.dumps(m))
    return _expect_fallback(work, "digest")


def manifest_garbage() -> str | None:
    work = _copy()
    (_step(work, 2) / MANIFEST).write_bytes(b"\x00{not json" * 10)
    return _expect_fallback(work, "manifest")


def forged_manifest_over_flipped_data() -> str | None:
    """Flipped array bytes re-committed with a consistent manifest: checksums pass, so the
    load itself (or the finiteness check) must catch it."""
    work = _copy()
    step = _step(work, 2)
    for f in sorted(step.rglob("*")):
        if f.is_file() and "/d/" in f.as_posix() and f.name != MANIFEST:
            _flip(f, 256)
    _reforge_manifest(step, 2)
    return _expect_fallback(work, "corrupt")


def host_json_garbage() -> str | None:
    work = _copy()
    step = _step(work, 2)
    (step / "host" / "metadata").write_text("[1, 2")
    _reforge_manifest(step, 2)
    return _expect_fallback(work, "host state")


def nan_params() -> str | None:
    """A well-formed, verified checkpoint whose weights are NaN."""
    import jax
    import numpy as np

    from agentic_rl.train.checkpoint import Checkpointer

    work = _copy()
    trainer, exc, err = _resume(work)
    if exc is not None:
        return f"restore of the intact run raised {type(exc).__name__}: {exc}"
    try:
        state = trainer.state
        bad = state.replace(params=jax.tree.map(lambda x: x * np.float32("nan"), state.params))
        host = trainer.host_state()
    finally:
        trainer.close()
    ckpt = Checkpointer(work / "checkpoints", keep=5)
    try:
        ckpt.save(2, bad, host)
    finally:
        ckpt.close()
    return _expect_fallback(work, "non-finite")


def junk_step_entries() -> str | None:
    """A file named like a step, an empty huge step, an orbax temporary directory with
    junk: ignored or cleaned, the run resumes from step 2."""
    work = _copy()
    ckpts = work / "checkpoints"
    (ckpts / "7").write_text("not a directory")
    (ckpts / "123456789012").mkdir()
    tmp = ckpts / "3.orbax-checkpoint-tmp-1234"
    tmp.mkdir()
    (tmp / "junk").write_bytes(os.urandom(64))
    trainer, exc, err = _resume(work)
    if exc is not None:
        return f"restore raised {type(exc).__name__}: {str(exc)[:200]}"
    try:
        if trainer.resumed_from != 2:
            return f"resumed from {trainer.resumed_from}, expected 2 (junk entries): {err[-200:]}"
    finally:
        trainer.close()
    return None


def every_checkpoint_corrupt() -> str | None:
    """Nothing intact: the CLI must stop with one clear line, exit 2, and touch nothing."""
    work = _copy()
    for s in (1, 2):
        _flip(_largest(_step(work, s)))
    before = sorted(p.name for p in (work / "checkpoints").iterdir())
    out = subprocess.run(_train_cmd(work, overrides={"train.max_steps": "3"}),
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    escaped = _cli_escape(out, "no intact checkpoint")
    if escaped:
        return escaped
    if sorted(p.name for p in (work / "checkpoints").iterdir()) != before:
        return "the failed resume changed the checkpoint directory"
    return None


def metrics_line_cut_short() -> str | None:
    """metrics.jsonl ends in half a line (killed mid-write): the resume drops it."""
    work = _copy()
    with (work / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train/lo')
    trainer, exc, err = _resume(work)
    if exc is not None:
        return f"restore raised {type(exc).__name__}: {str(exc)[:200]}"
    trainer.close()
    try:
        rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    except ValueError:
        return "the resume kept an unreadable metrics line"
    if [r["step"] for r in rows] != [1, 2]:
        return f"metrics steps after resume: {[r['step'] for r in rows]}"
    return None


def incompatible_checkpoint_cli() -> str | None:
    """A run directory of another model shape: one clear line, the run left untouched."""
    work = _copy()
    config_json = (work / "config.json").read_text()
    out = subprocess.run(_train_cmd(work, "--config.model.lora_rank=8",
                                    overrides={"train.max_steps": "3"}),
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    escaped = _cli_escape(out, "incompatible")
    if escaped:
        return escaped
    if (work / "config.json").read_text() != config_json:
        return "the refused resume overwrote config.json"
    return None


def evaluate_corrupt_config_json() -> str | None:
    work = _copy()
    (work / "config.json").write_text("{\"model\": [")
    out = subprocess.run([sys.executable, "-m", "agentic_rl.evaluate", "--workdir", str(work)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    return _cli_escape(out, "config.json")


# ------------------------------------------------------------------ hostile command lines


def _cli_escape(out: subprocess.CompletedProcess, needle: str) -> str | None:
    """None for exit 2 + one `error:` line (the last) containing `needle`, no traceback."""
    err = out.stderr
    if "Traceback" in err:
        last = err.strip().splitlines()[-1][:200]
        return f"traceback (exit {out.returncode}): {last}"
    if out.returncode != 2:
        return f"exit status {out.returncode}, expected 2; stderr: {err.strip()[-200:]!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"not one error line: {err.strip()[-300:]!r}"
    if needle.lower() not in errors[0].lower():
        return f"the error does not name the problem ({needle!r}): {errors[0][:200]!r}"
    return None


def _train_cli(*args: str, needle: str, files: dict[str, bytes | str] | None = None,
               config: str | None = None) -> str | None:
    tmp = Path(tempfile.mkdtemp(prefix="cli_attack_"))
    for name, content in (files or {}).items():
        p = tmp / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    spec = (config or f"{TINY}:grpo").replace("{tmp}", str(tmp))
    argv = [a.replace("{tmp}", str(tmp)) for a in args]
    cmd = [sys.executable, "-m", "agentic_rl.train", "--config", spec, "--workdir",
           str(tmp / "w"), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    return _cli_escape(out, needle)


CLI_CASES = {
    "cli_list_for_float": dict(args=("--config.rl.kl_coef=[1]",), needle="rl.kl_coef"),
    "cli_giant_int": dict(args=("--config.train.max_steps=" + "9" * 5000,),
                          needle="train.max_steps"),
    "cli_nested_literal": dict(args=("--config.rl.kl_coef=" + "[" * 3000 + "]" * 3000,),
                               needle="rl.kl_coef"),
    "cli_bool_for_int": dict(args=("--config.rollout.group_size=True",),
                             needle="rollout.group_size"),
    "cli_env_kwarg_type": dict(args=("--config.env.kwargs.max_guesses=[3]",),
                               needle="env.kwargs.max_guesses"),
    "cli_override_into_a_leaf": dict(args=("--config.env.kwargs.low.x=1",), needle="low"),
    "cli_value_missing": dict(args=("--config.seed",), needle="needs a value"),
    "cli_unknown_variant": dict(args=(), config=f"{TINY}:../../etc/passwd", needle="variant"),
    "cli_bad_model_path": dict(args=("--config.model.name=/nonexistent/m",),
                               needle="model.name"),
    "cli_garbage_gguf": dict(args=("--config.model.name={tmp}/m.gguf",), needle="GGUF",
                             files={"m.gguf": b"GGUF" + os.urandom(256)}),
    "cli_config_syntax_error": dict(args=(), config="{tmp}/c.py", needle="not valid Python",
                                    files={"c.py": "def get_config(:\n"}),
    "cli_config_binary": dict(args=(), config="{tmp}/c.py", needle="not valid Python",
                              files={"c.py": os.urandom(512) + b"\x00"}),
    "cli_config_raises": dict(args=(), config="{tmp}/c.py", needle="SystemError",
                              files={"c.py": "raise SystemError('hostile')\n"}),
    "cli_config_exits": dict(args=(), config="{tmp}/c.py", needle="SystemExit",
                             files={"c.py": "import sys\nsys.exit(0)\n"}),
    "cli_config_returns_list": dict(args=(), config="{tmp}/c.py", needle="ConfigDict",
                                    files={"c.py": "def get_config(v=None):\n    return [1]\n"}),
    "cli_workdir_under_a_file": dict(args=(), needle="--workdir",
                                     files={"w": "a file where the workdir should be"}),
}


def _cli_attack(name: str) -> str | None:
    case = CLI_CASES[name]
    return _train_cli(*case["args"], needle=case["needle"], files=case.get("files"),
                      config=case.get("config"))


def evaluate_bad_checkpoint_name() -> str | None:
    out = subprocess.run([sys.executable, "-m", "agentic_rl.evaluate", "--workdir",
                          str(_base_run()), "--checkpoint", "../../etc"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    return _cli_escape(out, "--checkpoint")


def chat_bad_dtype() -> str | None:
    out = subprocess.run([sys.executable, "-m", "agentic_rl.chat", "--model", "/nonexistent",
                          "--dtype", "int4", "hi"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    return _cli_escape(out, "--dtype")


def ablate_bad_set() -> str | None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "ablate.py"), "--family",
                          "obs_mask", "--seeds", "0", "--steps", "1", "--out",
                          tempfile.mkdtemp(prefix="ablate_attack_") + "/out",
                          "--config.rl.kl_coef={'__import__': 1}"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    return _cli_escape(out, "rl.kl_coef")


_DISK = 240.0  # a disk attack may build the shared base run first (a 2-step training run)

ATTACKS: list[Attack] = [
    Attack("ckpt_flipped_bytes", "14", flipped_bytes, _DISK,
           "64 flipped bytes in the latest checkpoint: fall back to the older one"),
    Attack("ckpt_truncated_file", "14", truncated_file, _DISK, "a truncated array file"),
    Attack("ckpt_deleted_file", "14", deleted_file, _DISK, "an array file deleted"),
    Attack("ckpt_symlinked_file", "14", symlinked_file, _DISK,
           "an array file replaced by a symlink to a system file"),
    Attack("ckpt_manifest_deleted", "14", manifest_deleted, _DISK,
           "killed between orbax's rename and the manifest: incomplete"),
    Attack("ckpt_manifest_edited", "14", manifest_edited, _DISK,
           "a manifest hand-edited to match flipped data"),
    Attack("ckpt_manifest_garbage", "14", manifest_garbage, _DISK, "a binary manifest"),
    Attack("ckpt_forged_manifest_over_flipped_data", "14", forged_manifest_over_flipped_data,
           _DISK, "damaged arrays re-committed with a consistent manifest"),
    Attack("ckpt_host_json_garbage", "14", host_json_garbage, _DISK,
           "unparseable host state under a consistent manifest"),
    Attack("ckpt_nan_params", "14", nan_params, _DISK,
           "a well-formed checkpoint holding NaN weights"),
    Attack("ckpt_junk_step_entries", "14", junk_step_entries, _DISK,
           "a file named like a step, an empty step, an orbax temporary directory"),
    Attack("ckpt_every_checkpoint_corrupt", "14", every_checkpoint_corrupt, _DISK,
           "nothing intact: one clear error from the CLI, nothing touched"),
    Attack("ckpt_metrics_line_cut_short", "14", metrics_line_cut_short, _DISK,
           "metrics.jsonl ends in half a line"),
    Attack("ckpt_incompatible_config_cli", "15", incompatible_checkpoint_cli, _DISK,
           "resume a run directory with another model shape"),
    Attack("evaluate_corrupt_config_json", "15", evaluate_corrupt_config_json, _DISK,
           "evaluate a run whose config.json is garbage"),
    Attack("evaluate_bad_checkpoint_name", "15", evaluate_bad_checkpoint_name, _DISK,
           "--checkpoint that is neither latest, best nor a step"),
    Attack("chat_bad_dtype", "15", chat_bad_dtype, 60.0, "--dtype int4"),
    Attack("ablate_bad_set", "15", ablate_bad_set, 120.0, "a dict for a float override"),
    *[Attack(name, "15", functools.partial(_cli_attack, name), 120.0, f"train CLI: {name}")
      for name in CLI_CASES],
]
