"""Start a multi-process JAX training run: N local processes (testing), or print the
per-host commands of a real multi-host run.

Local (N processes on this machine; on CPU each gets --devices forced host devices and
the processes talk over gloo):

    python scripts/launch_multihost.py --num-processes 2 --devices 2 -- \
        python -m agentic_rl.train --config experiments/tiny_guess_number.py \
        --workdir runs/tiny_2proc

Every process runs the same command with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID set (train/distributed.py reads them); its output is prefixed with
`[pI]`. When one process fails the others are killed; the exit status is the first
non-zero one. --timeout bounds the whole run.

Real hosts (a shared filesystem for --workdir; HOST0 is process 0's address, reachable
from every host on PORT):

    python scripts/launch_multihost.py --print-hosts 4 --coordinator HOST0:PORT -- \
        python -m agentic_rl.train --config experiments/X.py --workdir /shared/runs/X

prints, for each host i, the command to start there (by ssh, a job scheduler, ...):

    JAX_COORDINATOR_ADDRESS=HOST0:PORT JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=i python -m ...

(the same settings can be given as --config.distributed.coordinator_address=...,
--config.distributed.num_processes=..., --config.distributed.process_id=...; under SLURM,
Open MPI or on Cloud TPU, --config.distributed.auto=True lets JAX find them itself).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(i: int, n: int, address: str, devices: int | None,
                base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(n),
               JAX_PROCESS_ID=str(i))
    if devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _pump(i: int, stream) -> None:
    for line in iter(stream.readline, ""):
        sys.stderr.write(f"[p{i}] {line}")
    stream.close()


def launch(command: list[str], num_processes: int, *, devices: int | None = None,
           timeout: float | None = None, env: dict[str, str] | None = None,
           cwd: str | None = None, log_prefix: str | None = None) -> int:
    """Runs `command` as `num_processes` local processes of one JAX job; returns the exit
    status (the first non-zero one; 124 on timeout). Always kills what it started.
    `log_prefix`: process i's output goes to `{log_prefix}{i}.log` instead of stderr."""
    address = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []
    threads = []
    try:
        for i in range(num_processes):
            out = open(f"{log_prefix}{i}.log", "w") if log_prefix else subprocess.PIPE
            p = subprocess.Popen(command, env=process_env(i, num_processes, address, devices, env),
                                 cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
            procs.append(p)
            if log_prefix:
                out.close()
                continue
            t = threading.Thread(target=_pump, args=(i, p.stdout), daemon=True)
            t.start()
            threads.append(t)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                return 124
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for t in threads:
            t.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("error: put the command to run after `--`", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=None,
                    help="forced CPU devices per process (XLA_FLAGS); omit on GPU/TPU")
    ap.add_argument("--timeout", type=float, default=None, help="seconds for the whole run")
    ap.add_argument("--print-hosts", type=int, metavar="N", default=None,
                    help="print the per-host commands of an N-host run instead of launching")
    ap.add_argument("--coordinator", default="HOST0:12345",
                    help="process 0's host:port (with --print-hosts)")
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        print("error: no command after `--`", file=sys.stderr)
        return 2
    if args.print_hosts:
        for i in range(args.print_hosts):
            print(f"# host {i}\nJAX_COORDINATOR_ADDRESS={args.coordinator} "
                  f"JAX_NUM_PROCESSES={args.print_hosts} JAX_PROCESS_ID={i} "
                  f"{shlex.join(command)}")
        return 0
    return launch(command, args.num_processes, devices=args.devices, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
