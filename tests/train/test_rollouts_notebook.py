"""Executes notebooks/look_at_rollouts.ipynb in a fresh kernel on a real run directory
(a 2-step GRPO run of the tiny model on guess-the-number, made by the CLI)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "look_at_rollouts.ipynb"


def test_rollouts_notebook_runs_on_a_run_directory(tmp_path, monkeypatch):
    run = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "agentic_rl.train", "--config", "experiments/tiny_learning.py:grpo",
         "--workdir", str(run), "--config.train.max_steps=2", "--config.eval.every=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    monkeypatch.setenv("AGENTIC_RL_RUN_DIR", str(run))  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # judge this run's outputs, not stored ones
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError if any cell fails
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outs)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outs)
    assert f"from {run} at steps [0, 2]" in text
    assert "<table class='episodes'>" in html and "guess-" in html  # the table
    assert "failures at step 2:" in text and "their terminations:" in text
    assert "messages by origin: {'prompt': 1, 'policy':" in text
    assert 'data-origin="policy"' in html and "turn 1 of" in html  # the rendered episode
    assert any("image/png" in o.get("data", {}) for o in outs)  # the histograms
    assert re.search(r"step 2 \(eval\): 4 episodes, \d successful, mean return -?\d\.\d+, "
                     r"mean sampled tokens \d+\.\d", text), text
    assert "step 0: eval success" in text and "step 2: eval success" in text
