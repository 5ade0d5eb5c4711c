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
