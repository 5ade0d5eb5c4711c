"""scripts/bench_trl.py: our side of the TRL benchmark runs one step on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from tests.conftest import REPO


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_trl", REPO / "scripts" / "bench_trl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ours_only_tiny_step_reports_time_and_flop_floor(tmp_path):
    bench = _load_bench()
    out = tmp_path / "bench.json"
    r = bench.main(["--ours-only", "--model", "tiny", "--ours-warmup", "0", "--steps", "1",
                    "--prompts", "2", "--generations", "2", "--max-new-tokens", "8",
                    "--micro-batch-size", "0", "--num-tasks", "8", "--peak-size", "128",
                    "--peak-repeats", "1", "--json", str(out)])
    (step,) = r["ours_steps"]
    assert step["rows"] == 4 and step["generate_calls"] == [4]
    assert 0 < step["generated_tokens"] <= 4 * 8
    assert step["step_s"] > 0 and step["rollout_s"] + step["update_s"] <= step["step_s"] + 1e-6
    f = r["floor"]
    assert f["trained_tokens_padded"] == 4 * step["T"] >= f["trained_tokens_nonpad"]
    assert f["flop_padded"] == 6 * r["params"] * f["trained_tokens_padded"] + 2 * r["params"] * (
        f["generated_tokens"])
    assert math.isfinite(f["efficiency_padded"]) and f["efficiency_padded"] > 0
    assert json.loads(out.read_text())["params"] == r["params"]


def test_tiny_model_needs_ours_only():
    bench = _load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--model", "tiny"])
