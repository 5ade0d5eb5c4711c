"""Run an ablation family over several seeds; write a table (mean ± std) and learning curves.

    python scripts/ablate.py --family algo --seeds 0 1 2 --out runs/ablations/algo
    python scripts/ablate.py --family all --seeds 0 1 2 --out runs/ablations \
        --figure-dir docs/figures/ablations
    python scripts/ablate.py --list
    python scripts/ablate.py --family algo --seeds 0 --out /tmp/a --config.rollout.tasks_per_step=4

Families and arms are defined in experiments/ablations.py (on top of
experiments/tiny_learning.py). Every arm x seed is an ordinary trainer run in
`RUNS/<arm>/seed_<s>` (RUNS = `--runs-dir`, default `OUT/runs`); an arm shared by several
families runs once per seed, a finished run is not run again and an interrupted one
resumes from its checkpoint. For each family the script writes `table.md`, `table.csv`,
`results.json` (per run) and `curves.png`, in OUT for one family or in `OUT/<family>`
for several. `--config.a.b=VALUE` overrides apply to every arm, after the arm's own (the
trainer's syntax).

Columns: the training steps each seed's run reached (`--no-run` tabulates unfinished
runs as far as they got), the final greedy eval success rate and eval mean return, the training mean
return over the last 5 steps, steps until the eval success first reached 0.9 (over the
seeds that did, with how many did), the area under the eval-success curve divided by
the number of steps (1.0 = solved from the start), and the median seconds per training
step (rollout + update; compilation excluded) and the tokens per training episode (mean
over steps; an episode rewritten into several rows counts its rows' tokens, prompt
copies included). Means and sample standard deviations
(ddof=1) over seeds; the plots show the mean and a ±1 std band.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "experiments" / "ablations.py"
LAST_N = 5  # training steps averaged for the "final" training return
THRESHOLD = 0.9


def load_ablations():
    """experiments/ablations.py as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_agentic_rl_ablations", ABLATIONS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def resolve_families(names: Sequence[str], ablations) -> list[str]:
    """Family names in order, `all` expanded; ValueError listing the valid names."""
    out: list[str] = []
    for name in names:
        for n in (ablations.family_names() if name == "all" else [name]):
            ablations.get_family(n)  # raises with the valid names
            if n not in out:
                out.append(n)
    return out


# ------------------------------------------------------------------ running


def arm_config(ablations, arm_key: str, seed: int, steps: int | None,
               extra: dict[str, str]):
    """The validated trainer config of one arm and seed."""
    from agentic_rl.train.config import validate
    from agentic_rl.train.config_files import apply_overrides, load_config_file

    arm = ablations.ARMS[arm_key]
    cfg = load_config_file(f"{getattr(arm, 'config', None) or ablations.BASE_CONFIG}:"
                           f"{arm.variant}")
    cfg = apply_overrides(cfg, dict(arm.overrides))
    overrides: dict[str, Any] = {**extra, "seed": seed}
    if steps is not None:
        overrides["train.max_steps"] = steps
    return validate(apply_overrides(cfg, overrides))


def is_complete(workdir: Path, max_steps: int) -> bool:
    from agentic_rl.train.metrics import read_jsonl

    rows = read_jsonl(workdir / "metrics.jsonl")
    return bool(rows) and rows[-1].get("step") == max_steps


def check_same_config(workdir: Path, cfg) -> None:
    """Refuses to resume a workdir made with another config (other than its length)."""
    path = workdir / "config.json"
    if not path.is_file():
        return
    old, new = json.loads(path.read_text()), cfg.to_dict()
    for d in (old, new):
        d["train"] = {k: v for k, v in d["train"].items() if k != "max_steps"}
    if old != new:
        raise RuntimeError(f"{workdir} holds a run with a different config; use another "
                           "--runs-dir (or delete it) to run this arm afresh")


def run_arm(ablations, arm_key: str, seed: int, workdir: Path, steps: int | None,
            extra: dict[str, str]) -> str | None:
    """Trains (or resumes, or skips if finished) one arm x seed; returns an error or None."""
    from agentic_rl.train import Trainer

    try:
        cfg = arm_config(ablations, arm_key, seed, steps, extra)
        if is_complete(workdir, cfg.train.max_steps):
            print(f"[ablate] {arm_key} seed {seed}: done already ({workdir})", flush=True)
            return None
        check_same_config(workdir, cfg)
        print(f"[ablate] {arm_key} seed {seed}: training -> {workdir}", flush=True)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, workdir)
        try:
            trainer.train()
        finally:
            trainer.close()
        print(f"[ablate] {arm_key} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        return None
    except Exception as e:  # noqa: BLE001 - one failed arm must not lose the others
        print(f"[ablate] {arm_key} seed {seed} FAILED: {e}\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        return f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------ summaries


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [s for s, _ in pts], [v for _, v in pts]


def area_under_curve(steps: Sequence[int], values: Sequence[float], last_step: int) -> float:
    """Trapezoid area under (step, value) from the first point to `last_step`, divided by
    that span (so 1.0 = the value was 1 throughout). NaN with fewer than 2 points."""
    if len(steps) < 2 or last_step <= steps[0]:
        return math.nan
    area = sum((s1 - s0) * (v0 + v1) / 2
               for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / (last_step - steps[0])


def summarize_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's per-run numbers from a run's metrics.jsonl rows."""
    if not rows:
        return {}
    es, ev = _series(rows, "eval/success_rate")
    _, er = _series(rows, "eval/mean_return")
    _, tr = _series(rows, "rollout/mean_return")
    last_step = int(rows[-1]["step"])
    reached = next((s for s, v in zip(es, ev) if v >= THRESHOLD), None)
    step_times = sorted(float(r["time/step_s"]) for r in rows if "time/step_s" in r)
    _, tokens = _series(rows, "rollout/mean_tokens")
    return {
        "steps": last_step,
        "initial_eval_success": ev[0] if es and es[0] == 0 else math.nan,
        "final_eval_success": ev[-1] if ev else math.nan,
        "final_eval_return": er[-1] if er else math.nan,
        "final_train_return": (sum(tr[-LAST_N:]) / len(tr[-LAST_N:])) if tr else math.nan,
        "steps_to_threshold": reached,
        "auc_eval_success": area_under_curve(es, ev, last_step),
        # the median leaves out the first step's compilation (shared through the cache
        # by later runs, so totals would depend on the order the arms ran in)
        "step_s": step_times[len(step_times) // 2] if step_times else math.nan,
        "tokens_per_episode": sum(tokens) / len(tokens) if tokens else math.nan,
    }


def _json_safe(x: Any) -> Any:
    """NaN -> None, recursively (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value) of the finite values."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


COLUMNS = ("arm", "config", "seeds", "steps", "final eval success", "final eval return",
           "train return (last 5)", f"steps to {THRESHOLD}", "eval-success AUC",
           "s/step (median)", "tokens/episode")


def table_rows(family, runs: dict[str, list[dict[str, Any]]], ablations) -> list[list[str]]:
    """One row per arm of `family`; `runs[arm_key]` = per-seed summaries."""
    out = []
    for label, key in family.arms.items():
        rs = [r for r in runs.get(key, []) if r]
        reached = [r["steps_to_threshold"] for r in rs if r["steps_to_threshold"] is not None]
        steps = (f"{_fmt(reached, 1)} ({len(reached)}/{len(rs)})" if reached
                 else f"never (0/{len(rs)})")
        out.append([
            label, ablations.ARMS[key].note, str(len(rs)),
            "/".join(str(r["steps"]) for r in rs) or "n/a",
            _fmt([r["final_eval_success"] for r in rs]),
            _fmt([r["final_eval_return"] for r in rs]),
            _fmt([r["final_train_return"] for r in rs]),
            steps,
            _fmt([r["auc_eval_success"] for r in rs]),
            _fmt([r["step_s"] for r in rs], 1),
            _fmt([r.get("tokens_per_episode", math.nan) for r in rs], 0),
        ])
    return out


def load_plot():
    """scripts/plot.py as a module (its per-run overview panel)."""
    spec = importlib.util.spec_from_file_location("_agentic_rl_plot", REPO / "scripts" / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tables(out_dir: Path, name: str, family, rows: list[list[str]], seeds,
                 errors: list[str], overviews: Sequence[tuple[str, Path]] = ()) -> None:
    """table.csv and table.md; the markdown shows its curves (curves.png, beside it) and
    links each run's per-step overview (`(label, path)` in `overviews`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    lines = [f"## {name}: {family.question}", "",
             f"Seeds {', '.join(map(str, seeds))}; mean ± std over seeds.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"![{name}: eval success and training return per step](curves.png)", "",
              "Curves: [curves.png](curves.png) (mean over seeds, ±1 std band)."]
    if overviews:
        links = ", ".join(f"[{label}]({Path(os.path.relpath(path, out_dir)).as_posix()})"
                          for label, path in overviews)
        lines += [f"Per-run overviews (success, reward, tool calls, tokens, time): {links}."]
    if errors:
        lines += ["", "Failed runs:", *[f"- {e}" for e in errors]]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")


def plot_family(path: Path, name: str, family, curves: dict[str, list[list[dict]]]) -> Path:
    """Eval success and training mean return vs step: per arm the mean over seeds with a
    ±1 std band (seeds aligned on the steps they all logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = (("eval/success_rate", "eval success (greedy)"),
              ("rollout/mean_return", "training mean return"))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, (key, title) in zip(axes, panels):
        for label, arm_key in family.arms.items():
            series = [_series(rows, key) for rows in curves.get(arm_key, []) if rows]
            if not series:
                continue
            common = sorted(set.intersection(*(set(s) for s, _ in series)))
            if not common:
                continue
            ys = np.array([[dict(zip(s, v))[t] for t in common] for s, v in series])
            mean, std = ys.mean(0), ys.std(0, ddof=1) if len(ys) > 1 else 0 * ys[0]
            line, = ax.plot(common, mean, marker="o" if key.startswith("eval/") else None,
                            markersize=3, label=f"{label} (n={len(series)})")
            ax.fill_between(common, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}: {family.question}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ driver


class _Parser(argparse.ArgumentParser):
    """A usage error is one `error:` line (exit 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_plan(ablations, keys: Sequence[str], seeds: Sequence[int], runs_dir: Path,
               steps: int | None, extra: dict[str, str]) -> str | None:
    """The first problem with the sweep that shows before anything runs (a bad override, a
    run directory holding another config), or None."""
    from agentic_rl.train.config import ConfigError
    from agentic_rl.train.config_files import check_env_kwarg_types, check_types

    for seed in seeds:
        for key in keys:
            try:
                cfg = arm_config(ablations, key, seed, steps, extra)
                check_types(cfg, where=f"arm {key}")
                check_env_kwarg_types(cfg)
            except ConfigError as e:
                return f"--config overrides: arm {key}: {e}"
            workdir = runs_dir / key / f"seed_{seed}"
            if workdir.exists() and not workdir.is_dir():
                return f"--runs-dir: {workdir} is a file, not a run directory"
            try:
                if is_complete(workdir, cfg.train.max_steps):
                    continue
            except ValueError:  # a metrics line cut short: the run resumes and rewrites it
                pass
            try:
                check_same_config(workdir, cfg)
            except RuntimeError as e:
                return f"--runs-dir: {e}"
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return (f"--runs-dir: {workdir / 'config.json'} is not a readable run config "
                        f"({type(e).__name__}); delete that run directory or use another "
                        "--runs-dir")
    return None


def check_writable_dir(flag: str, path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"{flag} {path} is a file, not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{flag} {path} cannot be created ({e.strerror or e})"
    return None


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", nargs="+", default=[],
                    help="family names from experiments/ablations.py, or 'all'")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, help="where tables and plots go")
    ap.add_argument("--runs-dir", type=Path, help="run workdirs (default OUT/runs)")
    ap.add_argument("--steps", type=int, help="override train.max_steps of every arm")
    ap.add_argument("--figure-dir", type=Path, help="also save each plot as DIR/<family>.png")
    ap.add_argument("--list", action="store_true", help="print the families and arms")
    ap.add_argument("--no-run", action="store_true",
                    help="train nothing: tabulate the runs already in RUNS, unfinished ones "
                         "as far as they got (the table's steps column says how far)")
    return ap


def list_families(ablations) -> str:
    lines = []
    for name in ablations.family_names():
        fam = ablations.get_family(name)
        lines.append(f"{name}: {fam.question}")
        for label, key in fam.arms.items():
            arm = ablations.ARMS[key]
            lines.append(f"    {label:>12} = {key} ({arm.variant} {arm.overrides or ''})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from agentic_rl.train.config_files import split_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # --config.a.b=VALUE: overrides for every arm, after the arm's own
        rest, extra = split_overrides(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(rest)
    ablations = load_ablations()
    plot = load_plot()
    if args.list:
        print(list_families(ablations))
        return 0
    if not args.family or args.out is None:
        print("error: --family and --out are required (or use --list)", file=sys.stderr)
        return 2
    try:
        names = resolve_families(args.family, ablations)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print("error: --steps must be >= 1", file=sys.stderr)
        return 2
    if any(s < 0 for s in args.seeds):
        print(f"error: --seeds must be >= 0, got {args.seeds}", file=sys.stderr)
        return 2
    runs_dir = args.runs_dir or args.out / "runs"
    keys = list(dict.fromkeys(k for n in names for k in ablations.get_family(n).arms.values()))
    problem = ((None if args.no_run else
                check_plan(ablations, keys, args.seeds, runs_dir, args.steps, extra))
               or check_writable_dir("--out", args.out)
               or check_writable_dir("--runs-dir", runs_dir)
               or (check_writable_dir("--figure-dir", args.figure_dir)
                   if args.figure_dir else None))
    if problem:
        print(f"error: {' '.join(problem.split())}", file=sys.stderr)
        return 2
    from agentic_rl import compile_cache
    from agentic_rl.train.metrics import read_jsonl

    compile_cache.enable()  # arms share shapes: later runs load their programs from disk
    errors: dict[str, str] = {}
    for seed in [] if args.no_run else args.seeds:  # seed-major: a partial sweep has every arm
        for key in keys:
            err = run_arm(ablations, key, seed, runs_dir / key / f"seed_{seed}", args.steps,
                          extra)
            # each run's compiled programs would otherwise stay mapped until the process
            # runs out of memory mappings (vm.max_map_count) on a long sweep
            compile_cache.release_compiled()
            if err:
                errors[f"{key} seed {seed}"] = err
    curves = {k: [read_jsonl(runs_dir / k / f"seed_{s}" / "metrics.jsonl") for s in args.seeds]
              for k in keys}
    summaries = {k: [summarize_run(rows) for rows in v] for k, v in curves.items()}
    for name in names:
        family = ablations.get_family(name)
        out_dir = args.out if len(names) == 1 else args.out / name
        fam_errors = [f"{k}: {e}" for k, e in errors.items()
                      if k.split(" seed ")[0] in family.arms.values()]
        rows = table_rows(family, summaries, ablations)
        overviews = []
        for label, key in family.arms.items():
            for seed in args.seeds:
                run = runs_dir / key / f"seed_{seed}"
                if (run / "metrics.jsonl").is_file():
                    overviews.append((f"{label} seed {seed}", plot.plot_overview(run)))
        write_tables(out_dir, name, family, rows, args.seeds, fam_errors, overviews)
        results = {label: {"arm": key, "seeds": args.seeds, "runs": summaries[key]}
                   for label, key in family.arms.items()}
        (out_dir / "results.json").write_text(json.dumps(_json_safe(results), indent=2))
        png = plot_family(out_dir / "curves.png", name, family, curves)
        if args.figure_dir:
            plot_family(args.figure_dir / f"{name}.png", name, family, curves)
        print((out_dir / "table.md").read_text())
        print(f"[ablate] {name}: {out_dir / 'table.md'}, {png}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
