"""Learning curves (PNG) from the metrics.jsonl of one or several training workdirs.

    python scripts/plot.py runs/a runs/b --out curves.png \
        --metrics rollout/mean_return rollout/success_rate eval/success_rate train/loss

One panel per metric, one line per workdir (labelled by its directory name). Metrics a
run never logged are skipped for that run; evaluation metrics are drawn with markers
since they exist only every `eval.every` steps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_METRICS = ("rollout/mean_return", "rollout/success_rate", "eval/success_rate",
                   "train/loss")


def read_curves(workdir: Path, metrics: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """metric -> (steps, values) from workdir/metrics.jsonl (missing or null values skipped)."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    curves: dict[str, tuple[list[int], list[float]]] = {m: ([], []) for m in metrics}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for m in metrics:
            v = row.get(m)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                curves[m][0].append(int(row["step"]))
                curves[m][1].append(float(v))
    return curves


def plot(workdirs: list[Path], metrics: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for wd in workdirs:
            steps, values = read_curves(wd, [m])[m]
            if steps:
                ax.plot(steps, values, marker="o" if m.startswith("eval/") else None,
                        markersize=3, label=wd.name)
        ax.set_title(m)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdirs", nargs="+", type=Path)
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--out", type=Path, default=Path("curves.png"))
    args = ap.parse_args(argv)
    try:
        path = plot(args.workdirs, args.metrics, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
