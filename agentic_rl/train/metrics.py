"""Metric sinks: JSONL (always), TensorBoard event files, and a console progress bar.

`metrics.jsonl` holds one line per training step, {"step": n, ...}; evaluation metrics
are prefixed `eval/`. It is the run's history: on resume it is truncated to the restored
step, so a resumed run's file equals an uninterrupted run's (up to timing fields).

Imports: the standard library, tqdm and (optionally) tensorboardX.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Fields that measure wall-clock time; they differ between otherwise identical runs.
TIMING_KEYS = ("time/", "tokens_per_s", "perf/")


def is_timing(key: str) -> bool:
    return any(key.startswith(p) or p in key for p in TIMING_KEYS)


def _json_value(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsWriter:
    """Writes each step's metrics to JSONL, TensorBoard (optional) and a progress bar."""

    def __init__(self, workdir: str | Path, *, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, progress: bool = True):
        self.workdir = Path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: JSONL is the source of truth
                print("tensorboardX is not installed; TensorBoard logging is off",
                      file=sys.stderr)
            else:
                self.tb = SummaryWriter(str(self.workdir / "tensorboard"))
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train",
                            dynamic_ncols=True, file=sys.stderr)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{k: _json_value(v) for k, v in sorted(metrics.items())}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.bar is not None:
            # the bar counts steps done, not writes: the evaluation before the first step
            # writes step 0 (it was once drawn as a 7th iteration of a 6-step bar)
            self.bar.n = min(int(step), self.bar.total or int(step))
            self.bar.set_postfix(self._postfix(row), refresh=True)

    @staticmethod
    def _postfix(row: Mapping[str, Any]) -> dict[str, str]:
        show = {"reward": "rollout/mean_return", "success": "rollout/success_rate",
                "tok/s": "perf/tokens_per_s", "s/step": "time/step_s",
                "eval": "eval/success_rate"}
        out = {}
        for label, key in show.items():
            v = row.get(key)
            if isinstance(v, (int, float)):
                out[label] = f"{v:.3g}"
        return out

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
