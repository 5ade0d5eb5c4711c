"""Attacks on the Python code sandbox (`CodeSandbox`, the `python` tool of `python_code`).

Each attack plays a hostile policy: it sends code the way a policy does (a `<tool_call>`
for the `python` tool, parsed by `parse_action` and run by `CodeToolEnv.step`) and then
checks, from the host, that the defence held: the call came back in bounded time as an
observation (an abandoned tool thread, "timed out", counts as a hang of the sandbox),
nothing the cell started still runs, host files, sockets and keys are untouched, the
resource bound held (CPU time, bytes and files written), and the observation names the
right cause. Host calls that could hang (step, reset, close) run under `bounded`.

Items: "3" blocking host I/O, "4" limits enforced inside the worker, "5" workspace size,
"6" forged replies, "7" rlimits-mode privacy, "8" keyrings / io_uring, "9" stale state of
a killed host, "10" death causes; "new" = the same classes, cases of our own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agentic_rl.envs import SandboxLimits, Task, execute_tool, make_code_env, parse_action
from agentic_rl.envs.tools.sandbox.sandbox import CodeSandbox, _processes_of_uid
from agentic_rl.envs.tools.sandbox.system import kill_uid
from scripts.attacks import Attack, Hung, bounded

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(wall_s=3.0, cpu_s=2.0, memory_mb=256, max_processes=16)
GRACE_S = 15.0  # a call may take its limit + this on a loaded host before it counts as a hang


class _Box:
    """A `python_code` environment with its own sandbox, driven like a policy drives it."""

    def __init__(self, limits: SandboxLimits = LIMITS, isolation: str = "auto"):
        self.env = make_code_env(limits, isolation=isolation)
        self.sb: CodeSandbox = self.env.sandbox
        self.env.reset(Task("attack", "attack", "0"), 0)

    def py(self, code: str, timeout_s: float | None = None) -> str:
        """One `python` tool call; the observation text. Raises Hung if it hangs."""
        call = {"name": "python", "arguments": {"code": code}}
        action = parse_action(f"<tool_call>{json.dumps(call)}</tool_call>", self.env.tools)
        limit = timeout_s or self.sb.limits.wall_s + GRACE_S
        result = bounded(self.env.step, limit + self.sb.limits.startup_timeout_s, action)
        text = "\n".join(m["content"] for m in result.observation)
        if "timed out after" in text:
            raise Hung(f"the python tool call was abandoned: {text[:120]!r}")
        return text

    def tool(self, code: str, timeout_s: float | None = None) -> str:
        """The `python` tool called directly (no parser: its size cap does not apply), as
        agent programs and other callers of the tool API do; the observation text."""
        limit = (timeout_s or self.sb.limits.wall_s + GRACE_S) + self.sb.limits.startup_timeout_s
        result = bounded(execute_tool, limit, self.env.tools[0], {"code": code})
        if result.error == "timeout":
            raise Hung(f"the python tool call was abandoned: {result.content[:120]!r}")
        return result.content

    def live(self) -> list[int]:
        return _processes_of_uid(self.sb.uid) if self.sb.uid is not None else []

    def close(self) -> None:
        try:
            bounded(self.env.close, 30)
        except Hung:
            if self.sb.uid is not None:
                kill_uid(self.sb.uid)
            bounded(self.env.close, 30)


def _attack(body: Callable[[_Box], str | None], limits: SandboxLimits = LIMITS,
            isolation: str = "auto") -> Callable[[], str | None]:  # fmt: skip
    def run() -> str | None:
        box = _Box(limits, isolation)
        try:
            return body(box)
        except Hung as e:
            return f"hang: {e}"
        finally:
            try:
                box.close()
            except Hung as e:
                return f"hang in close(): {e}"  # noqa: B012 - the result of the attack

    return run


def _still_works(box: _Box) -> str | None:
    obs = box.py("'still works'")
    return None if obs == "'still works'" else f"the sandbox is unusable afterwards: {obs[:160]!r}"


def _only_worker(box: _Box) -> str | None:
    live = box.live()
    return None if len(live) <= 1 else f"{len(live) - 1} processes outlived the cell"


def _cpu_of_uid(uid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _processes_of_uid(uid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _restarted(obs: str) -> bool:
    return obs.startswith("Error:") and "state (variables, imports) is lost" in obs


# -- item 3: host I/O with the worker is bounded ------------------------------------------

STOP_READING = """
import ctypes, threading, time
def grab():
    time.sleep(0.3)
    ctypes.PyDLL(None).sleep(3600)  # keeps the GIL: the worker never reads again
threading.Thread(target=grab, daemon=True).start()
'armed'
"""
BIG = "x = '" + "\x01" * (LIMITS.max_code_chars - 10) + "'"  # > 100 KB once JSON-escaped


def _recovers(box: _Box) -> str | None:
    """A few more cells: each either works or reports a restart; the last one works."""
    for _ in range(3):
        obs = box.py("'still works'")
        if obs == "'still works'":
            return None
        if not _restarted(obs):
            return f"neither an answer nor a restart: {obs[:160]!r}"
    return "the sandbox did not recover"


def _stop_reading_then_large_request(box: _Box) -> str | None:
    if box.py(STOP_READING) != "'armed'":
        return "setup failed"
    time.sleep(0.6)
    t0 = time.monotonic()
    obs = box.tool(BIG)  # the GIL thread and the reader race: answered or restarted
    if time.monotonic() - t0 > box.sb.limits.wall_s + GRACE_S:
        return f"the large request took {time.monotonic() - t0:.0f} s"
    if obs != "(no output)" and not _restarted(obs):
        return f"neither an answer nor a restart: {obs[:160]!r}"
    return _recovers(box)


# The worker's request loop itself is rebound to sleep: it never reads again, and a request
# larger than the socket's buffer cannot even be sent.
STOP_THE_LOOP = """
import os, sys, time
stuck = lambda *a, **k: time.sleep(3600)
m = sys.modules['__main__']
for name, value in list(vars(m).items()):
    if callable(value) and any(w in name for w in ('receive', 'read_exact')):
        setattr(m, name, stuck)
    if isinstance(value, type):
        for attr in list(vars(value)):
            if any(w in attr for w in ('receive', 'read_exact')):
                setattr(value, attr, stuck)
os.read = stuck
'patched'
"""


def _worker_loop_stops_reading() -> str | None:
    def body(box: _Box) -> str | None:
        if box.py(STOP_THE_LOOP) != "'patched'":
            return "setup failed"
        t0 = time.monotonic()
        obs = box.tool("x = '" + "\x01" * 99_000 + "'")  # ~600 KB once JSON-escaped
        if time.monotonic() - t0 > box.sb.limits.wall_s + GRACE_S:
            return f"the large request took {time.monotonic() - t0:.0f} s"
        if not _restarted(obs):
            return f"no restart reported: {obs[:160]!r}"
        box.py(STOP_THE_LOOP)
        bounded(box.sb.reset, 30)
        return _still_works(box)

    return _attack(
        body, SandboxLimits(wall_s=3.0, cpu_s=2.0, memory_mb=256, max_code_chars=100_000)
    )()


def _patched_reads_then_large_request(box: _Box) -> str | None:
    code = (
        "import os, socket, time\nstuck = lambda *a, **k: time.sleep(3600)\n"
        "os.read = os.readv = os.recv = stuck\nsocket.socket.recv = stuck\n'patched'"
    )
    box.py(code)
    box.tool(BIG)  # answered normally, or restarted: both fine, if bounded
    return _recovers(box)


def _slowloris_partial_frame(box: _Box) -> str | None:
    code = """
import os, stat, struct, time
fds = [int(n) for n in os.listdir('/proc/self/fd')
       if stat.S_ISSOCK(os.fstat(int(n)).st_mode) or stat.S_ISFIFO(os.fstat(int(n)).st_mode)]
for fd in fds:
    try:
        os.write(fd, struct.pack('>I', 60000))
    except OSError:
        pass
while True:
    for fd in fds:
        try:
            os.write(fd, b' ')
        except OSError:
            pass
    time.sleep(0.05)
"""
    t0 = time.monotonic()
    obs = box.py(code)
    if time.monotonic() - t0 > box.sb.limits.wall_s + GRACE_S:
        return "the dribbled reply held the host past the wall clock"
    if not obs.startswith("Error:"):
        return f"a partial forged frame was accepted: {obs[:160]!r}"
    return _still_works(box)


def _close_during_cell() -> str | None:
    box = _Box(SandboxLimits(wall_s=60.0, cpu_s=60.0, memory_mb=256))
    try:
        box.py("1")
        worker = threading.Thread(target=lambda: box.sb.run("import time; time.sleep(50)"),
                                  daemon=True)  # fmt: skip
        worker.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        bounded(box.env.close, 30)
        if time.monotonic() - t0 > 15:
            return f"close() waited {time.monotonic() - t0:.0f} s for the running cell"
        worker.join(15)
        if worker.is_alive():
            return "the cell's thread is still blocked after close()"
        return f"processes left after close(): {box.live()}" if box.live() else None
    except Hung as e:
        return f"hang: {e}"
    finally:
        box.close()


def _reset_while_stuck(box: _Box) -> str | None:
    for stuck in (STOP_READING, STOP_THE_LOOP):
        box.py(stuck)
        time.sleep(0.6)
        bounded(box.sb.reset, 30)
        if problem := _still_works(box):
            return problem
    return None


# -- item 4: limits are enforced from outside ---------------------------------------------


def _threads_burn_between_cells(box: _Box) -> str | None:
    code = (
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "for _ in range(3):\n    threading.Thread(target=spin, daemon=True).start()\n'go'"
    )
    box.py(code)
    before = _cpu_of_uid(box.sb.uid) if box.sb.uid is not None else 0.0
    time.sleep(2.0)
    used = (_cpu_of_uid(box.sb.uid) if box.sb.uid is not None else 2.0) - before
    if used > 0.3:
        return f"threads left by a cell used {used:.1f} s of CPU between cells"
    return _still_works(box)


def _cpu_limit_disabled_by_the_cell() -> str | None:
    def body(box: _Box) -> str | None:
        code = """
import resource, signal, threading
signal.signal(signal.SIGXCPU, signal.SIG_IGN)
resource.setrlimit = lambda *a: None
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
spin()
"""
        t0 = time.monotonic()
        obs = box.py(code, 60)
        took = time.monotonic() - t0
        if took > 20:
            return f"a cell that turned off its CPU limit ran {took:.0f} s (cpu_s=1)"
        if "CPU" not in obs:
            return f"the observation does not name the CPU limit: {obs[:160]!r}"
        return _still_works(box)

    return _attack(body, SandboxLimits(wall_s=30.0, cpu_s=1.0, memory_mb=256))()


def _daemons_with_patched_cleanup(box: _Box) -> str | None:
    code = """
import os, signal, subprocess
os.kill = os.killpg = lambda *a, **k: None
os.waitpid = lambda *a, **k: (0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(['sleep', '300'], start_new_session=True)
'spawned'
"""
    box.py(code)
    return _only_worker(box) or _still_works(box)


def _setsid_double_fork(box: _Box) -> str | None:
    code = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.setpgid(0, 0)
        time.sleep(300)
    os._exit(0)
time.sleep(0.2)
'forked'
"""
    box.py(code)
    problem = _only_worker(box)
    if problem:
        return problem
    box.sb.close()
    return f"processes outlived close(): {box.live()}" if box.live() else None


def _fork_bomb(box: _Box) -> str | None:
    host_before = len(os.listdir("/proc"))
    box.py("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    problem = _only_worker(box)
    if problem:
        return problem
    if len(os.listdir("/proc")) > host_before + 10:
        return "the host's process table grew"
    return _still_works(box)


def _thread_bomb(box: _Box) -> str | None:
    code = """
import threading, time
n = 0
try:
    for _ in range(10_000):
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        n += 1
except RuntimeError:
    pass
n
"""
    obs = box.py(code)
    try:
        started = int(obs.strip().splitlines()[-1])
    except ValueError:
        started = 0
    if started >= box.sb.limits.max_processes:
        return f"{started} threads started with max_processes={box.sb.limits.max_processes}"
    return _still_works(box)


def _processes_exceed_cpu_share(box: _Box) -> str | None:
    box.py("1")
    if "cpu_cores" not in box.sb.protections.get("cgroup", {}):
        return "no CPU cap (cpu cgroup) in force"
    code = """
import os, time
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
t = os.times()
print(round(t.children_user + t.children_system, 2))
"""
    cpu = float(box.py(code).strip().splitlines()[-1])
    cap = box.sb.limits.cpu_cores * 2.0 + 0.6
    return f"3 processes used {cpu} s of CPU in 2 s (cap {cap})" if cpu > cap else None


def _sigstop_itself(box: _Box) -> str | None:
    box.py("import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n'resumed'")
    return _still_works(box)


# -- item 5: the workspace is bounded ----------------------------------------------------


def _disk_usage(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _disk_fill(box: _Box) -> str | None:
    code = """
written = 0
try:
    for i in range(20):
        with open(f'f{i}', 'wb') as f:
            for _ in range(16):
                f.write(b'x' * (1 << 20))
                written += 1
except OSError as e:
    print('stopped', e.errno)
print(written)
"""
    box.py(code, 60)
    used, quota = _disk_usage(box.sb.workdir) >> 20, getattr(box.sb.limits, "workspace_mb", 128)
    if used > quota + 1:
        return f"{used} MiB written to the workspace (quota {quota} MiB)"
    bounded(box.sb.reset, 30)
    return None if not os.listdir(box.sb.workdir) else "reset() left files"


def _inode_fill(box: _Box) -> str | None:
    code = """
n = 0
try:
    for i in range(40_000):
        open(f'n{i}', 'w').close()
        n += 1
except OSError as e:
    print('stopped', e.errno)
n
"""
    box.py(code, 60)
    files = len(os.listdir(box.sb.workdir))
    limit = getattr(box.sb.limits, "workspace_files", 10_000)
    return f"{files} files in the workspace (limit {limit})" if files >= limit else None


def _tmp_fill(box: _Box) -> str | None:
    code = """
import os
report = []
for what in ('bytes', 'files'):
    n = 0
    try:
        for i in range(40_000):
            with open(f'/tmp/{what}{i}', 'wb') as f:
                if what == 'bytes':
                    f.write(b'x' * (8 << 20))
            n += 1
    except OSError as e:
        report.append((what, e.errno, n))
print(report)
"""
    obs = box.py(code, 60)
    if obs.count(", 28,") != 2:
        return f"/tmp was not bounded in bytes and files: {obs[:200]!r}"
    return _still_works(box)


def _deep_tree_then_reset(box: _Box) -> str | None:
    code = """
import os
fd = os.open('.', os.O_RDONLY)
n = 0
try:
    for _ in range(5000):
        os.mkdir('d')
        os.chdir('d')
        n += 1
except OSError:
    pass
os.fchdir(fd)
n
"""
    box.py(code, 60)
    bounded(box.sb.reset, 60)
    if os.listdir(box.sb.workdir):
        return "reset() did not empty a deep directory tree"
    return _still_works(box)


# -- item 6: forged replies --------------------------------------------------------------

FORGE = """
import json, os, stat, struct
payload = {payload}
frame = struct.pack('>I', len(payload)) + payload
for name in os.listdir('/proc/self/fd'):
    try:
        mode = os.fstat(int(name)).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.write(int(name), frame)
    except OSError:
        pass
print('cell output')
"""


def _forge(payload: str) -> Callable[[_Box], str | None]:
    def body(box: _Box) -> str | None:
        box.py("1")
        first = box.py(FORGE.format(payload=payload))
        first.encode("utf-8")  # an unencodable observation would crash the tokenizer
        if "FORGED" in first:
            return f"a forged reply was believed: {first[:160]!r}"
        second = box.py("'second'")
        if second != "'second'" and not ("control channel" in second and _restarted(second)):
            return f"the host is desynchronised: the next cell returned {second[:160]!r}"
        third = box.py("'third'")
        return None if third == "'third'" else f"desynchronised: {third[:160]!r}"

    return body


def _forge_with_sequence_number(box: _Box) -> str | None:
    box.py("1")
    code = """
import gc, json, os, stat, struct, time
seq = next((o.seq for o in gc.get_objects()
            if type(o).__name__ == 'Worker' and isinstance(getattr(o, 'seq', None), int)), 0)
body = json.dumps({'seq': seq, 'output': 'FORGED\\n', 'output_bytes': 7, 'error': None})
for name in os.listdir('/proc/self/fd'):
    try:
        mode = os.fstat(int(name)).st_mode
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            os.write(int(name), struct.pack('>I', len(body)) + body.encode())
    except OSError:
        pass
time.sleep(0.5)
"""
    box.py(code)  # may be believed: no worse than printing FORGED
    second = box.py("'second'")
    if second != "'second'" and not ("control channel" in second and _restarted(second)):
        return f"desynchronised: the next cell returned {second[:160]!r}"
    third = box.py("'third'")
    return None if third == "'third'" else f"desynchronised: {third[:160]!r}"


def _replace_protocol_fds(box: _Box) -> str | None:
    box.py("x = 1")
    code = """
import os, stat
null = os.open('/dev/null', os.O_RDWR)
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        mode = os.fstat(fd).st_mode
        if fd != null and (stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)):
            os.dup2(null, fd)
    except OSError:
        pass
"""
    obs = box.py(code)
    if not _restarted(obs):
        return f"no restart after the control channel was replaced: {obs[:160]!r}"
    return _still_works(box)


def _close_all_fds(box: _Box) -> str | None:
    obs = box.py("import os\nos.closerange(0, 4096)\n'closed'")
    if obs == "'closed'":
        return "the worker answered without a control channel"
    return _still_works(box)


def _lone_surrogates(box: _Box) -> str | None:
    for code in ("raise ValueError('\\ud800 bad')", "print('\\udcff')", "'\\ud800'"):
        obs = box.py(code)
        try:
            obs.encode("utf-8")
        except UnicodeEncodeError:
            return f"an unencodable observation for {code!r}"
    return _still_works(box)


def _huge_exception_message(box: _Box) -> str | None:
    obs = box.py("raise ValueError('x' * 50_000_000)")
    if "ValueError" not in obs or len(obs) > 3 * box.sb.limits.max_output_chars + 2000:
        return f"unbounded or lost traceback ({len(obs)} chars)"
    return _still_works(box)


# -- item 7: privacy in the rlimits mode (and /proc in the default mode) ------------------


def _rlimits_read_other_sandbox() -> str | None:
    a, b = _Box(isolation="rlimits"), _Box(isolation="rlimits")
    try:
        a.py("open('secret.txt', 'w').write('TOP-SECRET-A')")
        if a.sb.uid is None:
            return "no uid of its own (not root): sandboxes share a uid"
        if a.sb.workdir.stat().st_mode & 0o077:
            return f"workspace mode {oct(a.sb.workdir.stat().st_mode)}"
        code = f"""
import os
for path in [{str(a.sb.workdir / "secret.txt")!r}]:
    try:
        print(open(path).read())
    except OSError as e:
        print(type(e).__name__)
try:
    print(os.listdir({str(a.sb.workdir)!r}))
except OSError as e:
    print(type(e).__name__)
"""
        obs = b.py(code)
        leaked = "TOP-SECRET-A" in obs or "[" in obs
        return f"read another sandbox: {obs[:160]!r}" if leaked else None
    except Hung as e:
        return f"hang: {e}"
    finally:
        a.close()
        b.close()


def _proc_snoop(isolation: str) -> Callable[[_Box], str | None]:
    def body(box: _Box) -> str | None:
        code = f"""
import os
seen = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for what in ('cmdline', 'environ'):
            try:
                seen.append(open(f'/proc/{{pid}}/{{what}}', 'rb').read())
            except OSError:
                pass
pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
print(any(b'attack' in c or b'pytest' in c for c in seen), {os.getpid()} in pids)
"""
        obs = box.py(code)
        return None if obs == "False False" else f"host processes visible: {obs[:120]!r}"

    return body


# -- item 8: keyrings and io_uring -------------------------------------------------------

SYSCALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {'x86_64': {'add_key': 248, 'io_uring_setup': 425},
      'aarch64': {'add_key': 217, 'io_uring_setup': 425}}[os.uname().machine]
r = libc.syscall(nr['add_key'], b'user', b'agentic_rl_attack_key', b'payload', 7, ctypes.c_int(-4))
print('add_key', r, ctypes.get_errno())
r = libc.syscall(nr['io_uring_setup'], 8, ctypes.create_string_buffer(120))
print('io_uring', r, ctypes.get_errno())
"""
FIND_KEY = """
import ctypes, os, sys
uid = int(sys.argv[1])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
libc = ctypes.CDLL(None)
libc.syscall.restype = ctypes.c_long
nr = {'x86_64': 250, 'aarch64': 219}[os.uname().machine]
print('found' if libc.syscall(nr, 10, ctypes.c_int(-4), b'user', b'agentic_rl_attack_key', 0) >= 0
      else 'absent')
"""


def _keyring_survives_close(box: _Box) -> str | None:
    box.py(SYSCALLS)
    uid = box.sb.uid
    bounded(box.sb.close, 30)
    if uid is None:
        return "no uid of its own: keys of the user cannot be told apart"
    check = subprocess.run([sys.executable, "-I", "-S", "-c", FIND_KEY, str(uid)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    return "a key outlived the sandbox" if check.stdout.strip() == "found" else None


def _io_uring(box: _Box) -> str | None:
    obs = box.py(SYSCALLS)
    return None if "io_uring -1" in obs else f"io_uring_setup succeeded: {obs[:120]!r}"


def _ptrace_worker(box: _Box) -> str | None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getpid()
pid = os.fork()
if pid == 0:
    r = libc.ptrace(16, parent, 0, 0)  # PTRACE_ATTACH
    os._exit(0 if r == 0 else 1)
print('attached' if os.waitpid(pid, 0)[1] == 0 else 'refused')
"""
    obs = box.py(code)
    return None if "refused" in obs else f"ptrace attached: {obs[:120]!r}"


def _user_namespace(box: _Box) -> str | None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), ctypes.get_errno())
"""
    obs = box.py(code)
    return None if obs.startswith("-1") else f"a user namespace was created: {obs!r}"


# -- item 9: a killed host -------------------------------------------------------------

KILLED_HOST = """
import json, os, signal, sys, threading, time
sys.path.insert(0, {repo!r})
from agentic_rl.envs.tools.sandbox.sandbox import CodeSandbox, SandboxLimits
sb = CodeSandbox(SandboxLimits(wall_s=600.0, cpu_s=600.0, memory_mb=256))
sb.run("open('left.txt', 'w').write('x')")
threading.Thread(target=sb.run, args=("import time; time.sleep(600)",), daemon=True).start()
time.sleep(1.0)
cgroups = [str(d) for d in sb._cgroup.dirs] if sb._cgroup is not None else []
print(json.dumps({{"base": str(sb._base), "uid": sb.uid, "cgroups": cgroups}}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_host_leaves_nothing() -> str | None:
    proc = subprocess.run([sys.executable, "-c", KILLED_HOST.format(repo=str(REPO))],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    try:
        left = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"setup failed: {proc.stderr[-300:]}"
    deadline = time.monotonic() + 10
    while left["uid"] is not None and _processes_of_uid(left["uid"]):
        if time.monotonic() > deadline:
            return "the killed host's sandbox kept running"
        time.sleep(0.1)
    box = _Box()  # start-up removes what dead hosts left
    box.close()
    leftovers = [p for p in [left["base"], *left["cgroups"]] if Path(p).exists()]
    return f"left behind: {leftovers}" if leftovers else None


# -- item 10: the real cause of a death --------------------------------------------------


def _oom_named() -> str | None:
    def body(box: _Box) -> str | None:
        box.py("1")
        if "memory" not in box.sb.protections.get("cgroup", {}):
            return "no memory cgroup: the total memory is not bounded"
        code = """
import os
x = bytearray(200 << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
pid = os.fork()
if pid == 0:
    for i in range(0, len(x), 4096):
        x[i] = 2
    os._exit(0)
print(os.waitpid(pid, 0))
"""
        obs = box.py(code)
        if _restarted(obs) and ("memory" not in obs or "SIGPIPE" in obs or "CPU" in obs):
            return f"an OOM kill reported as {obs[:160]!r}"
        return _still_works(box)

    return _attack(body, SandboxLimits(wall_s=20.0, cpu_s=20.0, memory_mb=256))()


def _total_cpu_named() -> str | None:
    def body(box: _Box) -> str | None:
        code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
        obs = box.py(code, 60)
        return None if "total CPU-time limit" in obs else f"reported as {obs[:160]!r}"

    return _attack(body, SandboxLimits(wall_s=30.0, cpu_s=20.0, cpu_total_s=2, memory_mb=256))()


def _segfault_named(box: _Box) -> str | None:
    obs = box.py("import ctypes\nctypes.string_at(0)")
    if "SIGSEGV" not in obs or "limit" in obs.split(";")[0]:
        return f"a crash reported as {obs[:160]!r}"
    return _still_works(box)


def _deep_recursion(box: _Box) -> str | None:
    box.py("import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)")
    return _still_works(box)


# -- escapes from the file system, the network, the uid ----------------------------------


def _network_to_host(box: _Box) -> str | None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        obs = box.py(f"""
import socket
for host in ['127.0.0.1', '8.8.8.8', '::1']:
    try:
        socket.create_connection((host, {port}), timeout=1)
        print('CONNECTED', host)
    except OSError as e:
        print(host, type(e).__name__)
""")
        try:
            listener.accept()
            return "the host's listener got a connection"
        except BlockingIOError:
            pass
        return f"connected: {obs[:160]!r}" if "CONNECTED" in obs else None
    finally:
        listener.close()


def _unix_sockets_to_host(box: _Box) -> str | None:
    tmp = Path(tempfile.mkdtemp(prefix="attack-unix-"))
    os.chmod(tmp, 0o755)
    path = tmp / "host.sock"
    named, abstract = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        named.bind(str(path))
        os.chmod(path, 0o777)
        abstract.bind(f"\0agentic_rl_attack_{os.getpid()}")
        for s in (named, abstract):
            s.listen(1)
            s.setblocking(False)
        obs = box.py(f"""
import socket
for addr in [{str(path)!r}, '\\0agentic_rl_attack_{os.getpid()}']:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(addr)
        print('CONNECTED', repr(addr))
    except OSError as e:
        print(type(e).__name__)
""")
        for s in (named, abstract):
            try:
                s.accept()
                return "a host unix socket got a connection"
            except BlockingIOError:
                pass
        return f"connected: {obs[:160]!r}" if "CONNECTED" in obs else None
    finally:
        named.close()
        abstract.close()
        path.unlink(missing_ok=True)
        tmp.rmdir()


def _mount_attempts(box: _Box) -> str | None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs('m', exist_ok=True)
results = [libc.mount(b'tmpfs', b'm', b'tmpfs', 0, None),
           libc.mount(b'proc', b'm', b'proc', 0, None),
           libc.mount(b'/', b'm', None, 4096, None), libc.umount2(b'/proc', 2),
           libc.unshare(0x00020000)]
print(results)
"""
    obs = box.py(code)
    return None if obs == "[-1, -1, -1, -1, -1]" else f"a mount call succeeded: {obs!r}"


def _chroot_escape(box: _Box) -> str | None:
    code = """
import os
try:
    os.mkdir('jail')
    os.chroot('jail')
    for _ in range(50):
        os.chdir('..')
    os.chroot('.')
    print('ESCAPED', os.listdir('/'))
except OSError as e:
    print(type(e).__name__)
"""
    obs = box.py(code)
    return f"chroot worked: {obs[:160]!r}" if "ESCAPED" in obs else None


def _become_root(box: _Box) -> str | None:
    code = """
import os, subprocess
out = []
for fn in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setresuid(0, 0, 0),
           lambda: os.setgroups([0])):
    try:
        fn()
        out.append('OK')
    except OSError as e:
        out.append(type(e).__name__)
for cmd in (['su', '-c', 'id -u'], ['sudo', '-n', 'id', '-u'], ['newgrp', 'root']):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        out.append(r.stdout.strip() or 'fail')
    except (OSError, subprocess.SubprocessError) as e:
        out.append(type(e).__name__)
print(os.getuid(), os.geteuid(), out)
"""
    obs = box.py(code)
    uids = obs.split()[:2]
    if box.sb.uid is not None and uids != [str(box.sb.uid)] * 2:
        return f"the uid changed: {obs[:160]!r}"
    return f"became root: {obs[:160]!r}" if "'OK'" in obs or "'0'" in obs else None


def _write_outside_workspace(box: _Box) -> str | None:
    marker = f"agentic_rl_attack_{os.getpid()}"
    targets = [f"/usr/{marker}", f"/tmp/../usr/{marker}", f"/{marker}", f"/etc/{marker}",
               f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"{Path.home()}/{marker}",
               str(REPO / marker)]  # fmt: skip
    code = f"""
wrote = []
for p in {targets!r}:
    try:
        open(p, 'w').write('x')
        wrote.append(p)
    except OSError:
        pass
print(wrote)
"""
    box.py(code)
    found = [t for t in targets if os.path.exists(t)]
    for t in found:
        os.unlink(t)
    return f"files appeared on the host: {found}" if found else None


def _symlink_out_of_workspace(box: _Box) -> str | None:
    secret = Path(tempfile.mkdtemp(prefix="attack-secret-")) / "secret.txt"
    secret.write_text("HOST-SECRET")
    try:
        obs = box.py(f"""
import os
os.symlink({str(secret)!r}, 'link')
os.symlink('/etc/shadow', 'shadow')
for p in ('link', 'shadow'):
    try:
        print(open(p).read()[:20])
    except OSError as e:
        print(type(e).__name__)
""")
        if "HOST-SECRET" in obs or "root:" in obs:
            return f"read a host file through a symlink: {obs[:120]!r}"
        for name in ("link", "shadow"):
            try:
                text = (box.sb.workdir / name).read_text()
                return f"the host followed the sandbox's symlink {name!r}: {text[:30]!r}"
            except OSError:
                pass
        return None
    finally:
        secret.unlink()
        secret.parent.rmdir()


def _environment_secrets(box: _Box) -> str | None:
    os.environ["AGENTIC_RL_ATTACK_SECRET"] = "hunter2"
    box.sb.reset()
    obs = box.py("import os\nsorted(os.environ.items())")
    return "the host's environment leaked" if "hunter2" in obs else None


def _signal_host(box: _Box) -> str | None:
    me = os.getpid()
    code = f"""
import os, signal
for pid in [os.getppid(), {me}, -1, 1] + list(range(2, 2000)):
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
'sent'
"""
    box.py(code)
    state = Path(f"/proc/{me}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "the host was stopped" if state == "T" else _still_works(box)


# -- resource exhaustion -----------------------------------------------------------------


def _memory_bomb(box: _Box) -> str | None:
    box.py("blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))")
    return _still_works(box)


def _memfd_bomb(box: _Box) -> str | None:
    code = """
import os
fds = []
try:
    while True:
        fd = os.memfd_create('x')
        fds.append(fd)
        for _ in range(16):
            os.write(fd, b'x' * (1 << 20))
except OSError as e:
    print('stopped', e.errno, len(fds))
"""
    box.py(code)
    return _still_works(box)


def _stdout_flood(box: _Box) -> str | None:
    t0 = time.monotonic()
    obs = box.py("import sys\nfor _ in range(200):\n    sys.stdout.write('y' * (1 << 20))")
    if len(obs) > 2 * box.sb.limits.max_output_chars + 2000:
        return f"an observation of {len(obs)} characters"
    if time.monotonic() - t0 > box.sb.limits.wall_s + GRACE_S:
        return "the flood held the host"
    return _still_works(box)


def _fd_exhaustion(box: _Box) -> str | None:
    box.py(
        "import os\nkeep = []\ntry:\n    while True:\n"
        "        keep.append(os.open('/dev/null', 0))\nexcept OSError:\n    pass\nlen(keep)"
    )
    return _still_works(box)


def _huge_code(box: _Box) -> str | None:
    limit = box.sb.limits.max_code_chars
    obs = box.tool("#" * (limit + 1))
    if "too long" not in obs:
        return f"over-long code was run: {obs[:120]!r}"
    obs = box.tool("x = '" + "\x01" * (limit - 20) + "'\nlen(x)")
    return None if obs == str(limit - 20) else f"max-size code failed: {obs[:120]!r}"


def _forge_attack(name: str, payload: str) -> Attack:
    return Attack(name, "6", _attack(_forge(payload)),
                  description=f"the cell writes a forged frame: {payload[:60]}")  # fmt: skip


ATTACKS: list[Attack] = [
    Attack(
        "stop-reading-then-large-request",
        "3",
        _attack(_stop_reading_then_large_request),
        description="a thread takes the GIL for good after the cell answers; then a "
        "request larger than the socket buffer",
    ),
    Attack(
        "worker-loop-stops-reading",
        "3",
        _worker_loop_stops_reading,
        description="the cell rebinds the worker's request loop to sleep; then a 600 KB request",
    ),
    Attack(
        "patched-reads-then-large-request",
        "3",
        _attack(_patched_reads_then_large_request),
        description="the cell rebinds os.read/socket.recv to sleep; then a large request",
    ),
    Attack(
        "slowloris-partial-frame",
        "3",
        _attack(_slowloris_partial_frame),
        description="a forged length header, then one byte every 50 ms",
    ),
    Attack(
        "close-during-cell",
        "3",
        _close_during_cell,
        description="close() from another thread while a 50 s cell runs",
    ),
    Attack(
        "reset-while-stuck",
        "3",
        _attack(_reset_while_stuck),
        description="reset() while the worker cannot read",
    ),
    Attack(
        "threads-burn-between-cells",
        "4",
        _attack(_threads_burn_between_cells),
        description="spinning threads left running after the cell",
    ),
    Attack(
        "cpu-limit-disabled-by-cell",
        "4",
        _cpu_limit_disabled_by_the_cell,
        timeout_s=90,
        description="SIG_IGN for SIGXCPU, setrlimit patched, two spinning threads",
    ),
    Attack(
        "daemons-with-patched-cleanup",
        "4",
        _attack(_daemons_with_patched_cleanup),
        description="os.kill/os.waitpid patched, then a setsid daemon",
    ),
    Attack(
        "setsid-double-fork",
        "4",
        _attack(_setsid_double_fork),
        description="a double-forked, setsid, setpgid daemon",
    ),
    Attack("fork-bomb", "new", _attack(_fork_bomb), description="fork until it fails"),
    Attack("thread-bomb", "new", _attack(_thread_bomb), description="threads until it fails"),
    Attack(
        "processes-exceed-cpu-share",
        "4",
        _attack(_processes_exceed_cpu_share),
        description="three CPU-bound children against a one-core cap",
    ),
    Attack(
        "sigstop-itself",
        "new",
        _attack(_sigstop_itself),
        description="the worker stops itself mid-cell",
    ),
    Attack(
        "disk-fill",
        "5",
        _attack(_disk_fill),
        timeout_s=90,
        description="320 MiB written to the workspace",
    ),
    Attack(
        "inode-fill",
        "5",
        _attack(_inode_fill),
        timeout_s=90,
        description="40,000 empty files in the workspace",
    ),
    Attack(
        "tmp-fill",
        "5",
        _attack(_tmp_fill),
        timeout_s=90,
        description="/tmp filled with bytes, then with files",
    ),
    Attack(
        "deep-tree-then-reset",
        "new",
        _attack(_deep_tree_then_reset),
        timeout_s=120,
        description="5,000 nested directories, then reset()",
    ),
    _forge_attack(
        "forge-infinite-output-bytes",
        """b'{"output": "FORGED", "output_bytes": 1e999, "error": null}'""",
    ),
    _forge_attack("forge-nan", """b'{"output": "FORGED", "output_bytes": NaN, "error": null}'"""),
    _forge_attack(
        "forge-wrong-types", """b'{"output": ["FORGED"], "output_bytes": -5, "error": {"a": 1}}'"""
    ),
    _forge_attack(
        "forge-lone-surrogate",
        """b'{"output": "FORGED\\\\ud800", "output_bytes": 6, "error": null}'""",
    ),
    _forge_attack("forge-deep-nesting", "b'[' * 100_000"),
    _forge_attack("forge-huge-frame", "b'[' * (64 << 20)"),
    _forge_attack("forge-garbage", "b'\\xff\\xfe not json at all'"),
    _forge_attack(
        "forge-well-formed-old-protocol",
        """b'{"output": "FORGED\\\\n", "output_bytes": 7, "error": null}'""",
    ),
    Attack(
        "forge-with-sequence-number",
        "6",
        _attack(_forge_with_sequence_number),
        description="a reply with the right sequence number read from the worker's memory",
    ),
    Attack(
        "replace-protocol-fds",
        "new",
        _attack(_replace_protocol_fds),
        description="dup2 /dev/null over the control socket",
    ),
    Attack("close-all-fds", "new", _attack(_close_all_fds), description="os.closerange(0, 4096)"),
    Attack(
        "lone-surrogates",
        "new",
        _attack(_lone_surrogates),
        description="lone surrogates in output, values and tracebacks",
    ),
    Attack(
        "huge-exception-message",
        "new",
        _attack(_huge_exception_message),
        description="a 50 MB exception message",
    ),
    Attack(
        "rlimits-read-other-sandbox",
        "7",
        _rlimits_read_other_sandbox,
        description="two rlimits sandboxes: one reads the other's workspace",
    ),
    Attack(
        "rlimits-proc-snoop",
        "7",
        _attack(_proc_snoop("rlimits"), isolation="rlimits"),
        description="host command lines and environments through /proc (rlimits mode)",
    ),
    Attack(
        "proc-snoop",
        "new",
        _attack(_proc_snoop("auto")),
        description="host command lines and environments through /proc",
    ),
    Attack(
        "keyring-survives-close",
        "8",
        _attack(_keyring_survives_close),
        description="add_key to the user keyring, then close()",
    ),
    Attack("io-uring", "8", _attack(_io_uring), description="io_uring_setup"),
    Attack(
        "ptrace-worker",
        "new",
        _attack(_ptrace_worker),
        description="a child ptrace-attaches to the worker",
    ),
    Attack("user-namespace", "new", _attack(_user_namespace), description="unshare(CLONE_NEWUSER)"),
    Attack(
        "killed-host-leaves-nothing",
        "9",
        _killed_host_leaves_nothing,
        timeout_s=120,
        description="the host is SIGKILLed mid-cell; a new host starts",
    ),
    Attack("oom-named", "10", _oom_named, description="a cgroup OOM kill must be named as such"),
    Attack(
        "total-cpu-named",
        "10",
        _total_cpu_named,
        timeout_s=90,
        description="the hard RLIMIT_CPU must be named as such",
    ),
    Attack(
        "segfault-named",
        "10",
        _attack(_segfault_named),
        description="a crash must not be blamed on a limit",
    ),
    Attack(
        "deep-recursion",
        "new",
        _attack(_deep_recursion),
        description="recursion limit 10**7, infinite recursion (C stack overflow)",
    ),
    Attack(
        "network-to-host",
        "new",
        _attack(_network_to_host),
        description="TCP to a host listener, to the internet, to ::1",
    ),
    Attack(
        "unix-sockets-to-host",
        "new",
        _attack(_unix_sockets_to_host),
        description="a host unix socket by path and an abstract one",
    ),
    Attack(
        "mount-attempts",
        "new",
        _attack(_mount_attempts),
        description="mount tmpfs/proc/bind, umount /proc, unshare(CLONE_NEWNS)",
    ),
    Attack(
        "chroot-escape", "new", _attack(_chroot_escape), description="the classic chroot escape"
    ),
    Attack(
        "become-root", "new", _attack(_become_root), description="setuid(0) and setuid binaries"
    ),
    Attack(
        "write-outside-workspace",
        "new",
        _attack(_write_outside_workspace),
        description="writes to /usr, /, /etc, /var/tmp, /dev/shm, $HOME, the repository",
    ),
    Attack(
        "symlink-out-of-workspace",
        "new",
        _attack(_symlink_out_of_workspace),
        description="symlinks to host files, read by the cell and by the host",
    ),
    Attack(
        "environment-secrets",
        "new",
        _attack(_environment_secrets),
        description="a secret in the host's environment",
    ),
    Attack(
        "signal-host",
        "new",
        _attack(_signal_host),
        description="SIGKILL/SIGSTOP to the parent, the host, -1 and pids 1..2000",
    ),
    Attack("memory-bomb", "new", _attack(_memory_bomb), description="32 MiB blocks forever"),
    Attack("memfd-bomb", "new", _attack(_memfd_bomb), description="16 MiB memfds until it fails"),
    Attack("stdout-flood", "new", _attack(_stdout_flood), description="200 MiB to stdout"),
    Attack("fd-exhaustion", "new", _attack(_fd_exhaustion), description="open fds until EMFILE"),
    Attack(
        "huge-code",
        "new",
        _attack(_huge_code),
        description="code over the limit, and code at the limit that escapes to 6x in JSON",
    ),
]
