"""Run the whole attack list against the tool APIs and print blocked / escaped / crashed / hung.

    python scripts/attack.py                  # every area in scripts/attacks/
    python scripts/attack.py --area sql --area sandbox --json runs/attack.json
    python scripts/attack.py --list           # names only
    python scripts/attack.py --jobs 2         # two attacks at a time

Each attack (see `scripts/attacks/__init__.py` for the contract) runs in a fresh child
process, in its own session, under its own wall-clock limit. The child reports one JSON
line; the parent classifies:

- blocked: `run()` returned None (the defence held);
- escaped: `run()` returned a description of what got through, or raised (an exception
  out of a tool API is the policy crashing its caller);
- crashed: the child died without reporting (a signal such as SIGSEGV, or an abort): the
  attack took the host process down;
- hung: the wall-clock limit passed; the child's whole process group is killed.

Exit status 0 only when every attack was blocked. The slow test
`tests/scripts/test_attack.py` runs this script and asserts exactly that.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.attacks import AREAS, Attack  # noqa: E402

STATUSES = ("blocked", "escaped", "crashed", "hung")
_MARK = "@@attack-result@@ "


def area_module(area: str) -> str:
    """A short area name ('sql') or a dotted module path (for tests) -> module path."""
    return area if "." in area else f"scripts.attacks.{area}"


def load_attacks(area: str) -> list[Attack]:
    module = importlib.import_module(area_module(area))
    attacks = list(getattr(module, "ATTACKS", None) or [])
    if not attacks:
        raise SystemExit(f"error: {area_module(area)} defines no ATTACKS")
    names = [a.name for a in attacks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SystemExit(f"error: duplicate attack names in {area}: {', '.join(dupes)}")
    return attacks


def run_one(area: str, name: str) -> int:
    """Child mode: run one attack in this process and print its JSON result line."""
    attack = {a.name: a for a in load_attacks(area)}.get(name)
    if attack is None:
        raise SystemExit(f"error: no attack {name!r} in {area}")
    t0 = time.monotonic()
    try:
        escaped = attack.run()
        status = "blocked" if escaped is None else "escaped"
        detail = "" if escaped is None else str(escaped)
    except BaseException as e:  # noqa: BLE001 - any exception out of a tool is an escape
        status = "escaped"
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        detail = f"raised {tb}"
    result = {"status": status, "detail": detail[:500], "seconds": time.monotonic() - t0}
    sys.stdout.flush()
    sys.stdout.write(_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def classify(area: str, attack: Attack, timeout_scale: float = 1.0) -> dict:
    """Run `attack` in a child process and classify the outcome (parent mode)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{area}:{attack.name}"]
    limit = attack.timeout_s * timeout_scale
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True,
                            errors="replace")
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return {"status": "hung", "detail": f"no result within {limit:.0f} s",
                "seconds": time.monotonic() - t0}
    # The attack may have left children in its session (its process group): end them.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    lines = [ln for ln in out.splitlines() if ln.startswith(_MARK)]
    if lines:
        result = json.loads(lines[-1][len(_MARK):])
        result["seconds"] = time.monotonic() - t0
        return result
    rc = proc.returncode
    cause = (f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals()
             else f"exit status {rc}")
    tail = err.strip().splitlines()[-1][:300] if err.strip() else ""
    return {"status": "crashed", "detail": f"{cause} before reporting; {tail}".rstrip("; "),
            "seconds": time.monotonic() - t0}


def format_table(results: list[dict]) -> str:
    areas = sorted({r["area"] for r in results}, key=lambda a: (a not in AREAS, a))
    header = f"{'area':<12}" + "".join(f"{s:>10}" for s in STATUSES) + f"{'total':>8}"
    rows = [header, "-" * len(header)]
    totals = Counter()
    for area in areas:
        counts = Counter(r["status"] for r in results if r["area"] == area)
        totals.update(counts)
        rows.append(f"{area:<12}" + "".join(f"{counts[s]:>10}" for s in STATUSES)
                    + f"{sum(counts.values()):>8}")
    rows.append("-" * len(header))
    rows.append(f"{'all':<12}" + "".join(f"{totals[s]:>10}" for s in STATUSES)
                + f"{sum(totals.values()):>8}")
    bad = [r for r in results if r["status"] != "blocked"]
    if bad:
        rows.append("")
        rows.append("not blocked:")
        rows += [f"  {r['status']:<8} {r['area']}:{r['name']} (item {r['item']}): {r['detail']}"
                 for r in bad]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/attack.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--area", action="append", metavar="AREA",
                    help=f"area to run (repeatable; default all of {', '.join(AREAS)}); "
                         "a dotted module path is accepted too")
    ap.add_argument("--name", action="append", metavar="NAME", help="only attacks with this name")
    ap.add_argument("--one", metavar="AREA:NAME", help=argparse.SUPPRESS)
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every attack's wall-clock limit (slow machines)")
    ap.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    ap.add_argument("--jobs", type=int, default=1,
                    help="attacks run at once (each in its own child process; most of a "
                         "child's time is its start-up, so 2 on 2 cores halves the wall time)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.one:
        area, _, name = args.one.rpartition(":")
        return run_one(area, name)

    areas = args.area or list(AREAS)
    plan = [(area, a) for area in areas for a in load_attacks(area)
            if not args.name or a.name in args.name]
    if args.list:
        for area, a in plan:
            print(f"{area}:{a.name:<40} item {a.item:<6} {a.description}")
        return 0
    t0 = time.monotonic()

    def run(item):
        area, attack = item
        r = classify(area, attack, args.timeout_scale)
        r.update(area=area, name=attack.name, item=attack.item)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = []
        for i, r in enumerate(pool.map(run, plan), 1):  # in plan order
            results.append(r)
            print(f"[{i:>3}/{len(plan)}] {r['status']:<8} {r['area']}:{r['name']} "
                  f"({r['seconds']:.1f} s)"
                  f"{'  ' + r['detail'] if r['status'] != 'blocked' else ''}", flush=True)
    print()
    print(format_table(results))
    print(f"\n{len(results)} attacks in {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["status"] == "blocked" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
