"""The code sandbox against a hostile policy: one test per attack class of the sandbox issue.

Every host call that an attack might hang is made through `bounded`, so a regression fails
the test (naming the hang) instead of hanging the suite; the fixture then kills whatever the
sandbox left behind, from the host. Each test checks the effect on the host side (CPU time
used, files on disk, processes, keys), not only the observation the policy gets back.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentic_rl.envs.tools.sandbox.sandbox import CodeSandbox, SandboxLimits, _processes_of_uid
from agentic_rl.envs.tools.sandbox.system import kill_uid
from scripts.attacks import Hung, bounded

is_root = os.name == "posix" and os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="needs root (a uid per sandbox, cgroups)")
FAST = SandboxLimits(wall_s=5.0, cpu_s=3.0, memory_mb=512, max_processes=16)
REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def make():
    """make(limits, **kw) -> a sandbox; teardown kills its processes from the host first, so a
    hung host call (old code) is unblocked, then closes it with a bound."""
    made = []

    def factory(limits=FAST, **kw):
        sb = CodeSandbox(limits, **kw)
        made.append(sb)
        return sb

    yield factory
    for sb in made:
        try:
            bounded(sb.close, 30)
        except Hung:
            if sb.uid is not None:
                kill_uid(sb.uid)
            bounded(sb.close, 30)


def cpu_seconds_of_uid(uid: int) -> float:
    """utime + stime of every live process of `uid` (all threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _processes_of_uid(uid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(sb: CodeSandbox, code: str, timeout_s: float | None = None):
    return bounded(sb.run, timeout_s or sb.limits.wall_s + 30, code)


# -- item 3: every host-side I/O with the worker is bounded ------------------------------------

# A thread that takes the GIL and never gives it back (ctypes.PyDLL keeps the GIL across the
# call) once the cell has answered: the worker can no longer read its requests.
STOP_READING = """
import ctypes, threading, time
def grab():
    time.sleep(0.3)
    ctypes.PyDLL(None).sleep(3600)
threading.Thread(target=grab, daemon=True).start()
'armed'
"""


# The cell rebinds the worker's request loop (whatever it is called) to sleep: the worker
# never reads its requests again.
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


def test_a_worker_that_stops_reading_cannot_hang_run_reset_or_close(make):
    sb = make(SandboxLimits(wall_s=3.0, cpu_s=3.0, memory_mb=512, max_code_chars=100_000))
    assert run(sb, STOP_THE_LOOP).output == "'patched'\n"
    big = "x = '" + "\x01" * 99_000 + "'"  # ~600 KB once JSON-escaped: more than any buffer
    start = time.monotonic()
    r = run(sb, big, 40)
    assert time.monotonic() - start < sb.limits.wall_s + 15
    assert not r.ok and r.restarted and "state" in r.error and "wall-time limit" in r.error, r
    assert run(sb, "'alive'").output == "'alive'\n"
    assert run(sb, STOP_THE_LOOP).output == "'patched'\n"
    bounded(sb.reset, 30)
    assert run(sb, STOP_THE_LOOP).output == "'patched'\n"
    assert not run(sb, big, 40).ok
    assert run(sb, STOP_THE_LOOP).output == "'patched'\n"
    bounded(sb.close, 30)
    assert sb.uid is None or _processes_of_uid(sb.uid) == []


@needs_root
def test_a_thread_holding_the_gil_after_the_cell_cannot_hang_the_host(make):
    sb = make(SandboxLimits(wall_s=3.0, cpu_s=3.0, memory_mb=512))
    assert run(sb, STOP_READING).output == "'armed'\n"
    time.sleep(0.5)
    big = "x = '" + "\x01" * (sb.limits.max_code_chars - 10) + "'"
    for _ in range(3):  # answered or restarted, depending on who gets the GIL first
        r = run(sb, big, 40)
        assert r.ok or (r.restarted and "state" in r.error), r
    assert run(sb, "'alive'").output == "'alive'\n" or run(sb, "'alive'").output == "'alive'\n"
    assert run(sb, STOP_READING).output == "'armed'\n"
    time.sleep(0.5)
    bounded(sb.close, 30)
    assert _processes_of_uid(sb.uid) == []


@needs_root
def test_close_from_another_thread_interrupts_a_running_cell(make):
    sb = make(SandboxLimits(wall_s=60.0, cpu_s=60.0, memory_mb=512))
    sb.run("1")
    box = {}
    worker = threading.Thread(target=lambda: box.update(r=sb.run("import time; time.sleep(50)")))
    worker.start()
    time.sleep(1.0)
    start = time.monotonic()
    bounded(sb.close, 30)
    assert time.monotonic() - start < 15
    worker.join(15)
    assert not worker.is_alive() and not box["r"].ok
    assert _processes_of_uid(sb.uid) == []


# -- item 4: limits are enforced from outside the sandboxed process ---------------------------


@needs_root
def test_threads_left_by_a_cell_burn_no_cpu_between_cells(make):
    sb = make()
    code = (
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "for _ in range(2):\n    threading.Thread(target=spin, daemon=True).start()\n'spinning'"
    )
    assert run(sb, code).output == "'spinning'\n"
    before = cpu_seconds_of_uid(sb.uid)
    time.sleep(2.0)
    assert cpu_seconds_of_uid(sb.uid) - before < 0.3  # nothing runs between cells
    assert run(sb, "6 * 7").output == "42\n"


@needs_root
def test_children_survive_no_cell_even_when_the_cell_disables_the_cleanup(make):
    sb = make()
    code = """
import os, signal, subprocess
os.kill = lambda *a, **k: None
os.killpg = lambda *a, **k: None
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(['sleep', '300'], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(300)
    os._exit(0)
'spawned'
"""
    assert run(sb, code).output == "'spawned'\n"
    assert len(_processes_of_uid(sb.uid)) == 1  # only the worker: the daemons were killed


@needs_root
def test_the_cpu_limit_holds_when_the_cell_disables_it():
    limits = SandboxLimits(wall_s=30.0, cpu_s=1.0, memory_mb=512)
    with CodeSandbox(limits) as sb:
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
        start = time.monotonic()
        r = run(sb, code, 60)
        elapsed = time.monotonic() - start
        assert not r.ok and r.restarted and "CPU" in r.error, r
        assert elapsed < 20, elapsed  # CPU-time limit (~3 s of CPU), not the 30 s wall clock
        assert run(sb, "1 + 1").output == "2\n"


@needs_root
def test_the_sandbox_is_capped_at_its_cpu_share(make):
    sb = make()
    sb.run("1")
    assert sb.protections["cgroup"].get("cpu_cores") == sb.limits.cpu_cores
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
    cpu = float(run(sb, code).output)
    assert cpu < sb.limits.cpu_cores * 2.0 + 0.6  # 3 spinning children share one core


# -- item 5: the workspace has a total size and file-count quota ------------------------------


def disk_usage(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


@needs_root
def test_the_workspace_cannot_be_filled_with_bytes(make):
    sb = make()
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
    r = run(sb, code)
    assert "stopped 28" in r.output  # ENOSPC
    assert disk_usage(sb.workdir) <= (sb.limits.workspace_mb + 1) << 20
    bounded(sb.reset, 30)
    assert run(sb, "import os; os.listdir('.')").output == "[]\n"
    assert run(sb, "open('small', 'w').write('ok')").output == "2\n"


@needs_root
def test_the_workspace_and_tmp_cannot_be_filled_with_files(make):
    sb = make()
    code = """
import os
for where in ('.', '/tmp'):
    n = 0
    try:
        for i in range(40_000):
            open(os.path.join(where, f'n{i}'), 'w').close()
            n += 1
    except OSError as e:
        print(where, 'stopped', e.errno, n)
"""
    r = run(sb, code, 60)
    assert r.output.count("stopped 28") == 2, r
    assert len(os.listdir(sb.workdir)) < sb.limits.workspace_files
    bounded(sb.reset, 30)
    assert run(sb, "import os; len(os.listdir('.'))").output == "0\n"


# -- item 6: the worker's replies are untrusted ---------------------------------------------

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


@pytest.mark.parametrize(
    "payload",
    [  # Python expressions for the bytes the cell writes after a length header
        """b'{"output": "FORGED", "output_bytes": 1e999, "error": null}'""",
        """b'{"output": "FORGED", "output_bytes": NaN, "error": null}'""",
        """b'{"output": ["FORGED"], "output_bytes": -5, "error": {"a": 1}}'""",
        """b'{"output": "FORGED\\\\ud800", "output_bytes": 6, "error": null}'""",
        """b'[' * 100_000""",
        """b'[' * (64 << 20)""",
        """b'\\xff\\xfe not json at all'""",
        """b'{"output": "FORGED\\\\n", "output_bytes": 7, "error": null}'""",
    ],
)
def test_forged_replies_never_crash_or_desynchronise_the_host(make, payload):
    sb = make()
    sb.run("1")
    r1 = run(sb, FORGE.format(payload=payload))
    assert "FORGED" not in r1.output and "FORGED" not in (r1.error or "")
    r2 = run(sb, "'second'")
    assert r2.output == "'second'\n" or (r2.restarted and "control channel" in r2.error), r2
    assert run(sb, "'third'").output == "'third'\n"
    if not r1.ok:
        assert r1.restarted and "protocol" in r1.error


def test_a_forger_that_reads_the_sequence_number_cannot_desynchronise_the_host(make):
    """A cell can read the worker's memory, so it can forge a reply the host accepts for its
    own cell (no worse than printing); the real reply then arrives late: the host must notice
    before the next cell instead of handing it to the next cell."""
    sb = make()
    sb.run("1")
    code = """
import gc, json, os, stat, struct, time
seq = next((o.seq for o in gc.get_objects()
            if type(o).__name__ == 'Worker' and isinstance(getattr(o, 'seq', None), int)), 0)
payload = json.dumps({'seq': seq, 'output': 'FORGED\\n', 'output_bytes': 7, 'error': None}).encode()
for name in os.listdir('/proc/self/fd'):
    try:
        if stat.S_ISSOCK(os.fstat(int(name)).st_mode) or stat.S_ISFIFO(os.fstat(int(name)).st_mode):
            os.write(int(name), struct.pack('>I', len(payload)) + payload)
    except OSError:
        pass
time.sleep(0.5)
"""
    run(sb, code)
    r2 = run(sb, "'second'")
    assert r2.output == "'second'\n" or (r2.restarted and "control channel" in r2.error), r2
    assert run(sb, "'third'").output == "'third'\n"


def test_closing_or_replacing_the_protocol_fds_restarts_the_worker(make):
    sb = make()
    sb.run("x = 1")
    code = """
import os, stat
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode) or stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.dup2(os.open('/dev/null', os.O_RDWR), fd)
    except OSError:
        pass
"""
    r = run(sb, code)
    assert not r.ok and r.restarted
    assert run(sb, "'fresh'").output == "'fresh'\n"


# -- item 7: sandboxes cannot read each other or the host's command lines ---------------------


@needs_root
def test_rlimits_sandboxes_are_private_from_each_other_and_from_host_processes(make):
    a = make(FAST, isolation="rlimits")
    b = make(FAST, isolation="rlimits")
    assert a.uid != b.uid
    assert run(a, "open('secret.txt', 'w').write('TOP-SECRET-A')").output == "12\n"
    assert (a.workdir.stat().st_mode & 0o077) == 0
    code = f"""
import os
for path in [{str(a.workdir / "secret.txt")!r}, {str(a.workdir)!r}]:
    try:
        print(open(path).read() if path.endswith('.txt') else os.listdir(path))
    except OSError as e:
        print(type(e).__name__)
leaked = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            leaked.append(open(f'/proc/{{pid}}/cmdline', 'rb').read())
        except OSError:
            pass
print('host', any(b'pytest' in c or b'{os.getpid()}' in c for c in leaked))
print('worker A', any({str(a.workdir).encode()!r} in c for c in leaked))
"""
    r = run(b, code)
    # PermissionError (mode 0700, another uid), or FileNotFoundError: b's /tmp is private.
    assert "TOP-SECRET-A" not in r.output and "[" not in r.output.split("host")[0], r
    assert r.output.count("PermissionError") + r.output.count("FileNotFoundError") == 2, r
    assert "host False" in r.output and "worker A False" in r.output, r


@needs_root
def test_rlimits_sandbox_cannot_fill_the_hosts_tmp(make):
    sb = make(FAST, isolation="rlimits")
    marker = f"agentic_rl_fill_{secrets.token_hex(6)}_"
    code = f"""
import os
n = 0
try:
    for i in range(100):
        with open(f'/tmp/{marker}{{i}}', 'wb') as f:
            f.write(b'x' * (8 << 20))
        n += 1
except OSError as e:
    print('stopped', e.errno, n)
"""
    r = run(sb, code)
    assert "stopped 28" in r.output, r
    assert not [p for p in os.listdir("/tmp") if p.startswith(marker)]


# -- item 8: keyrings and io_uring ---------------------------------------------------------

SYSCALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {'x86_64': {'add_key': 248, 'io_uring_setup': 425},
      'aarch64': {'add_key': 217, 'io_uring_setup': 425}}[os.uname().machine]
r = libc.syscall(nr['add_key'], b'user', b'agentic_rl_attack_key', b'payload', 7, ctypes.c_int(-4))
print('add_key', r, ctypes.get_errno())
params = ctypes.create_string_buffer(120)
r = libc.syscall(nr['io_uring_setup'], 8, params)
print('io_uring', r, ctypes.get_errno())
"""

FIND_KEY = """
import ctypes, os, sys
uid = int(sys.argv[1])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {'x86_64': 250, 'aarch64': 219}[os.uname().machine]
KEYCTL_SEARCH = 10
r = libc.syscall(nr, KEYCTL_SEARCH, ctypes.c_int(-4), b'user', b'agentic_rl_attack_key', 0)
print('found' if r >= 0 else 'absent')
"""


def key_of_uid_survives(uid: int) -> bool:
    """Runs as `uid` (a root helper that switches to it) and looks for the attack's key."""
    check = subprocess.run(
        [sys.executable, "-I", "-S", "-c", FIND_KEY, str(uid)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    return check.stdout.strip() == "found"


@needs_root
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers")
@pytest.mark.parametrize("seccomp", [True, False])
def test_no_key_survives_the_sandbox_and_io_uring_is_refused(make, monkeypatch, seccomp):
    monkeypatch.setattr(CodeSandbox, "_seccomp", seccomp, raising=False)
    sb = make()
    r = run(sb, SYSCALLS)
    if seccomp:
        assert "io_uring -1" in r.output and "add_key -1" in r.output, r
        assert sb.protections["seccomp"]["applied"], sb.protections
    else:  # without the filter the key is made, and close() must clear it
        assert not sb.protections["seccomp"]["applied"], sb.protections
    uid = sb.uid
    bounded(sb.close, 30)
    assert not key_of_uid_survives(uid), r.output


# -- item 9: a killed host leaves nothing behind for long ------------------------------------

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


@needs_root
def test_stale_sandboxes_of_a_killed_host_are_cleaned_at_start_up(make):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_HOST.format(repo=str(REPO))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(left["base"]).exists()  # the killed host did leave its sandbox behind
    bounded(make, 60)
    deadline = time.monotonic() + 10
    while _processes_of_uid(left["uid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of_uid(left["uid"]) == []
    assert not Path(left["base"]).exists()
    assert not [d for d in left["cgroups"] if Path(d).exists()]


# -- item 10: death messages name the real cause --------------------------------------------


@needs_root
def test_an_out_of_memory_kill_is_reported_as_such(make):
    sb = make(SandboxLimits(wall_s=20.0, cpu_s=20.0, memory_mb=256))
    sb.run("1")
    if "memory" not in sb.protections["cgroup"]:
        pytest.skip("no writable memory cgroup")
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
    r = run(sb, code)
    assert not r.ok and r.restarted or "9" in r.output, r  # the worker or the child was killed
    if r.restarted:
        assert "memory" in r.error and "SIGPIPE" not in r.error and "CPU" not in r.error, r
    assert run(sb, "'alive'").output == "'alive'\n"


def test_a_crash_of_the_interpreter_is_not_blamed_on_a_limit(make):
    sb = make()
    r = run(sb, "import ctypes\nctypes.string_at(0)")
    assert r.restarted and "SIGSEGV" in r.error and "limit" not in r.error, r


def test_the_total_cpu_limit_is_named(make):
    sb = make(SandboxLimits(wall_s=30.0, cpu_s=20.0, cpu_total_s=2, memory_mb=512))
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    r = run(sb, code, 60)
    assert r.restarted and "total CPU-time limit" in r.error, r


@pytest.mark.parametrize("isolation", ["auto", "rlimits"])
def test_a_signal_sent_by_the_cell_is_reported_as_the_cells_own(make, isolation):
    sb = make(FAST, isolation=isolation)
    # As pid 1 of its namespace the worker ignores signals without a handler, even its own
    # SIGABRT, so abort() ends in a forced SIGSEGV there; in the rlimits mode it is SIGABRT.
    code = "import os, signal\nsignal.signal(signal.SIGUSR1, lambda *a: os.abort())\n"
    code += "os.kill(os.getpid(), signal.SIGUSR1)"
    r = run(sb, code)
    assert r.restarted and ("SIGABRT" in r.error or "SIGSEGV" in r.error), r
    assert "limit" not in r.error and "cell" in r.error, r
    r = run(sb, "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    if sb.isolation == "rlimits":
        assert r.restarted and "SIGTERM" in r.error and "limit" not in r.error, r
    else:  # ignored by a namespace's init
        assert r.ok, r


# -- the report is honest, and the fallbacks hold ------------------------------------------


@needs_root
def test_protections_report_what_is_enforced(make):
    sb = make()
    sb.run("1")
    p = sb.protections
    assert p["workspace"]["tmpfs"] and p["workspace"]["max_files"] == sb.limits.workspace_files
    assert p["between_cells"].startswith("stopped") and "killed by the host" in p["stray_processes"]
    assert set(p["cgroup"]) >= {"memory", "pids", "cpu_cores"}, p["cgroup"]
    assert p["no_new_privs"] is True and p["seccomp"]["applied"] is True
    assert {"keyctl", "add_key", "io_uring_setup", "ptrace"} <= set(p["seccomp"]["blocked"])
    if sb.isolation == "namespaces":
        assert p["network"].startswith("none") and p["chroot"] and p["pid_namespace"]
    r = run(sb, "open('/proc/self/status').read().split('Seccomp:')[1].split()[0]")
    assert r.output == "'2'\n"  # filter mode, from the kernel's point of view


@needs_root
def test_the_host_never_follows_a_symlink_planted_in_the_workspace(make, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("HOST-SECRET")
    for isolation in ("auto", "rlimits"):
        sb = make(FAST, isolation=isolation)
        code = f"import os\nos.symlink({str(secret)!r}, 'link')\nos.mkdir('d')\n"
        code += "os.symlink('d', 'dl')\nopen('dl/x', 'w').write('in')\nsorted(os.listdir('dl'))"
        assert run(sb, code).output == "['x']\n"  # symlinks work inside the sandbox
        if sb.protections["workspace"].get("host_nosymfollow"):
            for path in (sb.workdir / "link", sb.workdir / "dl" / "x"):
                with pytest.raises(OSError):
                    path.read_text()
        assert (sb.workdir / "d" / "x").read_text() == "in"


def is_alive(pid: int) -> bool:
    """A live, non-zombie process (a killed child stays a zombie until it is reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_without_root_the_fallbacks_hold(monkeypatch):
    """The host-side fallbacks of a non-root host (no uid, cgroups or tmpfs of its own):
    simulated by making the host believe it is not root."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    limits = SandboxLimits(wall_s=5.0, cpu_s=1.0, memory_mb=512, workspace_files=200,
                           workspace_mb=8)  # fmt: skip
    with CodeSandbox(limits, isolation="rlimits") as sb:
        assert sb.uid is None
        assert run(sb, "x = 1").ok
        p = sb.protections
        assert p["cgroup"] == {} and not p["workspace"]["tmpfs"] and p["cpu_accounting"] == "proc"
        assert "setsid escapes" in p["stray_processes"]
        r = run(sb, "for i in range(500):\n    open(f'f{i}', 'w').close()")
        assert r.restarted and "quota" in r.error and os.listdir(sb.workdir) == []
        code = "import subprocess\np = subprocess.Popen(['sleep', '300'])\np.pid"
        child = int(run(sb, code).output)
        assert not is_alive(child)  # killed by the host after the cell
        code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
        r = run(sb, code)
        assert r.restarted and "CPU" in r.error, r
