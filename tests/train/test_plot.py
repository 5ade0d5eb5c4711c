"""scripts/plot.py draws learning curves from workdirs' metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.train.conftest import REPO


def test_plot_draws_a_png_from_several_workdirs(tmp_path):
    for name, scale in (("run_a", 1.0), ("run_b", 2.0)):
        wd = tmp_path / name
        wd.mkdir()
        rows = [{"step": s, "rollout/mean_return": scale * s,
                 **({"eval/success_rate": 0.1 * s} if s % 2 == 0 else {})} for s in range(1, 6)]
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "curves.png"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "plot.py"),
                          str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out", str(out),
                          "--metrics", "rollout/mean_return", "eval/success_rate"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reports_a_missing_workdir(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "plot.py"),
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "metrics.jsonl" in res.stderr


def test_overview_panel_per_run(tmp_path):
    """Each workdir gets overview.png with the eval subsets and the time split; the PNG
    is drawn from the values (a run with other numbers draws another image)."""
    wd = tmp_path / "run"
    wd.mkdir()
    rows = [{"step": 0, "eval/success_rate": 0.1, "eval/in_distribution/success_rate": 0.15,
             "eval/larger_operands/success_rate": 0.0, "time/eval_s": 100.0}]
    rows += [{"step": s, "rollout/success_rate": 0.2 * s, "rollout/mean_return": 0.2 * s,
              "rollout/tool_call_validity_rate": 0.5, "rollout/mean_sampled_tokens": 30 - s,
              "time/rollout_s": 60.0, "time/update_s": 20.0} for s in range(1, 4)]
    rows[-1].update({"eval/success_rate": 0.9, "eval/in_distribution/success_rate": 0.95,
                     "eval/larger_operands/success_rate": 0.8, "time/eval_s": 90.0})
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "plot.py"), str(wd),
                          "--out", str(tmp_path / "curves.png")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(tmp_path / "curves.png"), str(wd / "overview.png")]
    png = (wd / "overview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import importlib.util

    spec = importlib.util.spec_from_file_location("_plot", REPO / "scripts" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    assert plot.eval_subsets(wd) == ["in_distribution", "larger_operands"]
    curves = plot.read_curves(wd, ["eval/success_rate", "eval/larger_operands/success_rate",
                                   "time/rollout_s"])
    lines = plot._summary_lines(wd, curves, {0: 100.0, 1: 80.0, 2: 80.0, 3: 170.0})
    assert "eval success      10.0% (step 0) -> 90.0% (step 3)" in lines
    assert "  larger_operands 0.0% -> 80.0%" in lines
    assert "time (logged)     7.2 min (rollout + update + eval)" in lines
