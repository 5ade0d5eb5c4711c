"""A sandboxed, stateful Python interpreter for model-written code, and the `python` tool.

`CodeSandbox` runs cells in a persistent worker process (`_sandbox_worker.py`), so
variables and imports survive across the turns of one episode, like a notebook kernel.
Each sandbox has its own empty temporary directory (the cell's working directory) and a
clean environment (no inherited variables, so no secrets from the host's environment).

What is enforced depends on what the host allows; `CodeSandbox.protections` says exactly
what a running sandbox got, and the "namespaces" isolation refuses to start without it.

isolation="namespaces" (needs root and util-linux `unshare`; chosen by "auto" when present):
- file system: a private root (tmpfs) holding only read-only binds of /usr, /lib*, /bin,
  the interpreter and its site-packages, plus /dev/{null,zero,random,urandom}, a fresh
  /proc, a size-capped /tmp and the episode directory at /workspace. Host files outside
  those binds do not exist inside, and the code runs as an unprivileged uid unique to the
  sandbox, so it cannot write the binds or escape the chroot (no capabilities).
- network: a new, empty network namespace (not even loopback is up): every connect fails.
- processes: a new pid namespace whose init is the worker; RLIMIT_NPROC on the sandbox's
  own uid bounds a fork bomb (the uid is fresh, so the count is the sandbox's alone); after
  every cell all other processes are killed, and killing the worker kills the namespace.
- resources: RLIMIT_AS (memory per process), RLIMIT_CPU (soft per cell -> an exception in
  the cell; hard per worker -> SIGKILL), RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; a
  wall-clock limit per cell enforced by the host (the worker is killed and restarted, and
  the observation says the state was lost); output capped in size.

- cgroups (when root and the host's cgroup v1 `memory`/`pids` hierarchies are writable, or
  cgroup v2 delegates both controllers): a per-sandbox group caps the memory of all its
  processes together at `memory_mb` and their number at `max_processes`. Without them the
  total memory is only bounded by max_processes x memory_mb (RLIMIT_AS is per process).

isolation="rlimits" (the fallback; "auto" warns when it falls back to it): the same
resource limits, wall-clock limit, cgroups, clean environment and temporary working
directory, and (when root) the unique unprivileged uid, so RLIMIT_NPROC binds, stray
processes are killed by uid, and files private to other users are unreadable. NOT
enforced: the network is reachable, world-readable host files can be read; and without
root, RLIMIT_NPROC counts the user's other processes too (it is set that much higher)
and a background process that leaves the process group (setsid) can outlive the sandbox.

Not implemented: the unprivileged path (user namespaces without root); seccomp filters;
a bound on the total bytes written to /workspace (only per file, RLIMIT_FSIZE).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentic_rl.envs.tools import Tool, ToolExecutionError

_WORKER = Path(__file__).with_name("_sandbox_worker.py")
_HEADER = struct.Struct(">I")
_ISOLATIONS = ("auto", "namespaces", "rlimits")
# Read-only system paths visible inside the namespace sandbox (when they exist on the host).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache")
_UID_BASE, _UID_SPAN = 200_000, 1_000_000


class SandboxError(RuntimeError):
    """The sandbox could not be started or is unusable (a host problem, not the cell's)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sandbox limits. Times in seconds, sizes in MiB unless named otherwise.

    `wall_s` and `cpu_s` bound one cell; `cpu_total_s` bounds a worker's lifetime CPU (a
    hard limit: the kernel kills the worker). `memory_mb` is RLIMIT_AS per process;
    `max_processes` counts processes and threads of the sandbox's uid.
    """

    wall_s: float = 10.0
    cpu_s: float = 10.0
    cpu_total_s: int = 300
    memory_mb: int = 1024
    max_processes: int = 32
    file_mb: int = 16
    max_open_files: int = 64
    tmp_mb: int = 64
    max_output_chars: int = 4000
    max_code_chars: int = 20_000
    startup_timeout_s: float = 20.0

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {value!r}")
        if self.max_processes < 2:
            raise ValueError("SandboxLimits.max_processes must be >= 2 (the worker needs one)")


@dataclass(frozen=True)
class CellResult:
    """One cell's outcome. `error` holds the traceback (or the sandbox-level failure);
    `restarted` says the worker died or was killed, so the episode's state is gone."""

    output: str
    error: str | None = None
    timed_out: bool = False
    restarted: bool = False
    truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def observation(self) -> str:
        """The text the agent sees: output, then the error, or a note that there was none."""
        parts = [self.output.rstrip("\n")] if self.output else []
        if self.truncated:
            parts.append("[output truncated]")
        if self.error:
            parts.append(self.error.rstrip("\n"))
        return "\n".join(parts) if parts else "(no output)"


@cache
def namespaces_available() -> bool:
    """True if this host can run the namespace sandbox (root + a working `unshare`)."""
    unshare = shutil.which("unshare")
    if os.name != "posix" or unshare is None or os.geteuid() != 0:
        return False
    cmd = [unshare, *_UNSHARE_FLAGS, "--", "true"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_UNSHARE_FLAGS = ("--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts")


def resolve_isolation(isolation: str) -> str:
    """Maps "auto" to the strongest isolation available; "namespaces" must be available."""
    if isolation not in _ISOLATIONS:
        raise ValueError(f"isolation must be one of {_ISOLATIONS}, got {isolation!r}")
    if isolation == "rlimits":
        return isolation
    if namespaces_available():
        return "namespaces"
    if isolation == "namespaces":
        raise SandboxError(
            "namespace isolation needs root and a working util-linux `unshare` "
            "(pid/mount/net namespaces); use isolation='rlimits' to run without it"
        )
    warnings.warn(
        "code sandbox: Linux namespaces are unavailable (needs root + `unshare`); falling back "
        "to resource limits only: sandboxed code can reach the network and read "
        "world-readable host files",
        RuntimeWarning,
        stacklevel=3,
    )
    return "rlimits"


def _clean_env() -> dict[str, str]:
    """The whole environment of sandboxed code: nothing is inherited from the host."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/workspace",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _python_paths() -> list[str]:
    """sys.path entries of the host interpreter that hold installed packages (for numpy etc.)."""
    paths = []
    for p in sys.path:
        if p and os.path.isdir(p) and ("site-packages" in p or "dist-packages" in p):
            paths.append(os.path.realpath(p))
    return list(dict.fromkeys(paths))


def _processes_of_uid(uid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose real uid is `uid`, from /proc.

    Zombies are skipped: they hold no resources and only wait for their parent to reap
    them (after a sandbox is killed, that parent can be the host's init).
    """
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        state, uids = fields.get("State", "").split(), fields.get("Uid", "").split()
        if uids and int(uids[0]) == uid and state[:1] not in (["Z"], ["X"]):
            pids.append(int(entry))
    return pids


def _task_count(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) of the processes of `uid`."""
    total = 0
    for pid in _processes_of_uid(uid):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
        except (OSError, StopIteration, ValueError):
            total += 1
    return total


def _own_cgroup_paths() -> dict[str, str]:
    """controller -> this process's cgroup path, from /proc/self/cgroup ("" for cgroup v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


class SandboxCgroup:
    """Per-sandbox cgroups bounding the memory and the number of tasks of all its processes.

    Best effort: created only when the host lets us (root, with writable cgroup v1
    `memory`/`pids` hierarchies, or cgroup v2 with both controllers delegated to our
    cgroup's children); `limits` says which limits are in force. The worker joins the
    groups itself before dropping privileges, so every later process is inside.
    """

    def __init__(self, name: str, memory_bytes: int, max_tasks: int):
        self.dirs: list[Path] = []
        self.limits: dict[str, int] = {}
        own = _own_cgroup_paths()
        wanted = {"memory": memory_bytes, "pids": max_tasks}
        v2_root = Path("/sys/fs/cgroup/unified")
        if not v2_root.is_dir():
            v2_root = Path("/sys/fs/cgroup")
        for controller, value in wanted.items():
            if controller in own:  # cgroup v1: one hierarchy per controller
                parent = Path("/sys/fs/cgroup", controller) / own[controller].lstrip("/")
                key = "memory.limit_in_bytes" if controller == "memory" else "pids.max"
            elif "" in own:  # cgroup v2: one unified hierarchy
                parent = v2_root / own[""].lstrip("/")
                key = "memory.max" if controller == "memory" else "pids.max"
                if not self._delegated(parent, controller):
                    continue
            else:
                continue
            self._create(parent / name, key, value, controller)

    @staticmethod
    def _delegated(parent: Path, controller: str) -> bool:
        try:
            return controller in (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            return False

    def _create(self, path: Path, key: str, value: int, controller: str) -> None:
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return
        try:
            (path / key).write_text(str(value))
        except OSError:
            path.rmdir()
            return
        self.dirs.append(path)
        self.limits[controller] = value

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def remove(self) -> None:
        """Removes the groups (they must be empty: call after every process was killed)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = []


_UIDS_IN_USE: set[int] = set()
_UIDS_LOCK = threading.Lock()


def _allocate_uid() -> int:
    """A uid for one sandbox: unused by this process's other sandboxes and by any live
    process on the host (so killing "every process of the uid" hits only this sandbox)."""
    with _UIDS_LOCK:
        while True:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            if uid not in _UIDS_IN_USE and not _processes_of_uid(uid):
                _UIDS_IN_USE.add(uid)
                return uid


class CodeSandbox:
    """A persistent sandboxed Python interpreter for one episode (see the module docstring).

    The worker starts on the first `run` (so episodes that never run code cost nothing)
    and is restarted after a crash or a timeout. `close()` kills every process of the
    sandbox and deletes its directory; it is idempotent and also runs at garbage
    collection. Thread-safe: cells run one at a time.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        isolation: str = "auto",
        workdir: str | os.PathLike | None = None,
        allow_site_packages: bool = True,
        use_cgroups: bool = True,
    ):
        self.limits = limits or SandboxLimits()
        self.isolation = resolve_isolation(isolation)
        self._base = Path(tempfile.mkdtemp(prefix="agentic_rl_sandbox_"))
        os.chmod(self._base, 0o711)
        self._owns_workdir = workdir is None
        self.workdir = self._base / "workspace" if workdir is None else Path(workdir).resolve()
        self.workdir.mkdir(exist_ok=True)
        self._python_paths = _python_paths() if allow_site_packages else []
        is_root = os.name == "posix" and os.geteuid() == 0
        self.uid = _allocate_uid() if is_root else None
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
        self._use_cgroups = use_cgroups and self.uid is not None
        self._cgroup: SandboxCgroup | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.protections: dict[str, Any] = {}
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        lim = self.limits
        isolate = self.isolation == "namespaces"
        own = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *self._python_paths)]
        return {
            "isolate": isolate,
            "root": str(self._base / "root"),
            "workdir": str(self.workdir),
            "ro_paths": list(dict.fromkeys([*_SYSTEM_PATHS, *own])),
            "python_paths": self._python_paths,
            "cgroup_procs": self._cgroup.procs_files() if self._cgroup else [],
            "uid": self.uid,
            "gid": self.uid,
            "tmp_mb": lim.tmp_mb,
            "memory_mb": lim.memory_mb,
            "file_mb": lim.file_mb,
            "max_open_files": lim.max_open_files,
            "cpu_total_s": lim.cpu_total_s,
            "nproc": self._nproc_limit(),
            "max_output_bytes": 4 * lim.max_output_chars + 1024,
        }

    def _nproc_limit(self) -> int:
        """RLIMIT_NPROC for the worker. It counts every task of the real uid: with the
        sandbox's own uid that is the sandbox alone; without one (not root) it includes
        the user's other processes, so the limit is set that many tasks higher."""
        if self.uid is not None:
            return self.limits.max_processes
        return _task_count(os.getuid()) + self.limits.max_processes

    def _command(self, config: dict[str, Any]) -> list[str]:
        python = [sys.executable, "-I", "-S", str(_WORKER), json.dumps(config)]
        if self.isolation == "namespaces":
            return [shutil.which("unshare") or "unshare", *_UNSHARE_FLAGS, "--", *python]
        return python

    def start(self) -> None:
        """Starts the worker (if not running) and records the protections it applied."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._use_cgroups and self._cgroup is None:
            mem, tasks = self.limits.memory_mb << 20, self.limits.max_processes
            self._cgroup = SandboxCgroup(f"agentic_rl_sandbox_{self.uid}", mem, tasks)
        config = self._config()
        if config["isolate"]:
            (self._base / "root").mkdir(exist_ok=True)
        self._proc = subprocess.Popen(
            self._command(config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            env=_clean_env(),
            start_new_session=True,
            close_fds=True,
        )
        try:
            hello = self._receive(self.limits.startup_timeout_s)
            if not hello.get("ready") or not isinstance(hello.get("applied"), dict):
                raise ValueError(f"unexpected greeting {hello!r:.200}")
        except (TimeoutError, EOFError, ValueError) as e:
            stderr = self._kill_and_read_stderr()
            raise SandboxError(f"sandbox worker failed to start ({e}): {stderr}") from None
        self._proc.stderr.close()
        cgroup_limits = self._cgroup.limits if self._cgroup else {}
        self.protections = {
            "isolation": self.isolation,
            "cgroup": cgroup_limits,
            **hello["applied"],
        }
        self._check_protections()

    def _check_protections(self) -> None:
        p = self.protections
        if self.isolation == "namespaces" and not (p.get("chroot") and p.get("pid_namespace")):
            self._kill()
            raise SandboxError(f"namespace isolation was requested but not applied: {p}")
        if self.uid is not None and p.get("uid") != self.uid:
            self._kill()
            raise SandboxError(f"sandbox worker runs as uid {p.get('uid')}, expected {self.uid}")

    def _kill_and_read_stderr(self) -> str:
        proc = self._proc
        self._kill()
        try:
            return proc.stderr.read(4000).decode("utf-8", "replace").strip() or "(no stderr)"
        except (OSError, ValueError, AttributeError):
            return "(no stderr)"

    def _kill(self) -> None:
        """Kills every process of the sandbox and reaps the worker, leaving no zombie.

        The sandbox's own uid is killed first, worker included, so the worker's parent
        (`unshare`, our child) reaps it and exits; then the process group is killed in
        case anything is left. (Killing `unshare` first would orphan the worker to the
        host's init, whose reaping can lag by seconds.)
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_uid_processes()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self._kill_uid_processes()

    def _signal_uid_processes(self) -> int:
        """SIGKILLs every process of the sandbox's uid; returns how many there were."""
        pids = _processes_of_uid(self.uid) if self.uid is not None else []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return len(pids)

    def _kill_uid_processes(self) -> None:
        """Kills stray processes of the sandbox's uid until none is left (bounded wait)."""
        if self.uid is None:
            return
        for _ in range(200):
            if not self._signal_uid_processes():
                return
            time.sleep(0.01)

    def reset(self) -> None:
        """Stops the interpreter and empties the working directory (for a new episode)."""
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            self._kill()
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir.mkdir()
                if self.uid is not None:
                    os.chown(self.workdir, self.uid, self.uid)

    def close(self) -> None:
        """Kills all sandbox processes and removes the sandbox's directories."""
        with self._lock:
            if self._closed:
                return
            self._kill()
            if self._cgroup is not None:
                self._cgroup.remove()
            if self._owns_workdir:
                shutil.rmtree(self._base, ignore_errors=True)
            else:
                shutil.rmtree(self._base / "root", ignore_errors=True)
                try:
                    self._base.rmdir()
                except OSError:
                    pass
            with _UIDS_LOCK:
                _UIDS_IN_USE.discard(self.uid)
            self._closed = True  # last: `closed` means every process is gone

    def __enter__(self) -> CodeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: best effort
            pass

    # -- protocol -------------------------------------------------------------------------------

    def _send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self._proc.stdin.write(_HEADER.pack(len(data)) + data)
        self._proc.stdin.flush()

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks = []
        while n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer from the sandbox worker in time")
            chunk = os.read(fd, n)
            if not chunk:
                raise EOFError("the sandbox worker exited")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        if size > 8 * self.limits.max_output_chars + (1 << 16):
            raise ValueError(f"oversized message from the sandbox worker ({size} bytes)")
        message = json.loads(self._read_exact(size, deadline))
        if not isinstance(message, dict):
            raise ValueError("malformed message from the sandbox worker")
        return message

    # -- running code ---------------------------------------------------------------------------

    def run(self, code: str) -> CellResult:
        """Runs one cell; never raises for anything the code does (see `CellResult`)."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if len(code) > self.limits.max_code_chars:
            msg = f"code is too long ({len(code)} > {self.limits.max_code_chars} characters)"
            return CellResult("", error=f"Error: {msg}")
        if "\x00" in code:
            return CellResult("", error="Error: code contains a NUL character")
        with self._lock:
            if self._closed:
                return CellResult("", error="Error: the sandbox is closed")
            self.start()
            start = time.perf_counter()
            result = self._run_started(code)
            duration = time.perf_counter() - start
        return dataclasses.replace(result, duration_s=duration)

    def _run_started(self, code: str) -> CellResult:
        lim = self.limits
        try:
            self._send({"code": code, "cpu_s": lim.cpu_s})
            reply = self._receive(lim.wall_s)
        except TimeoutError:
            self._restart_after_failure()
            return CellResult(
                "",
                error=f"Error: the cell exceeded the {lim.wall_s:g} s wall-time limit and was "
                "killed; the interpreter was restarted and its state (variables, imports) is lost",
                timed_out=True,
                restarted=True,
            )
        except (EOFError, OSError, ValueError) as e:
            reason = self._death_reason(e)
            self._restart_after_failure()
            return CellResult(
                "",
                error=f"Error: the interpreter died ({reason}); it was restarted and its state "
                "(variables, imports) is lost",
                restarted=True,
            )
        return self._cell_result(reply)

    def _death_reason(self, error: BaseException) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if code is None and proc is not None:
            try:
                code = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}, e.g. the CPU-time limit"
        if code is not None:
            return f"exit status {code}"
        return str(error)

    def _restart_after_failure(self) -> None:
        self.restarts += 1
        self._kill()

    def _cell_result(self, reply: dict[str, Any]) -> CellResult:
        limit = self.limits.max_output_chars
        output = str(reply.get("output", ""))
        total = int(reply.get("output_bytes", 0))
        truncated = len(output) > limit or total > len(output.encode("utf-8", "replace"))
        error = reply.get("error")
        if error is not None:
            error = str(error)[-limit:]
        return CellResult(output[:limit], error=error, truncated=truncated)


def python_tool(sandbox: CodeSandbox, name: str = "python") -> Tool:
    """The `python` tool over `sandbox`: runs a cell, returns its output (and traceback).

    A cell that raises, times out or kills the interpreter is reported through
    `ToolExecutionError`, so it counts as a failed tool call in the metrics.
    """
    lim = sandbox.limits
    isolated = sandbox.isolation == "namespaces"
    network = "; no network; working directory /workspace" if isolated else ""

    def run(code: str) -> str:
        result = sandbox.run(code)
        if not result.ok:
            raise ToolExecutionError(result.observation())
        return result.observation()

    return Tool(
        name=name,
        description=(
            "Run Python 3 code in a persistent sandboxed interpreter (variables and imports "
            f"persist between calls{network}). Prints and the value of the last expression are "
            f"returned. Limits: {lim.wall_s:g} s per call, {lim.memory_mb} MiB memory."
        ),
        parameters={
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Python source to execute",
                    "maxLength": lim.max_code_chars,
                }
            },
            "required": ["code"],
            "additionalProperties": False,
        },
        fn=run,
        timeout_s=lim.wall_s + lim.startup_timeout_s + 15.0,
        max_output_chars=lim.max_output_chars + 500,
    )
