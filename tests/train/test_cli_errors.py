"""Bad command-line input to train / evaluate / chat / ablate: one clear line on stderr
naming the problem (and how to fix it), exit code 2, never a traceback.

Every case runs the real entry point in a subprocess. Cases that need a run directory
share one tiny 1-step run (a module fixture); none loads the embedded model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentic_rl.train.config_files import apply_overrides, load_config_file
from tests.train.conftest import REPO, TINY

MANIFEST = "agentic_rl_manifest.json"


def cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def train(*args: str) -> subprocess.CompletedProcess:
    return cli(["-m", "agentic_rl.train", *args])


def assert_clear_error(out: subprocess.CompletedProcess, *patterns: str,
                       only_line: bool = True) -> str:
    """Exit 2, no traceback, exactly one `error:` line (the last) matching `patterns`."""
    detail = f"rc={out.returncode}\nstdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-4000:]}"
    assert out.returncode == 2, detail
    assert "Traceback" not in out.stderr, detail
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], detail
    if only_line:
        assert len(lines) == 1, detail
    for p in patterns:
        assert re.search(p, errors[0]), f"{p!r} not in {errors[0]!r}"
    return errors[0]


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ------------------------------------------------------------------ config-only (train)

BASE = ["--config", f"{TINY}:grpo", "--print-config"]

CONFIG_CASES = {
    "list_for_float": (["--config.rl.kl_coef=[1]"], [r"rl\.kl_coef", r"number", r"\[1\]"]),
    "dict_for_float": (["--config.rl.kl_coef={'a': 1}"], [r"rl\.kl_coef", r"number"]),
    "bool_for_int": (["--config.train.max_steps=True"], [r"train\.max_steps", r"int"]),
    "text_for_int": (["--config.train.max_steps=many"], [r"train\.max_steps", r"int"]),
    "text_for_bool": (["--config.eval.greedy=maybe"], [r"eval\.greedy", r"true/false"]),
    "list_for_str": (["--config.rl.algo=[1]"], [r"rl\.algo", r"grpo"]),
    "unknown_key": (["--config.rl.kl_coeff=0.1"], [r"rl\.kl_coeff", r"rl\.kl_coef"]),
    "group_as_leaf": (["--config.rl.loss=3"], [r"rl\.loss", r"policy_loss"]),
    "value_missing": (["--config.seed"], [r"--config\.seed", r"value"]),
    "bad_env_name": (["--config.env.name=nope"], [r"env\.name", r"guess_number"]),
    "env_kwarg_type": (["--config.env.kwargs.high=lots"], [r"env\.kwargs\.high", r"int"]),
    "unknown_env_kwarg": (["--config.env.kwargs.hihg=3"], [r"hihg", r"high"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_override(case, tmp_path):
    extra, patterns = CONFIG_CASES[case]
    assert_clear_error(train(*BASE, "--workdir", str(tmp_path / "w"), *extra), *patterns)


def test_unknown_variant_lists_the_valid_ones(tmp_path):
    out = train("--config", f"{TINY}:nope", "--workdir", str(tmp_path), "--print-config")
    assert_clear_error(out, r"variant 'nope'", r"grpo", r"ppo", r"grpo_kl_reward")


CONFIG_DEF = ("from agentic_rl.train.config import default_config\n"
              "def get_config(variant=None):\n")

FILE_CASES = {
    "missing": (None, [r"config file not found", r"missing\.py"]),
    "directory": ("<dir>", [r"config file", r"directory"]),
    "syntax_error": ("x = (\n", [r"syntax_error\.py", r"line 1", r"not valid Python"]),
    "yaml": ("rl:\n  kl_coef: 0.1\n", [r"yaml\.py", r"not valid Python"]),
    "binary": (b"\x00\x01\xff\xfe" * 16, [r"binary\.py", r"not valid Python"]),
    "raises_on_import": ("import json\nraise RuntimeError('boom')\n",
                         [r"raises_on_import\.py", r"RuntimeError", r"boom", r"line 2"]),
    "raises_in_get_config": (CONFIG_DEF + "    raise KeyError('nokey')\n",
                             [r"raises_in_get_config\.py", r"get_config", r"KeyError",
                              r"nokey", r"line 3"]),
    "typo_in_locked_config": (CONFIG_DEF + "    c = default_config()\n    c.rl.kl_cofe = 1\n"
                              "    return c\n", [r"kl_cofe", r"kl_coef", r"line 4"]),
    "returns_dict": (CONFIG_DEF + "    return {'seed': 1}\n",
                     [r"returns_dict\.py", r"ConfigDict", r"dict"]),
    "returns_none": (CONFIG_DEF + "    pass\n", [r"returns_none\.py", r"ConfigDict", r"None"]),
    "no_get_config": ("x = 1\n", [r"no_get_config\.py", r"get_config"]),
    "missing_keys": ("import ml_collections\n"
                     "def get_config(variant=None):\n"
                     "    return ml_collections.ConfigDict({'seed': 1})\n",
                     [r"missing_keys\.py", r"missing", r"default_config"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_config_file(case, tmp_path):
    content, patterns = FILE_CASES[case]
    path = tmp_path / f"{case}.py"
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        write(path, content)
    out = train("--config", str(path), "--workdir", str(tmp_path / "w"), "--print-config")
    assert_clear_error(out, *patterns)


@pytest.mark.parametrize("argv,patterns", [
    ([], [r"--config", r"--workdir", r"required"]),
    (["--config", str(TINY)], [r"--workdir", r"required"]),
    (["--config", str(TINY), "--workdir", "w", "--worksdir", "x"], [r"--worksdir"]),
])
def test_argparse_errors_are_one_line(argv, patterns):
    assert_clear_error(train(*argv), *patterns)


# ------------------------------------------------------------------ train: model, workdir


@pytest.mark.parametrize("name,patterns", [
    ("/nonexistent/model", [r"model\.name", r"/nonexistent/model", r"tiny",
                            r"smollm2-135m-instruct"]),
    ("smollm3-1b", [r"model\.name", r"smollm3-1b", r"tiny", r"smollm2-135m-instruct"]),
])
def test_bad_model_path_or_name(tmp_path, name, patterns):
    out = train("--config", f"{TINY}:grpo", "--workdir", str(tmp_path / "w"),
                f"--config.model.name={name}")
    assert_clear_error(out, *patterns)


def test_garbage_gguf_model_file(tmp_path):
    gguf = write(tmp_path / "model.gguf", b"not a gguf file" * 10)
    out = train("--config", f"{TINY}:grpo", "--workdir", str(tmp_path / "w"),
                f"--config.model.name={gguf}")
    assert_clear_error(out, r"model\.gguf", r"GGUF")


def test_workdir_under_a_file_is_not_writable(tmp_path):
    f = write(tmp_path / "file", "x")
    out = train("--config", f"{TINY}:grpo", "--workdir", str(f / "run"))
    assert_clear_error(out, r"--workdir", re.escape(str(f / "run")), r"writable|directory")


def test_workdir_that_is_a_file(tmp_path):
    f = write(tmp_path / "file", "x")
    out = train("--config", f"{TINY}:grpo", "--workdir", str(f))
    assert_clear_error(out, r"--workdir", re.escape(str(f)), r"not a directory")


# ------------------------------------------------------------------ a run directory

SMALL = {"train.max_steps": "1", "eval.every": "0", "checkpoint.export_final": "false",
         "log.tensorboard": "false", "log.progress": "false"}
SMALL_ARGS = [f"--config.{k}={v}" for k, v in SMALL.items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request) -> Path:
    """A tiny 1-step run directory (checkpoint at step 1)."""
    request.getfixturevalue("compile_cache")
    from agentic_rl.train import Trainer

    work = tmp_path_factory.mktemp("cli") / "run"
    trainer = Trainer(apply_overrides(load_config_file(f"{TINY}:grpo"), dict(SMALL)), work)
    try:
        trainer.train()
    finally:
        trainer.close()
    assert (work / "checkpoints" / "1").is_dir()
    return work


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(trained, work)
    return work


def corrupt_all(work: Path) -> None:
    for step in (work / "checkpoints").iterdir():
        files = [p for p in step.rglob("*") if p.is_file() and p.name != MANIFEST]
        target = max(files, key=lambda p: p.stat().st_size)
        data = bytearray(target.read_bytes())
        for i in range(len(data) // 2, min(len(data) // 2 + 64, len(data))):
            data[i] ^= 0xFF
        target.write_bytes(bytes(data))


@pytest.mark.parametrize("spec,extra", [
    (f"{TINY}:grpo", ["--config.model.lora_rank=8"]),  # same leaves, other shapes
    (f"{TINY}:grpo", ["--config.model.tiny.hidden_size=32",
                      "--config.model.tiny.intermediate_size=64"]),
    (f"{TINY}:ppo", []),  # full fine-tuning + value head: other leaves
])
def test_workdir_with_a_checkpoint_of_an_incompatible_config(run_copy, spec, extra):
    before = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    config_json = (run_copy / "config.json").read_text()
    out = train("--config", spec, "--workdir", str(run_copy), *SMALL_ARGS,
                "--config.train.max_steps=2", *extra)
    assert_clear_error(out, r"incompatible", re.escape(str(run_copy)),
                       r"fresh --workdir|delete", only_line=False)
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == before
    assert (run_copy / "config.json").read_text() == config_json  # the run is untouched


def test_train_with_every_checkpoint_corrupt(run_copy):
    corrupt_all(run_copy)
    out = train("--config", f"{TINY}:grpo", "--workdir", str(run_copy), *SMALL_ARGS,
                "--config.train.max_steps=2")
    assert_clear_error(out, r"no intact checkpoint", r"step 1", r"fresh --workdir",
                       only_line=False)


# ------------------------------------------------------------------ evaluate


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return cli(["-m", "agentic_rl.evaluate", *args])


def test_evaluate_bad_checkpoint_name(trained):
    out = evaluate("--workdir", str(trained), "--checkpoint", "newest")
    assert_clear_error(out, r"--checkpoint", r"newest", r"latest", r"best")


def test_evaluate_missing_step_lists_the_steps(trained):
    out = evaluate("--workdir", str(trained), "--checkpoint", "99")
    assert_clear_error(out, r"step 99", r"\[1\]")


def test_evaluate_corrupt_config_json(run_copy):
    write(run_copy / "config.json", "{not json")
    out = evaluate("--workdir", str(run_copy))
    assert_clear_error(out, r"config\.json", re.escape(str(run_copy)))


def test_evaluate_every_checkpoint_corrupt(run_copy):
    corrupt_all(run_copy)
    out = evaluate("--workdir", str(run_copy))
    assert_clear_error(out, r"no intact checkpoint", r"step 1", only_line=False)


@pytest.mark.parametrize("extra,patterns", [
    (["--chat-format", "nope"], [r"chat format", r"nope", r"chatml"]),
    (["--batch-size", "0"], [r"--batch-size", r"0"]),
    (["--num-episodes", "0"], [r"num.episodes", r"0"]),
    (["--env", "nope"], [r"env", r"nope", r"guess_number"]),
    (["--tasks", "/nonexistent/tasks.jsonl"], [r"/nonexistent/tasks\.jsonl"]),
    (["--max-turns", "0"], [r"--max-turns"]),
])
def test_evaluate_bad_options(trained, extra, patterns):
    out = evaluate("--workdir", str(trained), *extra)
    assert_clear_error(out, *patterns, only_line=False)


def test_evaluate_bad_model_path():
    out = evaluate("--model", "/nonexistent/model", "--env", "calculator")
    assert_clear_error(out, r"/nonexistent/model", r"smollm2-135m-instruct")


def test_evaluate_garbage_gguf(tmp_path):
    gguf = write(tmp_path / "m.gguf", b"\x00" * 100)
    out = evaluate("--model", str(gguf), "--env", "calculator")
    assert_clear_error(out, r"m\.gguf", r"GGUF")


def test_evaluate_argparse_error_is_one_line():
    assert_clear_error(evaluate("--num-episodes", "many"), r"--num-episodes", r"many")


# ------------------------------------------------------------------ chat


def chat(*args: str) -> subprocess.CompletedProcess:
    return cli(["-m", "agentic_rl.chat", *args])


@pytest.mark.parametrize("extra,patterns", [
    (["--model", "/nonexistent/model", "hi"], [r"/nonexistent/model", r"smollm2-135m"]),
    (["--model", "/nonexistent/model", "--dtype", "float8", "hi"], [r"--dtype", r"float8",
                                                                     r"bfloat16"]),
    (["--model", "/nonexistent/model", "--max-new-tokens", "0", "hi"], [r"--max-new-tokens"]),
    (["--model", "/nonexistent/model", "--temperature", "-1", "hi"], [r"--temperature"]),
    (["--model", "/nonexistent/model", "--top-p", "1.5", "hi"], [r"--top-p"]),
    ([], [r"prompt", r"required"]),
])
def test_chat_bad_input(extra, patterns):
    assert_clear_error(chat(*extra), *patterns)


def test_chat_garbage_gguf(tmp_path):
    gguf = write(tmp_path / "m.gguf", b"GGUF" + b"\xff" * 100)
    assert_clear_error(chat("--model", str(gguf), "hi"), r"m\.gguf", r"GGUF")


def test_chat_model_dir_without_config(tmp_path):
    assert_clear_error(chat("--model", str(tmp_path), "hi"), r"config\.json")


# ------------------------------------------------------------------ ablate


def ablate(*args: str) -> subprocess.CompletedProcess:
    return cli([str(REPO / "scripts" / "ablate.py"), *args])


@pytest.mark.parametrize("sets,patterns", [
    (["rl.kl_coef=[1]"], [r"rl\.kl_coef", r"number"]),
    (["rl.kl_coeff=0.1"], [r"rl\.kl_coeff", r"rl\.kl_coef"]),
    (["train.num_epochs=many"], [r"train\.num_epochs", r"int"]),
    (["novalue"], [r"--config\.novalue needs a value"]),
])
def test_ablate_bad_set(tmp_path, sets, patterns):
    out = ablate("--family", "obs_mask", "--seeds", "0", "--steps", "1", "--out",
                 str(tmp_path / "out"), *(f"--config.{s}" for s in sets))
    assert_clear_error(out, *patterns)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_ablate_runs_dir_holding_other_runs(tmp_path):
    runs = tmp_path / "runs"
    for arm in ("grpo", "train_on_obs"):
        (runs / arm / "seed_0").mkdir(parents=True)
        (runs / arm / "seed_0" / "config.json").write_text(json.dumps({"seed": 7, "train": {}}))
    out = ablate("--family", "obs_mask", "--seeds", "0", "--steps", "1", "--out",
                 str(tmp_path / "out"), "--runs-dir", str(runs))
    assert_clear_error(out, r"different config", r"--runs-dir")


def test_ablate_out_is_a_file(tmp_path):
    f = write(tmp_path / "file", "x")
    out = ablate("--family", "obs_mask", "--seeds", "0", "--steps", "1", "--out", str(f))
    assert_clear_error(out, r"--out", re.escape(str(f)))


@pytest.mark.parametrize("argv,patterns", [
    (["--family", "algos", "--out", "x"], [r"algos", r"obs_mask"]),
    (["--seeds", "x"], [r"--seeds", r"'x'"]),
    (["--family", "algo", "--out", "x", "--steps", "0"], [r"--steps"]),
])
def test_ablate_argument_errors(argv, patterns):
    assert_clear_error(ablate(*argv), *patterns)
