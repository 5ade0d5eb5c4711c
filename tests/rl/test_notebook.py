"""Executes notebooks/prototype_loss.ipynb top to bottom in a fresh kernel."""

from __future__ import annotations

import pathlib

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "prototype_loss.ipynb"


def test_prototype_loss_notebook_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # judge this run's outputs, not the stored ones
    # "python3" runs the interpreter running pytest (jupyter_client swaps in sys.executable);
    # the kernel starts in the repo root, where the notebook finds agentic_rl.
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError if any cell fails
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "'soft_clip'" in text  # registered next to the built-ins
    assert "soft_clip -> {'loss'" in text  # selected from the config
    assert "unknown policy loss 'soft-clip'; valid names:" in text
    # section 5: the new loss trains the tiny model one step through learner_step
    assert "soft_clip learner step: {'loss'" in text and "trained steps: 1" in text
    assert "'skipped': 0.0" in text
