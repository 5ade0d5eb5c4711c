"""scripts/bench_matmul.py: decode-step matmul ceilings and the GFLOP/s a speed-up needs."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    path = REPO / "scripts" / "bench_matmul.py"
    spec = importlib.util.spec_from_file_location("bench_matmul", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_batch_one_report(bench, tmp_path):
    r = bench.main(["--batches", "1", "--hf-tok-s", "10", "--repeats", "1", "--peak-size", "64",
                    "--json", str(tmp_path / "mm.json")])
    b = r["batches"][1]
    assert set(b["shapes"]) == {*bench.LAYER_SHAPES, "lm_head"}
    # FLOPs per generated token are the model's matmul FLOPs: 2 x (30 layers + LM head)
    per_layer = sum(k * n for k, n in bench.LAYER_SHAPES.values())
    assert b["flop_per_token"] == 2 * (bench.LAYERS * per_layer + bench.D * bench.V)
    assert b["tok_s_ceiling"] == pytest.approx(1 / b["step_matmul_s"])
    assert b["gflops_for_3x_hf"] == pytest.approx(30 * b["flop_per_token"] / 1e9)
    assert (tmp_path / "mm.json").stat().st_size > 0


def test_hf_figures_must_match_the_batches(bench):
    with pytest.raises(SystemExit):
        bench.main(["--batches", "1", "16", "--hf-tok-s", "10"])
