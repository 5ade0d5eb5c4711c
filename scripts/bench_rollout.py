"""Times one training rollout of the tiny learning config (16 tasks x 8 episodes of
guess-the-number, two one-character turns, the `tiny` random model) through the
trainer's default path (`agents.run_episodes`), and the same rollout with a scripted
policy (the runtime's own cost, no model).

    python scripts/bench_rollout.py --repeats 5

Prints the median of `--repeats` rollouts (after one warm-up, which compiles) in
seconds, as JSON. Figures in docs/benchmarks.md ("One rollout runtime").

Imports: any layer (a script).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from agentic_rl.agents import run_episodes
    from agentic_rl.envs import make_env_suite
    from agentic_rl.rollout import CharTokenizer, RolloutConfig, ScriptedPolicy, make_chat_format
    from agentic_rl.train.config_files import load_config_file
    from agentic_rl.train.loop import Trainer

    cfg = load_config_file("experiments/tiny_learning.py:grpo")
    cfg.log.progress = False
    out = {}
    with tempfile.TemporaryDirectory() as wd:
        trainer = Trainer(cfg, wd)
        times = []
        for _ in range(args.repeats + 1):
            trainer.position = 0  # the same tasks every time
            t0 = time.perf_counter()
            trainer.rollout()
            times.append(time.perf_counter() - t0)
        trainer.close()
    out["trainer_rollout_s"] = statistics.median(times[1:])

    suite = make_env_suite("guess_number", **dict(cfg.env.kwargs))
    tok = CharTokenizer()
    fmt = make_chat_format("chatml", tok)
    tasks = suite.tasks.split("train")[:16]
    rcfg = RolloutConfig(max_turns=2, max_new_tokens=1, max_episode_tokens=96,
                         length_bucket=96)
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        run_episodes(ScriptedPolicy(tok, lambda req, hist: "2"), fmt, suite.make_env, tasks,
                     group_size=8, config=rcfg, seed=i)
        times.append(time.perf_counter() - t0)
    out["scripted_rollout_s"] = statistics.median(times[1:])
    print(json.dumps({k: round(v, 4) for k, v in out.items()}))


if __name__ == "__main__":
    main()
