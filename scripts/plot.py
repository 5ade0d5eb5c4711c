"""Learning curves (PNG) from the metrics.jsonl of one or several training workdirs.

    python scripts/plot.py runs/a runs/b --out curves.png \
        --metrics rollout/mean_return rollout/success_rate eval/success_rate train/loss

One panel per metric, one line per workdir (labelled by its directory name). Metrics a
run never logged are skipped for that run; evaluation metrics are drawn with markers
since they exist only every `eval.every` steps.

Each workdir also gets `WORKDIR/overview.png` (unless --no-overview), the per-step panel
to check first: success (training episodes, evaluations, each eval subset), reward,
tool-call validity, tokens per episode, and each step's time split into rollout, update
and evaluation.
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
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# (title, [(metric, label)], y limits): the overview's panels, time drawn separately
OVERVIEW = (
    ("success rate", [("rollout/success_rate", "training episodes"),
                      ("eval/success_rate", "eval (all)")], (-0.03, 1.03)),
    ("mean return", [("rollout/mean_return", "training episodes"),
                     ("eval/mean_return", "eval")], None),
    ("valid tool calls", [("rollout/tool_call_validity_rate", "training episodes"),
                          ("eval/tool_call_validity_rate", "eval")], (-0.03, 1.03)),
    ("tokens per episode", [("rollout/mean_sampled_tokens", "sampled (training)"),
                            ("eval/mean_sampled_tokens", "sampled (eval)"),
                            ("rollout/mean_tokens", "all (training)")], None),
)
TIME_PARTS = (("time/rollout_s", "rollout", "tab:blue"), ("time/update_s", "update", "tab:orange"),
              ("time/eval_s", "evaluation", "tab:green"))


def eval_subsets(workdir: Path) -> list[str]:
    """The eval task subsets a run logged (`eval/<subset>/success_rate`)."""
    names = set()
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        for k in json.loads(line) if line.strip() else {}:
            parts = k.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] == "success_rate":
                names.add(parts[1])
    return sorted(names)


def _summary_lines(workdir: Path, curves, seconds: dict[int, float]) -> list[str]:
    """The numbers a user looks for first, as text: eval before -> after, time."""
    lines = ["summary", ""]
    for key, label in (("eval/success_rate", "eval success"),
                       ("eval/tool_call_validity_rate", "eval valid calls"),
                       ("eval/mean_return", "eval return")):
        steps, values = curves.get(key, ([], []))
        if values:
            fmt = "{:.1%}" if "rate" in key else "{:.3f}"
            lines.append(f"{label:<17} {fmt.format(values[0])} (step {steps[0]}) -> "
                         f"{fmt.format(values[-1])} (step {steps[-1]})")
    for key in sorted(curves):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and curves[key][1]:
            v = curves[key][1]
            lines.append(f"  {parts[1]:<15} {v[0]:.1%} -> {v[-1]:.1%}")
    steps, _ = curves.get("time/rollout_s", ([], []))
    if seconds:
        lines += ["", f"training steps    {len(steps)}",
                  f"time (logged)     {sum(seconds.values()) / 60:.1f} min "
                  "(rollout + update + eval)"]
    return lines


def plot_overview(workdir: Path, out: Path | None = None) -> Path:
    """The per-step panel of one run (see the module docstring); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = out or workdir / "overview.png"
    subsets = eval_subsets(workdir)
    panels = [(title, list(series), ylim) for title, series, ylim in OVERVIEW]
    panels[0][1].extend((f"eval/{s}/success_rate", f"eval: {s}") for s in subsets)
    keys = [k for _, series, _ in panels for k, _ in series] + [k for k, _, _ in TIME_PARTS]
    curves = read_curves(workdir, keys)
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.6))
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, (title, series, ylim) in zip(axes.flat, panels):
        for key, label in series:
            steps, values = curves[key]
            if steps:
                ax.plot(steps, values, marker="o" if key.startswith("eval/") else ".",
                        markersize=5 if key.startswith("eval/") else 3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "nothing logged (no tool calls?)", ha="center", va="center",
                    transform=ax.transAxes)
    ax = axes.flat[len(panels)]
    bottom: dict[int, float] = {}
    for key, label, colour in TIME_PARTS:
        steps, values = curves[key]
        if steps:
            ax.bar(steps, values, bottom=[bottom.get(s, 0.0) for s in steps], color=colour,
                   label=label, width=0.7)
            for s, v in zip(steps, values):
                bottom[s] = bottom.get(s, 0.0) + v
    ax.set_title("time per step (s)")
    ax.set_xlabel("step (0: the evaluation before training)")
    ax.grid(alpha=0.3, axis="y")
    if bottom:
        ax.legend(fontsize=8)
    summary = axes.flat[len(panels) + 1]
    summary.axis("off")
    summary.text(0.02, 0.98, "\n".join(_summary_lines(workdir, curves, bottom)), va="top",
                 family="monospace", fontsize=9, transform=summary.transAxes)
    fig.suptitle(f"{workdir.name}: per-step overview")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdirs", nargs="+", type=Path)
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--out", type=Path, default=Path("curves.png"))
    ap.add_argument("--no-overview", action="store_true",
                    help="do not write WORKDIR/overview.png for each workdir")
    args = ap.parse_args(argv)
    try:
        paths = [plot(args.workdirs, args.metrics, args.out)]
        if not args.no_overview:
            paths += [plot_overview(wd) for wd in args.workdirs]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
