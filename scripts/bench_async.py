"""Synchronous vs asynchronous training, side by side, on an environment that is slow to answer.

    python scripts/bench_async.py                      # latency 1 s, S = 0, 1, 2
    python scripts/bench_async.py --latency 0.5 2 --steps 8 --epochs 8

The environment is the tiny learner's guess-the-number game (experiments/tiny_learning.py)
whose every step really sleeps `latency` seconds (`env.step_latency_s`; uniform in
[latency * (1 - jitter), latency * (1 + jitter)]), as a slow tool or web API would: a
rollout of 128 concurrent two-turn episodes waits about 2 x latency on the environment,
plus its sampling. The same model, batch and update (train.num_epochs x
train.num_minibatches) run with `train.max_off_policy_steps` S = 0 (synchronous), 1 and 2;
each mode's first `--warmup` steps (compilation) run synchronously and are left out; the
timed steps then include the pipeline's fill (the first asynchronous step waits for a
whole rollout).

Printed per mode: median step wall time (and the timed steps' total wall / steps),
steps per hour and its ratio to S = 0, the learner's idle fraction (waiting for a batch
/ step wall; synchronous: the rollout's share of the step), and the median rollout and
update times. Asynchronous training can
hide the shorter of rollout and update behind the longer: the ratio is at most
(rollout + update) / max(rollout, update), so it is near 2 only when the two are about
equal (`--epochs` sets the update's work), and the learner is busy only when sampling
is the faster side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_mode(lag: int, args) -> dict:
    from agentic_rl.train import Trainer
    from agentic_rl.train.config_files import load_config_file

    cfg = load_config_file(str(REPO / "experiments" / "tiny_learning.py:grpo"))
    with cfg.unlocked():
        cfg.train.max_steps = args.warmup + args.steps
        cfg.train.num_epochs = args.epochs
        cfg.train.max_off_policy_steps = lag
        cfg.rl.loss.off_policy = "tis" if lag else "none"
        cfg.rollout.max_workers = cfg.rollout.tasks_per_step * cfg.rollout.group_size
        cfg.eval.every = 0
        cfg.eval.at_start = False
        cfg.checkpoint.every = 10_000
        # every environment step really sleeps (envs.suite.SlowEnv)
        cfg.env.step_latency_s = args.latency
        cfg.env.step_latency_jitter = args.jitter
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(cfg, workdir)
        try:
            # warm-up steps run synchronously (train() has not started the producer):
            # they compile the sampler and the update, so the producer gets no head start
            # from the learner's compilation
            warm = [trainer.train_step() for _ in range(args.warmup)]
            t0 = time.perf_counter()
            timed = trainer.train()
            wall = time.perf_counter() - t0
        finally:
            trainer.close()
    history = [*warm, *timed]
    step_s = [h["time/step_s"] for h in timed]
    if lag:
        idle = sum(h["time/wait_s"] for h in timed) / sum(step_s)
    else:
        idle = sum(h["time/rollout_s"] for h in timed) / sum(step_s)
    return {
        "lag": lag, "latency_s": args.latency, "epochs": args.epochs,
        "timed_wall_per_step_s": wall / len(timed),
        "step_s": statistics.median(step_s), "steps_per_hour": 3600 / statistics.median(step_s),
        "idle": idle, "rollout_s": statistics.median(h["time/rollout_s"] for h in timed),
        "update_s": statistics.median(h["time/update_s"] for h in timed),
        "staleness": [h.get("async/staleness", 0.0) for h in history],
        "success": [round(h["rollout/success_rate"], 3) for h in history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, nargs="+", default=[1.0],
                    help="seconds each environment step sleeps (one run set per value)")
    ap.add_argument("--jitter", type=float, default=0.0, help="latency x (1 +- jitter)")
    ap.add_argument("--lags", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps per mode")
    ap.add_argument("--epochs", type=int, default=2, help="train.num_epochs (update work)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for latency in args.latency:
        args.latency = latency
        base = None
        for lag in args.lags:
            row = run_mode(lag, args)
            base = base or (row if lag == 0 else None)
            row["ratio"] = row["steps_per_hour"] / base["steps_per_hour"] if base else None
            rows.append(row)
            print(f"latency {latency:.2f} s  S={lag}  step {row['step_s']:.2f} s  "
                  f"(wall/steps {row['timed_wall_per_step_s']:.2f} s)  "
                  f"{row['steps_per_hour']:.0f} steps/h  ratio "
                  f"{row['ratio'] if row['ratio'] is None else round(row['ratio'], 2)}  "
                  f"learner idle {row['idle']:.0%}  rollout {row['rollout_s']:.2f} s  "
                  f"update {row['update_s']:.2f} s  staleness {row['staleness']}",
                  flush=True)
    print("\n| latency | S | step (median) | steps/h | ratio to S=0 | learner idle | "
          "rollout | update |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
        print(f"| {r['latency_s']:.2f} s | {r['lag']} | {r['step_s']:.2f} s | "
              f"{r['steps_per_hour']:.0f} | {ratio} | {r['idle']:.0%} | "
              f"{r['rollout_s']:.2f} s | {r['update_s']:.2f} s |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
