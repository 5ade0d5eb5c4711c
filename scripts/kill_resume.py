"""Kill -9 / resume cycles of the tiny learner must end exactly where an uninterrupted run does.

    python scripts/kill_resume.py                       # 10 cycles, short tiny_learning run
    python scripts/kill_resume.py --cycles 3 --config.rollout.tasks_per_step=4 --out runs/kr

1. Runs `python -m agentic_rl.train` on experiments/tiny_learning.py (a short variant: see
   SHORT; `--config.KEY=VALUE` adds overrides) uninterrupted into OUT/full, timing it.
2. Runs the same command into OUT/killed `--cycles` times, each time sending SIGKILL to
   the process group: every third cycle while a checkpoint is being saved (as soon as an
   orbax temporary directory, or a step directory without its manifest, shows up), the
   others at a random moment (seeded by `--seed`) of the start-up or of the training
   still left. After the last kill the run is resumed to the end. The runs use a private
   compilation cache under OUT (a kill can leave a truncated cache entry behind).
3. Compares OUT/full and OUT/killed: every metrics.jsonl field except timings, every
   trajectory file, and the final checkpoint's arrays (params, optimizer state, step,
   PRNG key) bit for bit. Prints a table; exit status 1 on any difference (or a run that
   failed for another reason than the kill), 0 otherwise.

Asynchronous training (the config's train.max_off_policy_steps > 0, e.g. `--variant
grpo_async1`) promises consistency, not bit-exactness: a resume samples the batches that
were sampled ahead but never trained again, with the restored weights. There the
comparison is what that promises: both runs logged every step exactly once, and each
step trained the same data (`data/position` and `data/tasks_crc32`, a checksum of its
rows' task ids: no task trained twice or skipped), and the killed run's final checkpoint
is at the last step; weights and trajectories are not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG = REPO / "experiments" / "tiny_learning.py"
MANIFEST = "agentic_rl_manifest.json"
TMP_MARK = ".orbax-checkpoint-tmp"
# A short tiny_learning run: 12 steps, a checkpoint every step (keep 2), evaluation at
# steps 0, 4, 8 and 12, so a resume has something recent to restore and eval/best both matter.
SHORT = {"train.max_steps": "12", "checkpoint.every": "1", "checkpoint.keep": "2",
         "eval.every": "4", "log.progress": "false", "log.tensorboard": "false"}


def train_cmd(variant: str, workdir: Path, overrides: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "agentic_rl.train", "--config", f"{CONFIG}:{variant}",
            "--workdir", str(workdir), *[f"--config.{k}={v}" for k, v in overrides.items()]]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    f = log.open("a")
    f.write(f"\n=== {' '.join(cmd)}\n")
    f.flush()
    # A private compilation cache: JAX writes cache entries in place, so a kill -9 can
    # leave a truncated one (JAX then warns and recompiles); keep that out of the shared
    # cache other runs and the tests read.
    env = {**os.environ, "AGENTIC_RL_CACHE": str(log.parent / "cache")}
    return subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process this script started
    except ProcessLookupError:
        pass
    proc.wait()


def saving_now(ckpt_dir: Path) -> str | None:
    """A checkpoint save in progress: an orbax temporary directory, or a step directory
    that has no manifest yet."""
    try:
        entries = list(os.scandir(ckpt_dir))
    except FileNotFoundError:
        return None
    for e in entries:
        if TMP_MARK in e.name:
            return e.name
        if e.name.isdigit() and not os.path.exists(os.path.join(e.path, MANIFEST)):
            return e.name
    return None


def metrics_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                pass
    return out


def committed(workdir: Path) -> list[int]:
    d = workdir / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.name.isdigit() and (p / MANIFEST).is_file())


# ------------------------------------------------------------------ comparison


CONSISTENT = ("data/position", "data/tasks_crc32")  # what an async resume keeps


def compare_metrics(a: Path, b: Path, only: tuple[str, ...] | None = None
                    ) -> tuple[list[list[str]], int]:
    """Per step, every non-timing field (or only the fields `only`) of both runs."""
    from agentic_rl.train.metrics import is_timing, read_jsonl

    ra, rb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    rows, bad = [], 0
    by_a = {r["step"]: r for r in ra}
    by_b = {r["step"]: r for r in rb}
    if [r["step"] for r in ra] != [r["step"] for r in rb]:
        bad += 1
        rows.append(["steps", "-", f"{[r['step'] for r in ra]} vs {[r['step'] for r in rb]}"])
    for step in sorted(set(by_a) | set(by_b)):
        x, y = by_a.get(step), by_b.get(step)
        if x is None or y is None:
            bad += 1
            rows.append([str(step), "-", "missing in " + ("full" if x is None else "killed")])
            continue
        keys = sorted(k for k in set(x) | set(y) if not is_timing(k)
                      and (only is None or k in only))
        if only is not None and not keys:  # neither trained at this step (step 0's eval)
            rows.append([str(step), "0", "no training at this step"])
            continue
        if only is not None and len(keys) < len(only):
            bad += 1
            rows.append([str(step), str(len(keys)), f"MISSING fields: {only}"])
            continue
        diff = [k for k in keys if x.get(k, "<absent>") != y.get(k, "<absent>")]
        bad += bool(diff)
        rows.append([str(step), str(len(keys)),
                     "identical" if not diff else "DIFFERENT: " + ", ".join(
                         f"{k} {x.get(k)!r} vs {y.get(k)!r}" for k in diff[:4])])
    return rows, bad


def compare_trajectories(a: Path, b: Path) -> tuple[str, int]:
    fa = {p.name: p for p in (a / "trajectories").glob("*.jsonl")}
    fb = {p.name: p for p in (b / "trajectories").glob("*.jsonl")}
    if set(fa) != set(fb):
        return f"DIFFERENT files: {sorted(fa)} vs {sorted(fb)}", 1
    diff = [n for n in sorted(fa) if fa[n].read_bytes() != fb[n].read_bytes()]
    if diff:
        return f"DIFFERENT: {', '.join(diff)}", 1
    return f"identical ({len(fa)} files)", 0


def final_arrays(workdir: Path) -> tuple[int, dict[str, Any]]:
    """The saved arrays of the run's newest checkpoint, by leaf path."""
    import jax
    import numpy as np

    from agentic_rl.train import builders
    from agentic_rl.train.checkpoint import Checkpointer, _flatten, _saved_tree
    from agentic_rl.train.config_files import from_dict
    from agentic_rl.train.state import init_train_state

    cfg = from_dict(json.loads((workdir / "config.json").read_text()))
    built = builders.build_policy(cfg)
    state = init_train_state(built.model, builders.optimizer(cfg), seed=cfg.seed,
                             need_ref_copy=False)
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        found = ckpt.restore_latest(state, repair=False)
    finally:
        ckpt.close()
    if found is None:
        raise SystemExit(f"error: no checkpoint in {workdir}")
    step, state, _ = found
    _, names, _ = _flatten(_saved_tree(state))
    leaves = jax.tree.leaves(_saved_tree(state))
    return step, {n: np.asarray(x) for n, x in zip(names, leaves)}


def compare_arrays(a: Path, b: Path) -> tuple[list[list[str]], int]:
    sa, xa = final_arrays(a)
    sb, xb = final_arrays(b)
    rows, bad = [], 0
    if sa != sb or set(xa) != set(xb):
        return [["checkpoint", f"step {sa} vs {sb}", "DIFFERENT structure or step"]], 1
    groups: dict[str, list[int]] = {}
    for name in xa:
        group = name.split("]")[0] + "]"
        same = (xa[name].dtype == xb[name].dtype and xa[name].shape == xb[name].shape
                and xa[name].tobytes() == xb[name].tobytes())
        groups.setdefault(group, [0, 0])
        groups[group][0] += 1
        groups[group][1] += not same
    for group, (n, nd) in groups.items():
        bad += nd
        rows.append([group, f"{n} arrays at step {sa}",
                     "bitwise identical" if not nd else f"DIFFERENT: {nd} of {n} arrays"])
    return rows, bad


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


# ------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=10, help="kill -9 / resume cycles")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    ap.add_argument("--variant", default="grpo", help="tiny_learning.py variant")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "kill_resume",
                    help="work directory (wiped first)")
    from agentic_rl.train.config_files import split_overrides

    try:  # --config.a.b=VALUE: extra overrides, after SHORT
        rest, extra = split_overrides(list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        ap.error(str(e))
    args = ap.parse_args(rest)
    if args.cycles < 0:
        ap.error("--cycles must be >= 0")
    overrides = {**SHORT, **extra}
    max_steps = int(overrides["train.max_steps"])
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    full, killed, log = args.out / "full", args.out / "killed", args.out / "train.log"
    rng = random.Random(args.seed)
    t_all = time.perf_counter()

    # 1. uninterrupted, timing the start-up and the steps by when checkpoints commit
    t0 = time.perf_counter()
    proc = start(train_cmd(args.variant, full, overrides), log)
    commits: dict[int, float] = {}
    while proc.poll() is None:
        for s in committed(full):
            commits.setdefault(s, time.perf_counter() - t0)
        time.sleep(0.02)
    t_full = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"error: the uninterrupted run failed (exit {proc.returncode}); see {log}")
        return 1
    times = sorted(commits.values())
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    t_step = gaps[(len(gaps) - 1) // 2] if gaps else t_full / (2 * max_steps)
    boot = max((times[0] if times else t_full / 2) - t_step, 1.0)
    print(f"uninterrupted: {t_full:.1f} s (start-up {boot:.1f} s, {t_step:.2f} s/step)",
          flush=True)

    # 2. killed and resumed. Kill moments, seeded: every third cycle while a checkpoint is
    # being saved; otherwise a third of the time at a random moment of the start-up
    # (imports, restore, compilation; or as soon as training shows, if that comes first),
    # else at a random moment of the training that is left: a random number of step times
    # after this process committed its first checkpoint. Start-up and step times are
    # re-estimated from every cycle's commits (the first run paid for compilation).
    cycle_rows = []
    failures = 0
    kills = 0
    for i in range(args.cycles):
        done = committed(killed)
        left = max_steps - (done[-1] if done else 0)
        mode = "save" if i % 3 == 2 else ("boot" if rng.random() < 1 / 3 or left <= 1
                                          else "train")
        at = rng.uniform(0.1, 1.0) * boot
        train_for = rng.uniform(0.0, 0.7 * (left - 1)) * t_step
        t0 = time.perf_counter()
        proc = start(train_cmd(args.variant, killed, overrides), log)
        what, seen_at, last_poll = "", {}, 0.0
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if now - last_poll > 0.02:  # progress: when new checkpoints commit
                last_poll = now
                for s in committed(killed):
                    if s not in done:
                        seen_at.setdefault(s, now)
            first = min(seen_at.values()) if seen_at else None
            if mode == "save":
                seen = saving_now(killed / "checkpoints")
                if seen:
                    what = f"at {now:.1f} s, while saving ({seen})"
                    break
                if now > 3 * (boot + left * t_step) + 60:  # no save came: kill it anyway
                    what = f"at {now:.1f} s (no save seen)"
                    break
                time.sleep(0.001)
            elif mode == "boot":
                if now >= at or first is not None:
                    what = f"at {now:.1f} s, in start-up" if first is None else (
                        f"at {now:.1f} s, as training showed")
                    break
                time.sleep(0.01)
            else:
                if first is not None and now >= first + train_for:
                    what = f"at {now:.1f} s, {now - first:.1f} s into training"
                    break
                time.sleep(0.01)
        times = sorted(seen_at.values())
        if times:  # the first commit comes one step after start-up
            boot = min(boot, max(times[0] - t_step, 1.0))
        if len(times) > 1:
            gaps = sorted(b - a for a, b in zip(times, times[1:]))
            t_step = gaps[(len(gaps) - 1) // 2]
        if proc.poll() is None:
            kill(proc)
            kills += 1
            outcome = f"killed {what}"
        elif proc.returncode == 0:
            outcome = "finished before the kill"
        else:
            outcome = f"FAILED (exit {proc.returncode})"
            failures += 1
        after = committed(killed)
        cycle_rows.append([str(i + 1), mode, outcome, str(done[-1] if done else 0),
                           str(len(seen_at)), str(after)])
        print(f"cycle {i + 1}: {mode}: {outcome}; committed checkpoints {after}", flush=True)
        if outcome == "finished before the kill":
            break
    proc = start(train_cmd(args.variant, killed, overrides), log)
    proc.wait()
    if proc.returncode != 0:
        failures += 1
        print(f"error: the final resume failed (exit {proc.returncode}); see {log}")
    print()
    print(table(cycle_rows, ["cycle", "mode", "outcome", "newest checkpoint before",
                             "new commits", "checkpoints after"]))

    # 3. compare (asynchronous training: consistency, see the module docstring)
    lag = int(json.loads((full / "config.json").read_text())["train"]["max_off_policy_steps"])
    m_rows, m_bad = compare_metrics(full, killed, only=CONSISTENT if lag else None)
    if lag:
        t_text, t_bad = "not compared (asynchronous: consistent, not bit-exact)", 0
        last = committed(killed)
        p_bad = int(not last or last[-1] != max_steps)
        p_rows = [["checkpoint", f"newest at step {last[-1] if last else None}",
                   f"{'DIFFERENT: expected' if p_bad else 'at the last step,'} {max_steps}; "
                   "arrays not compared"]]
    else:
        t_text, t_bad = compare_trajectories(full, killed)
        try:
            p_rows, p_bad = compare_arrays(full, killed)
        except Exception as e:  # noqa: BLE001 - reported as a difference
            p_rows, p_bad = [["checkpoint", "-", f"DIFFERENT: {type(e).__name__}: {e}"]], 1
    print()
    print(table(m_rows, ["metrics step", "fields compared", "result"]))
    print()
    print(table([["trajectories", t_text], *[[r[0], f"{r[1]}: {r[2]}"] for r in p_rows]],
                ["final state", "result"]))
    warnings = sum("warning:" in line for line in log.read_text().splitlines())
    print(f"\n{kills} kill -9 in {len(cycle_rows)} cycles; {warnings} checkpoint warnings in "
          f"{log}; wall time {time.perf_counter() - t_all:.0f} s")
    ok = not (m_bad or t_bad or p_bad or failures)
    same = ("consistent with the uninterrupted run (every step once, the same tasks)"
            if lag else "identical to the uninterrupted run")
    print("RESULT: " + (same if ok else
                        f"DIFFERENT ({m_bad} metrics rows, {t_bad} trajectory, {p_bad} arrays, "
                        f"{failures} failed runs)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
