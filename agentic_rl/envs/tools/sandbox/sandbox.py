"""A sandboxed, stateful Python interpreter for model-written code, and the `python` tool.

`CodeSandbox` runs cells in a persistent worker process (`_worker.py`), so
variables and imports survive across the turns of one episode, like a notebook kernel.
Each sandbox has its own empty workspace directory (the cell's working directory) and a
clean environment (no inherited variables, so no secrets from the host's environment).

Threat model: the cell is hostile. It runs inside the worker's interpreter, so it can
rewrite anything the worker does (its per-cell CPU limit, its clean-up of child
processes, its replies). Every limit that matters is therefore enforced by the host or
the kernel from outside the sandboxed processes, and everything the worker sends back is
validated (`channel`). `CodeSandbox.protections` says exactly what a running
sandbox got; the "namespaces" isolation refuses to start without its core protections.

Process layout: host -> supervisor (trusted, root when the host is; never runs cell code)
-> worker (drops to the sandbox's uid, then runs cells). The supervisor creates the
namespaces, reports the worker's pid, and exits the way the worker did (so the host learns
the real cause of a death), and kills the worker when the host dies (a "lifeline" pipe
closes). The host talks to the worker over a Unix socket with deadlines on every read and
write and a sequence number per request.

Enforced from the host or the kernel, in every mode:
- wall clock per cell (the host kills and restarts the worker: the state is lost, and the
  observation says so); the same when the worker stops reading its requests;
- CPU time per cell (`cpu_s`): the worker raises `CpuTimeExceeded` in the cell as a
  courtesy (state kept); the host independently measures the CPU time of all the
  sandbox's processes (cgroup cpuacct, else /proc) and kills the worker at
  `cpu_s + 2 s`; RLIMIT_CPU `cpu_total_s` (hard, set before any cell) kills a worker
  whose lifetime CPU reaches it;
- between cells the worker is stopped (SIGSTOP): threads a cell left behind make no
  progress until the next cell, and their CPU time counts against that cell;
- after every cell every other process of the sandbox is killed by the host (cgroup
  members, frozen first so a fork bomb cannot outrun the kill; processes of the sandbox's
  uid; the worker's process group without root);
- replies are validated (exact fields, types, ranges, sizes, no NaN/Infinity, no lone
  surrogates); a bad reply, bytes nobody asked for, or a wrong sequence number is a
  protocol violation: the worker is killed and restarted and the observation says why;
- death causes are told apart: cgroup OOM kill (the OOM counter of its memory cgroup),
  the total CPU-time limit, the host's wall-clock or CPU kill, a protocol violation, an
  exit of the interpreter (os._exit), a signal or crash caused by the cell's own code;
- stale state of dead hosts (directories, workspace mounts, cgroups, processes) is
  removed when a sandbox is created (`clean_stale_sandboxes`).

isolation="namespaces" (needs root; chosen by "auto" when available):
- file system: a private root (tmpfs) holding only read-only binds of /usr, /lib*, /bin,
  the interpreter and its site-packages, plus /dev/{null,zero,random,urandom}, a fresh
  /proc, a size- and inode-capped /tmp and the workspace at /workspace; host files outside
  those binds do not exist inside, and the code runs as an unprivileged uid unique to the
  sandbox, so it cannot write the binds or escape the chroot (no capabilities);
- network: a new, empty network namespace (not even loopback is up): every connect fails;
  also new ipc and uts namespaces;
- processes: a new pid namespace whose init is the worker (killing it kills them all);
  RLIMIT_NPROC on the fresh uid and the pids cgroup bound a fork or thread bomb;
- workspace: a tmpfs mounted by the host, `workspace_mb` MiB and `workspace_files` inodes,
  mode 0700, owned by the sandbox's uid; `reset()` replaces it with an empty one;
- cgroups (v1 memory/pids/cpu/cpuacct/freezer hierarchies that root can write, or v2
  with delegated controllers): the memory of all processes together (files in /tmp and
  /workspace included) is capped at `memory_mb`, tasks at `max_processes`, CPU at
  `cpu_cores` cores; without a memory cgroup, total memory is only bounded by
  max_processes x memory_mb (RLIMIT_AS is per process), and `protections["cgroup"]` shows it;
- seccomp (x86_64, aarch64): keyctl/add_key/request_key, io_uring, ptrace,
  process_vm_*, bpf, perf_event_open, userfaultfd, mount-family calls, setns, new user
  namespaces, kexec/modules, swap, reboot, acct, quotactl, open_by_handle_at, iopl/ioperm
  fail with EPERM; clone3 with ENOSYS (libc falls back to clone, whose flags are checked);
  other ABIs (i386, x32) with ENOSYS; plus PR_SET_NO_NEW_PRIVS (setuid binaries do not
  elevate) and a fresh session keyring; where seccomp is unavailable the report says so
  and `close()` clears the uid's user keyrings instead;
- resources: RLIMIT_AS (memory per process), RLIMIT_FSIZE, RLIMIT_NOFILE, no core files,
  no locked memory or POSIX message queues; output capped in size.

isolation="rlimits" (the fallback; "auto" warns when it falls back to it): everything in
the first list, the resource limits, seccomp, cgroups, the clean environment; when root
also the fresh uid (other sandboxes' files and processes are out of reach, so
RLIMIT_NPROC binds and stray processes are killed by uid), the tmpfs workspace (mode 0700),
and a private mount namespace in which /tmp, /var/tmp, /dev/shm and /run/lock are
size-limited private tmpfs and /proc hides every other user's processes (their command
lines included). NOT enforced: the network is reachable; world-readable host files can be
read (and the interpreter's files must be readable by the sandbox's uid); other
world-writable host paths, if any, stay writable (but RLIMIT_FSIZE caps each file).
Without root: no uid of its own (RLIMIT_NPROC counts the user's other processes, so it is
set that much higher), no cgroups, no tmpfs: the workspace is checked after every cell
and emptied (with a restart) when over its quota, so within one cell only RLIMIT_FSIZE
and the wall clock bound what is written; a process that leaves the worker's process
group (setsid) can outlive the sandbox and can signal host processes of the same user.

A caller-provided `workdir` is used as is (never mounted over): no workspace quota.
The host's mount of a tmpfs workspace is `nosymfollow` (kernel 5.10+, reported as
`host_nosymfollow`): host code opening paths in `workdir` never follows a symlink the
sandbox planted (inside the sandbox symlinks work); without it, open such files with
O_NOFOLLOW.

Not enforced in any mode: the kernel itself is shared (syscalls outside the filter
remain reachable); the interpreter's and site-packages' files are readable; /proc shows
the sandbox's own mount table (host paths of its binds); timing and CPU-load side
channels; stale state of a host in another pid namespace is not recognised as stale.

Imports: stdlib, agentic_rl.envs.tools.base and agentic_rl.envs.tools.sandbox (cgroup,
channel, system) only; never jax. One cohesive module over 400 lines: the host side of one
worker's lifecycle (start, protections, cells, kill); its seams (channel, cgroup, system)
are already split out.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
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

from agentic_rl.envs.tools.base import Tool, ToolExecutionError, require_positive
from agentic_rl.envs.tools.sandbox.cgroup import PREFIX, SandboxCgroup
from agentic_rl.envs.tools.sandbox.channel import (
    Channel,
    ChannelClosed,
    ChannelTimeout,
    ProtocolError,
    read_bounded,
    validate_hello,
    validate_reply,
)
from agentic_rl.envs.tools.sandbox.system import (
    allocate_uid,
    clean_stale_sandboxes,
    cpu_seconds_of,
    kill_uid,
    mount_tmpfs,
    owner_tag,
    proc_stat,
    processes_of_uid,
    release_uid,
    remove_tree,
    task_count,
    unmount,
)

__all__ = [
    "CellResult",
    "CodeSandbox",
    "SandboxError",
    "SandboxLimits",
    "clean_stale_sandboxes",
    "namespaces_available",
    "python_tool",
    "resolve_isolation",
]

_WORKER = Path(__file__).with_name("_worker.py")
_ISOLATIONS = ("auto", "namespaces", "rlimits")
# Read-only system paths visible inside the namespace sandbox (when they exist on the host).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache")
_CPU_GRACE_S = 2.0  # the host kills a cell at cpu_s + this (the worker's own limit is first)
_EXIT_SETUP, _EXIT_CHANNEL = 70, 71  # the worker's own exit codes (see _worker.py)

# Kept for callers of the old private helpers.
_processes_of_uid = processes_of_uid
_task_count = task_count


class SandboxError(RuntimeError):
    """The sandbox could not be started or is unusable (a host problem, not the cell's)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sandbox limits. Times in seconds, sizes in MiB unless named otherwise.

    `wall_s` and `cpu_s` bound one cell; `cpu_total_s` bounds a worker's lifetime CPU (a
    hard limit: the kernel kills the worker). `memory_mb` is RLIMIT_AS per process and,
    with a memory cgroup, the total of all the sandbox's processes and its tmpfs files;
    `max_processes` counts processes and threads; `cpu_cores` caps the CPU rate (cgroup);
    `workspace_mb` / `workspace_files` bound /workspace (and `tmp_mb` / `workspace_files`
    the sandbox's /tmp).
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
    workspace_mb: int = 128
    workspace_files: int = 10_000
    cpu_cores: float = 1.0

    def __post_init__(self):
        require_positive(self)
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
    """True if this host can run the namespace sandbox (root + pid/mount/net namespaces)."""
    if os.name != "posix" or os.geteuid() != 0:
        return False
    cmd = [sys.executable, "-I", "-S", str(_WORKER), "--probe"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


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
            "namespace isolation needs root and kernel support for pid/mount/net "
            "namespaces; use isolation='rlimits' to run without it"
        )
    warnings.warn(
        "code sandbox: Linux namespaces are unavailable (needs root); falling back to "
        "resource limits only: sandboxed code can reach the network and read "
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


def _allocate_uid() -> int:
    return allocate_uid()


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _clear_user_keyrings(uid: int) -> bool:
    """Clears the user and user-session keyrings of `uid`: keys live in the kernel, not in
    any process, so killing the sandbox does not end them. A fresh root helper process
    switches to the uid itself (the uid may not be able to read the interpreter)."""
    code = (
        "import ctypes, os, sys\n"
        "uid = int(sys.argv[1])\nos.setgroups([])\nos.setresgid(uid, uid, uid)\n"
        "os.setresuid(uid, uid, uid)\n"
        "libc = ctypes.CDLL(None)\nlibc.syscall.restype = ctypes.c_long\n"
        "nr = {'x86_64': 250, 'aarch64': 219}[os.uname().machine]\n"
        "for ring in (-4, -5):\n    libc.syscall(nr, 7, ctypes.c_int(ring))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, str(uid)], env=_clean_env(), cwd="/",
            capture_output=True, timeout=10,
        )  # fmt: skip
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class _CpuExceeded(Exception):
    def __init__(self, used: float):
        self.used = used


class _Closing(Exception):
    pass


class _Worker:
    """The host's handles on one running worker."""

    def __init__(self, proc: subprocess.Popen, channel: Channel, lifeline: int):
        self.proc, self.channel, self.lifeline = proc, channel, lifeline
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.seq = 0
        self.cpu_base = 0.0  # cgroup CPU seconds when this worker started
        self.last_cpu = 0.0  # the worker process's own CPU seconds, last seen
        self.lock = threading.Lock()  # guards pidfd against close-while-signalling

    def signal(self, sig: int) -> None:
        with self.lock:
            try:
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, sig)
                elif self.pid is not None:
                    os.kill(self.pid, sig)
            except OSError:
                pass

    def release(self) -> None:
        with self.lock:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
        self.channel.close()
        if self.lifeline >= 0:
            try:
                os.close(self.lifeline)
            except OSError:
                pass
            self.lifeline = -1


class CodeSandbox:
    """A persistent sandboxed Python interpreter for one episode (see the module docstring).

    The worker starts on the first `run` (so episodes that never run code cost nothing)
    and is restarted after a crash, a timeout or a protocol violation. `close()` kills
    every process of the sandbox and deletes its directory; it is idempotent, interrupts a
    cell running on another thread, and also runs at garbage collection. Thread-safe:
    cells run one at a time, and every wait while holding the lock is bounded.
    """

    _seccomp = True  # tests switch it off to exercise the no-seccomp path

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
        self._closed = False
        self._closing = False
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._cgroup: SandboxCgroup | None = None
        self._tmpfs = False
        self._nosymfollow = False
        self.protections: dict[str, Any] = {}
        self.restarts = 0
        self._started_once = False
        self._is_root = os.name == "posix" and os.geteuid() == 0
        clean_stale_sandboxes()
        self.uid = _allocate_uid() if self._is_root else None
        tag = f"{owner_tag()}_{self.uid if self.uid is not None else 'x'}"
        self._tag = tag
        self._base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{tag}_"))
        os.chmod(self._base, 0o711)
        self._owns_workdir = workdir is None
        self.workdir = self._base / "workspace" if workdir is None else Path(workdir).resolve()
        self.workdir.mkdir(exist_ok=True)
        self._prepare_workspace()
        self._python_paths = _python_paths() if allow_site_packages else []
        self._use_cgroups = use_cgroups and self.uid is not None

    # -- workspace ------------------------------------------------------------------------------

    def _workspace_mb(self) -> int:
        # tmpfs pages are charged to the sandbox's memory cgroup: leave room for processes.
        return max(1, min(self.limits.workspace_mb, self.limits.memory_mb // 2))

    def _prepare_workspace(self) -> None:
        """An empty workspace: a fresh tmpfs (root), else a private directory."""
        if not self._owns_workdir:
            return
        if self.uid is not None:
            try:
                self._nosymfollow = mount_tmpfs(
                    self.workdir,
                    size_mb=self._workspace_mb(),
                    inodes=self.limits.workspace_files,
                    uid=self.uid,
                )
                self._tmpfs = True
                return
            except OSError:
                self._tmpfs = False
            os.chown(self.workdir, self.uid, self.uid)
        os.chmod(self.workdir, 0o700)

    def _empty_workspace(self) -> None:
        if not self._owns_workdir:
            return
        if self._tmpfs:
            unmount(self.workdir)
        else:
            remove_tree(self.workdir)
        self.workdir.mkdir(exist_ok=True)
        self._prepare_workspace()

    def _workspace_over_quota(self) -> str | None:
        """Without a tmpfs: a bounded walk of the workspace after the cell."""
        if self._tmpfs or not self._owns_workdir:
            return None
        lim = self.limits
        files, size, stack = 0, 0, [str(self.workdir)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                files += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        size += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    pass
                if files > lim.workspace_files or size > lim.workspace_mb << 20:
                    return (f"the workspace exceeded its quota ({lim.workspace_files} files, "
                            f"{lim.workspace_mb} MiB) and was emptied")  # fmt: skip
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    def _config(self, lifeline_fd: int) -> dict[str, Any]:
        lim = self.limits
        isolate = self.isolation == "namespaces"
        own = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *self._python_paths)]
        cg = self._cgroup
        freezer = cg.controllers.get("freezer") if cg is not None else None
        return {
            "isolate": isolate,
            "private_mounts": not isolate and self.uid is not None,
            "root": str(self._base / "root"),
            "workdir": str(self.workdir),
            "ro_paths": list(dict.fromkeys([*_SYSTEM_PATHS, *own])) if isolate else own,
            "python_paths": self._python_paths,
            "cgroup_procs": cg.procs_files() if cg is not None else [],
            "freezer_state": str(freezer / "freezer.state") if freezer is not None else None,
            "uid": self.uid,
            "gid": self.uid,
            "tmp_mb": lim.tmp_mb,
            "tmp_inodes": lim.workspace_files,
            "memory_mb": lim.memory_mb,
            "file_mb": lim.file_mb,
            "max_open_files": lim.max_open_files,
            "cpu_total_s": lim.cpu_total_s,
            "nproc": self._nproc_limit(),
            "max_output_bytes": self._max_output_bytes(),
            "max_error_chars": self._max_error_chars(),
            "seccomp": self._seccomp,
            "lifeline_fd": lifeline_fd,
        }

    def _max_output_bytes(self) -> int:
        return 4 * self.limits.max_output_chars + 1024

    def _max_error_chars(self) -> int:
        return self.limits.max_output_chars + 1024

    def _max_reply_bytes(self) -> int:
        # JSON with \uXXXX escapes: at most 6 bytes per character, plus the field names.
        return 6 * (self._max_output_bytes() + self._max_error_chars()) + 4096

    def _nproc_limit(self) -> int:
        """RLIMIT_NPROC for the worker. It counts every task of the real uid: with the
        sandbox's own uid that is the sandbox alone; without one (not root) it includes
        the user's other processes, so the limit is set that many tasks higher."""
        if self.uid is not None:
            return self.limits.max_processes
        return task_count(os.getuid()) + self.limits.max_processes

    def start(self) -> None:
        """Starts the worker (if not running) and records the protections it applied."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if self._worker is not None and self._worker.proc.poll() is None:
            return
        if self._worker is not None:
            self._kill()
        lim = self.limits
        if self._use_cgroups and self._cgroup is None:
            self._cgroup = SandboxCgroup(
                f"{PREFIX}{self._tag}",
                memory_bytes=lim.memory_mb << 20,
                max_tasks=lim.max_processes,
                cpu_cores=lim.cpu_cores,
            )
        if self._cgroup is not None and not self._cgroup.kill(timeout_s=5.0):
            raise SandboxError("processes of a previous worker could not be killed")
        if self.isolation == "namespaces":
            (self._base / "root").mkdir(exist_ok=True)
        host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        lifeline_r, lifeline_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_WORKER)],
                stdin=worker_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.workdir,
                env=_clean_env(),
                start_new_session=True,
                close_fds=True,
                pass_fds=(lifeline_r,),
            )
        except OSError as e:
            host_end.close()
            os.close(lifeline_w)
            raise SandboxError(f"sandbox worker failed to start: {e}") from None
        finally:
            worker_end.close()
            os.close(lifeline_r)
        worker = self._worker = _Worker(proc, Channel(host_end), lifeline_w)
        deadline = time.monotonic() + lim.startup_timeout_s

        def watchdog() -> None:
            if self._closing:
                raise SandboxError("the sandbox was closed while it started")

        try:
            worker.channel.send(self._config(lifeline_r), deadline, watchdog)
            self._identify_worker(worker.channel.receive(deadline, 4096, watchdog), worker)
            applied = validate_hello(worker.channel.receive(deadline, 1 << 20, watchdog))
        except (ChannelTimeout, ChannelClosed, ProtocolError, SandboxError) as e:
            stderr = read_bounded(proc.stderr.fileno(), time.monotonic() + 2.0)
            self._kill()
            text = stderr.decode("utf-8", "replace").strip() or "(no stderr)"
            raise SandboxError(f"sandbox worker failed to start ({e}): {text}") from None
        proc.stderr.close()
        worker.cpu_base = self._cgroup_cpu() or 0.0
        self._started_once = True
        self.protections = self._protections(applied)
        self._check_protections()
        worker.signal(signal.SIGSTOP)  # paused until its first cell

    def _identify_worker(self, frame: dict[str, Any], worker: _Worker) -> None:
        """The supervisor's first frame names the worker's pid; check it is its child."""
        pid = frame.get("worker_pid")
        if frame.get("seq") != 0 or type(pid) is not int or pid <= 1:
            raise ProtocolError(f"unexpected supervisor frame {frame!r:.200}")
        stat = proc_stat(pid)
        if not stat or len(stat) < 3 or stat[2] != str(worker.proc.pid):
            raise SandboxError(f"the worker (pid {pid}) is not the supervisor's child")
        worker.pid = pid
        try:
            worker.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            worker.pidfd = None

    def _protections(self, applied: dict[str, Any]) -> dict[str, Any]:
        cg = self._cgroup
        cgroup = dict(cg.limits) if cg is not None else {}
        if cg is not None:
            cgroup["accounting"] = sorted(c for c in ("cpuacct", "freezer") if c in cg.controllers)
        if self._tmpfs:
            workspace = {"tmpfs": True, "size_mb": self._workspace_mb(),
                         "max_files": self.limits.workspace_files, "mode": "0700",
                         "host_nosymfollow": self._nosymfollow}  # fmt: skip
        elif self._owns_workdir:
            workspace = {"tmpfs": False, "quota": "checked after each cell", "mode": "0700"}
        else:
            workspace = {"tmpfs": False, "quota": None, "reason": "caller-provided workdir"}
        return {
            "isolation": self.isolation,
            "cgroup": cgroup,
            "workspace": workspace,
            "host_cpu_limit_s": self.limits.cpu_s + _CPU_GRACE_S,
            "cpu_accounting": "cgroup" if self._cgroup_cpu() is not None else "proc",
            "between_cells": "stopped (SIGSTOP)",
            "stray_processes": self._stray_policy(),
            "network": "none (empty namespace)" if self.isolation == "namespaces" else "host",
            "on_host_death": "the supervisor kills the sandbox (lifeline pipe)",
            **applied,
        }

    def _stray_policy(self) -> str:
        if self._cgroup is not None and self._cgroup.controllers:
            return "killed by the host after each cell (cgroup, frozen first)"
        if self.uid is not None:
            return "killed by the host after each cell (every process of the uid)"
        return ("killed by the host after each cell (the process group only: a process "
                "that calls setsid escapes)")  # fmt: skip

    def _check_protections(self) -> None:
        p = self.protections
        if self.isolation == "namespaces" and not (p.get("chroot") and p.get("pid_namespace")):
            self._kill()
            raise SandboxError(f"namespace isolation was requested but not applied: {p}")
        if self.uid is not None and p.get("uid") != self.uid:
            self._kill()
            raise SandboxError(f"sandbox worker runs as uid {p.get('uid')}, expected {self.uid}")

    def _kill(self) -> None:
        """Kills every process of the sandbox and reaps the supervisor (bounded waits).

        In the namespace mode SIGKILL to the worker (the init of its pid namespace) kills
        the namespace; the cgroup (frozen first), the uid and the process group catch the
        rest in every mode.
        """
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.signal(signal.SIGKILL)
            worker.signal(signal.SIGCONT)
        if self._cgroup is not None:
            self._cgroup.kill(timeout_s=5.0)
        if self.uid is not None:
            kill_uid(self.uid, timeout_s=5.0)
        if worker is not None:
            proc = worker.proc
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if self.uid is None:  # without a uid of its own: the worker's process group
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            worker.release()
            if proc.stderr is not None and not proc.stderr.closed:
                proc.stderr.close()

    def _interrupt(self) -> None:
        """Kills the running worker without the lock (close() from another thread)."""
        worker = self._worker
        if worker is not None:
            worker.signal(signal.SIGKILL)
            worker.signal(signal.SIGCONT)

    def reset(self) -> None:
        """Stops the interpreter and empties the working directory (for a new episode)."""
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            self._kill()
            self._empty_workspace()

    def close(self) -> None:
        """Kills all sandbox processes and removes the sandbox's directories."""
        if self._closed:
            return
        self._closing = True
        self._interrupt()
        acquired = self._lock.acquire(timeout=self.limits.wall_s + 60)
        try:
            if self._closed:
                return
            self._kill()
            if self._cgroup is not None:
                self._cgroup.remove()
            seccomp = self.protections.get("seccomp")
            if self.uid is not None and self._started_once:
                if not (isinstance(seccomp, dict) and seccomp.get("applied") is True):
                    _clear_user_keyrings(self.uid)  # keys could be made: clear them
            if self._owns_workdir:
                remove_tree(self._base)
            else:
                remove_tree(self._base / "root")
                try:
                    self._base.rmdir()
                except OSError:
                    pass
            release_uid(self.uid)
            self._closed = True  # last: `closed` means every process is gone
        finally:
            if acquired:
                self._lock.release()

    def __enter__(self) -> CodeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        try:
            if hasattr(self, "_lock"):
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: best effort
            pass

    # -- measurements ---------------------------------------------------------------------------

    def _cgroup_cpu(self) -> float | None:
        return self._cgroup.cpu_seconds() if self._cgroup is not None else None

    def _cpu_seconds(self, worker: _Worker) -> float:
        """CPU seconds of all the sandbox's processes (cgroup), else of what /proc shows."""
        if worker.pid is not None:
            worker.last_cpu = cpu_seconds_of(worker.pid) or worker.last_cpu
        total = self._cgroup_cpu()
        if total is not None:
            return total
        if worker.pid is None:
            return 0.0
        total = cpu_seconds_of(worker.pid, children=True)
        if self.uid is not None:
            total += sum(cpu_seconds_of(p) for p in processes_of_uid(self.uid) if p != worker.pid)
        return total

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
            if self._closed or self._closing:
                return CellResult("", error="Error: the sandbox is closed")
            start = time.perf_counter()
            worker = self._worker
            if worker is not None and worker.proc.poll() is not None:  # died between cells
                reason = self._death_reason(worker, None, EOFError("no process"))
                return self._fail(f"the interpreter died after the previous cell ({reason})")
            try:
                self.start()
            except SandboxError as e:
                if self._closing:
                    return CellResult("", error="Error: the sandbox is closed")
                if not self._started_once:
                    raise  # a host problem (configuration, permissions), not the cell's
                return CellResult("", error=f"Error: the interpreter could not be restarted "
                                  f"({e}); try again after a reset", restarted=True)  # fmt: skip
            result = self._run_started(code)
            duration = time.perf_counter() - start
        return dataclasses.replace(result, duration_s=duration)

    def _fail(self, reason: str, *, timed_out: bool = False) -> CellResult:
        self.restarts += 1
        self._kill()
        return CellResult(
            "",
            error=f"Error: {reason}; the interpreter was restarted and its state "
            "(variables, imports) is lost",
            timed_out=timed_out,
            restarted=True,
        )

    def _run_started(self, code: str) -> CellResult:
        lim = self.limits
        worker = self._worker
        assert worker is not None
        if worker.channel.pending():
            return self._fail(
                "the previous cell wrote to the sandbox's control channel (a protocol "
                "violation), so this cell was not run"
            )
        oom_before = self._cgroup.oom_kills() if self._cgroup is not None else None
        worker.signal(signal.SIGCONT)
        cpu_before = self._cpu_seconds(worker)
        cpu_cap = lim.cpu_s + _CPU_GRACE_S

        def watchdog() -> None:
            if self._closing:
                raise _Closing
            used = self._cpu_seconds(worker) - cpu_before
            if used > cpu_cap:
                raise _CpuExceeded(used)

        worker.seq += 1
        deadline = time.monotonic() + lim.wall_s
        stage = "send"
        try:
            worker.channel.send({"seq": worker.seq, "code": code, "cpu_s": lim.cpu_s},
                                deadline, watchdog)  # fmt: skip
            stage = "receive"
            raw = worker.channel.receive(deadline, self._max_reply_bytes(), watchdog)
            reply = validate_reply(raw, worker.seq, max_output_chars=self._max_output_bytes(),
                                   max_error_chars=self._max_error_chars())  # fmt: skip
        except ChannelTimeout:
            if stage == "send":
                return self._fail(
                    f"the interpreter did not accept the cell within the {lim.wall_s:g} s "
                    "wall-time limit (it stopped reading its requests, e.g. because of the "
                    "previous cell) and was killed", timed_out=True,
                )  # fmt: skip
            return self._fail(f"the cell exceeded the {lim.wall_s:g} s wall-time limit and "
                              "was killed", timed_out=True)  # fmt: skip
        except _CpuExceeded as e:
            return self._fail(f"the cell used {e.used:.1f} s of CPU time, over its "
                              f"{lim.cpu_s:g} s CPU-time limit (enforced by the host), "
                              "and was killed")  # fmt: skip
        except _Closing:
            self._kill()
            return CellResult("", error="Error: the sandbox was closed while the cell ran",
                              restarted=True)  # fmt: skip
        except ChannelClosed as e:
            return self._fail(f"the interpreter died ({self._death_reason(worker, oom_before, e)})")
        except ProtocolError as e:
            return self._fail(f"the interpreter's control channel carried an invalid reply "
                              f"(protocol violation: {e})")  # fmt: skip
        trouble = self._after_cell(worker)
        if trouble:
            return self._fail(trouble)
        return self._cell_result(reply)

    def _after_cell(self, worker: _Worker) -> str | None:
        """Pauses the worker and kills every other process of the sandbox."""
        worker.signal(signal.SIGSTOP)
        if worker.proc.poll() is not None:
            return None  # it exited right after answering; the next cell restarts it
        cg = self._cgroup
        if cg is not None and cg.controllers:  # every process of the sandbox is in the group
            ok = cg.kill(keep=worker.pid, timeout_s=5.0)
        elif self.uid is not None:
            ok = kill_uid(self.uid, keep=worker.pid, timeout_s=5.0)
        else:
            ok = self._kill_process_group(worker)
        if not ok:
            return "processes left by the cell could not be killed"
        over = self._workspace_over_quota()
        if over:
            self._kill()
            self._empty_workspace()
            return over
        return None

    def _kill_process_group(self, worker: _Worker) -> bool:
        """Without a uid of its own: the worker's process group, the worker excepted."""
        pgid = worker.proc.pid  # start_new_session: the supervisor leads the group
        for _ in range(200):
            victims = []
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in (worker.pid, worker.proc.pid):
                    stat = proc_stat(int(entry))
                    if stat and len(stat) > 3 and stat[3] == str(pgid) and stat[0] != "Z":
                        victims.append(int(entry))
            if not victims:
                return True
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        return False

    def _death_reason(self, worker: _Worker, oom_before: int | None, error: Exception) -> str:
        """Why the worker died, from what the host can observe (not from the worker)."""
        if self._closing:
            return "the sandbox was closed"
        try:
            code = worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        lim = self.limits
        oom_after = self._cgroup.oom_kills() if self._cgroup is not None else None
        if oom_before is not None and oom_after is not None and oom_after > oom_before:
            return (f"killed by the out-of-memory killer: the sandbox's processes together "
                    f"used up the {lim.memory_mb} MiB memory limit")  # fmt: skip
        if code == -signal.SIGKILL and worker.last_cpu >= lim.cpu_total_s - 1.0:
            return (f"killed by the kernel at the interpreter's total CPU-time limit "
                    f"(cpu_total_s={lim.cpu_total_s} s of CPU)")  # fmt: skip
        if code == -signal.SIGXCPU:
            return ("killed by SIGXCPU: the cell used up its CPU-time limit after turning "
                    "off the exception for it")  # fmt: skip
        if code == -signal.SIGKILL:
            memory = "" if oom_after is not None else " or the system's out-of-memory killer"
            return f"killed by SIGKILL, sent by the cell's own code{memory}"
        if code is not None and code < 0:
            return (f"killed by {_signal_name(-code)}, sent or caused by the cell's own code "
                    "(e.g. a crash of the interpreter or a signal it sent)")  # fmt: skip
        if code == _EXIT_CHANNEL:
            return (f"exit status {code}: it lost its control channel, e.g. the cell closed "
                    "or replaced it")  # fmt: skip
        if code is not None:
            return f"exit status {code}, e.g. the cell called os._exit"
        return str(error)

    def _cell_result(self, reply: dict[str, Any]) -> CellResult:
        limit = self.limits.max_output_chars
        output = reply["output"]
        total = reply["output_bytes"]
        truncated = len(output) > limit or total > len(output.encode("utf-8", "replace"))
        error = reply["error"]
        if error is not None and len(error) > limit:
            half = (limit - 60) // 2  # the head names the exception; the tail ends it
            error = (
                f"{error[:half]}\n[... {len(error) - 2 * half} characters cut ...]\n{error[-half:]}"
            )
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
