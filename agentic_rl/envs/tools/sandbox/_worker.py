"""The code-sandbox worker: a persistent Python process that runs notebook-style cells.

This file is executed as a script (`python -I -S _worker.py`) by
`agentic_rl.envs.tools.sandbox.sandbox`; it imports only the standard library because it runs
before (and after) the file system is narrowed to a few read-only directories. Its
configuration arrives as the first frame on the control channel (fd 0, a Unix socket),
never on the command line, which other users can read in /proc.

The process started by the host is the supervisor (trusted; it never runs cell code):
it creates the namespaces (unshare(2): mount, net, ipc, uts, and pid for its child),
forks the worker, tells the host the worker's pid, closes its own copy of the control
socket, and waits. It exits the way the worker did (the same signal, re-raised on
itself, or the same exit code), so the host learns the real cause of a death; and when
the "lifeline" pipe from the host reaches EOF (the host died), it kills the worker
(with a pid namespace, that kills every process of the sandbox) and the sandbox's cgroups.

The worker's start-up, in order (trusted code, before any model-written code runs):
1. point fds 0/1 at /dev/null (the socket is kept as a private fd); fd 2 stays the
   start-up diagnostics pipe until the set-up is done;
2. join the sandbox's cgroups (made by the host) while still root;
3. if asked (`isolate`), as pid 1 of the new pid namespace: build a new root on a tmpfs
   with read-only binds of the interpreter and system libraries, a size- and
   inode-limited /tmp, a minimal /dev, a fresh /proc, and the workspace at /workspace;
   then `chroot` into it. If asked for `private_mounts` instead (the rlimits mode, as
   root): a private mount namespace with size-limited tmpfs over the host's
   world-writable directories (/tmp, /var/tmp, /dev/shm, /run/lock; the workspace and
   the interpreter are bound back at their paths) and /proc remounted with
   hidepid=invisible (no other user's processes are visible);
4. drop to the sandbox's own unprivileged uid/gid (no capabilities remain, so the chroot
   cannot be escaped and mounts cannot be changed); PR_SET_PDEATHSIG; join a new session
   keyring;
5. set hard resource limits, PR_SET_NO_NEW_PRIVS, and a seccomp filter that refuses
   keyrings, io_uring, ptrace, bpf, perf, userfaultfd, mounts, namespaces (setns, new
   user namespaces; clone3 answers ENOSYS so that libc falls back to the filtered clone),
   kexec/modules and other administrative calls, and every syscall of a foreign ABI;
6. report the protections actually applied, then serve cells.

Per cell: stdout/stderr (also of child processes) go to an anonymous memory file that is
capped by RLIMIT_FSIZE; the soft CPU limit is re-armed so an over-long cell gets a
`CpuTimeExceeded` exception (state is kept). All of this is a courtesy: the cell runs in
this interpreter and can undo any of it, so the host enforces the real limits from
outside (cgroups, hard rlimits, its own clocks, killing stray processes, stopping the
worker between cells) and treats every reply as untrusted.

Imports: stdlib only, never agentic_rl: it runs as a script by path (`python -I -S`),
outside the package and inside the sandbox. It stays one file over 400 lines: it is run
by path as a single script, so it cannot import siblings.
"""

import ast
import ctypes
import errno
import json
import math
import os
import platform
import resource
import signal
import struct
import sys
import traceback

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
_HEADER = struct.Struct(">I")
_MAX_REQUEST = 8 << 20
EXIT_SETUP, EXIT_CHANNEL = 70, 71


class CpuTimeExceeded(BaseException):
    """Raised in the cell when it used up its CPU-time budget (from SIGXCPU)."""


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _mount(src, target, fstype, flags, data=None):
    libc = _libc()
    args = [
        src.encode() if src else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    ]
    if libc.mount(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {target} failed: {os.strerror(err)}")


def _bind(src, target, *, readonly, is_file=False):
    """Bind-mounts `src` at `target` (created first), then remounts it nosuid/nodev(/ro)."""
    if is_file:
        with open(target, "w"):
            pass
    else:
        os.makedirs(target, exist_ok=True)
    _mount(src, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (MS_RDONLY if readonly else 0)
    if not src.startswith("/dev/"):
        flags |= MS_NODEV
    _mount(None, target, None, flags)


def _tmpfs(target, cfg, mode="1777"):
    data = f"size={cfg['tmp_mb']}m,nr_inodes={cfg['tmp_inodes']},mode={mode}"
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)


def _build_root(cfg):
    """Builds the sandbox's file system under cfg["root"] and chroots into it."""
    root = cfg["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    # /tmp first: the interpreter or its site-packages may themselves live under /tmp
    # (a virtualenv in a CI checkout), and their binds must land inside this tmpfs
    # rather than be hidden by it.
    os.makedirs(root + "/tmp")
    _tmpfs(root + "/tmp", cfg)
    for path in cfg["ro_paths"]:
        if not os.path.lexists(path):
            continue
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path) and path.count("/") == 1:  # merged-/usr links: /bin -> usr/bin
            os.symlink(os.readlink(path), target)
        else:
            _bind(path, target, readonly=True, is_file=os.path.isfile(path))
    os.makedirs(root + "/dev")
    for dev in ("null", "zero", "random", "urandom"):
        _bind("/dev/" + dev, f"{root}/dev/{dev}", readonly=False, is_file=True)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _bind(cfg["workdir"], root + "/workspace", readonly=False)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.chroot(root)
    os.chdir("/workspace")
    _libc().sethostname(b"sandbox", 7)


_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def _private_mounts(cfg):
    """The rlimits mode's file-system protections (see the module docstring)."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = [(cfg["workdir"], False)] + [(p, True) for p in cfg["ro_paths"]]
    covered = []
    for top in _WORLD_WRITABLE:
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        inside = [(p, ro) for p, ro in keep if p.startswith(top + "/") and os.path.exists(p)]
        handles = [(os.open(p, os.O_PATH | os.O_CLOEXEC), p, ro) for p, ro in inside]
        _tmpfs(top, cfg)
        for fd, path, readonly in handles:
            is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
            os.makedirs(path if is_dir else os.path.dirname(path), exist_ok=True)
            if not is_dir:
                open(path, "w").close()
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            if readonly:
                _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)
        covered.append(top)
    hidepid = None
    for option in ("hidepid=invisible", "hidepid=2"):
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, option)
            hidepid = option
            break
        except OSError:
            continue
    try:  # the host's workspace mount is nosymfollow; the sandbox's own view is not
        _mount(None, cfg["workdir"], None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)
    except OSError:
        pass  # not a mount point (no tmpfs workspace)
    os.chdir(cfg["workdir"])
    return {"private_tmp": covered, "proc": hidepid}


def _drop_privileges(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _set_limits(cfg):
    mb = 1 << 20
    limits = {
        resource.RLIMIT_AS: cfg["memory_mb"] * mb,
        resource.RLIMIT_FSIZE: cfg["file_mb"] * mb,
        resource.RLIMIT_NOFILE: cfg["max_open_files"],
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: cfg["cpu_total_s"],
        resource.RLIMIT_MSGQUEUE: 0,
        resource.RLIMIT_MEMLOCK: 0,
    }
    if cfg["nproc"] is not None:
        limits[resource.RLIMIT_NPROC] = cfg["nproc"]
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))


# -- seccomp ------------------------------------------------------------------------------------

_BLOCKED = (
    "keyctl add_key request_key io_uring_setup io_uring_enter io_uring_register ptrace "
    "process_vm_readv process_vm_writev bpf perf_event_open userfaultfd setns mount umount2 "
    "pivot_root chroot fsopen fsconfig fsmount fspick move_mount open_tree mount_setattr "
    "kexec_load kexec_file_load init_module finit_module delete_module acct swapon swapoff "
    "reboot quotactl open_by_handle_at lookup_dcookie iopl ioperm"
).split()
_X86_64 = dict(
    keyctl=250, add_key=248, request_key=249, io_uring_setup=425, io_uring_enter=426,
    io_uring_register=427, ptrace=101, process_vm_readv=310, process_vm_writev=311, bpf=321,
    perf_event_open=298, userfaultfd=323, setns=308, mount=165, umount2=166, pivot_root=155,
    chroot=161, fsopen=430, fsconfig=431, fsmount=432, fspick=433, move_mount=429,
    open_tree=428, mount_setattr=442, kexec_load=246, kexec_file_load=320, init_module=175,
    finit_module=313, delete_module=176, acct=163, swapon=167, swapoff=168, reboot=169,
    quotactl=179, open_by_handle_at=304, lookup_dcookie=212, iopl=172, ioperm=173,
    clone=56, unshare=272, clone3=435,
)  # fmt: skip
_AARCH64 = dict(
    keyctl=219, add_key=217, request_key=218, io_uring_setup=425, io_uring_enter=426,
    io_uring_register=427, ptrace=117, process_vm_readv=270, process_vm_writev=271, bpf=280,
    perf_event_open=241, userfaultfd=282, setns=268, mount=40, umount2=39, pivot_root=41,
    chroot=51, fsopen=430, fsconfig=431, fsmount=432, fspick=433, move_mount=429,
    open_tree=428, mount_setattr=442, kexec_load=104, kexec_file_load=294, init_module=105,
    finit_module=273, delete_module=106, acct=89, swapon=224, swapoff=225, reboot=142,
    quotactl=60, open_by_handle_at=265, lookup_dcookie=18, clone=220, unshare=97, clone3=435,
)  # fmt: skip
# machine -> (AUDIT_ARCH_*, syscall numbers, x32 ABI present)
_ARCHES = {"x86_64": (0xC000003E, _X86_64, True), "aarch64": (0xC00000B7, _AARCH64, False)}
_SYSCALL_NR = {"x86_64": {"keyctl": 250}, "aarch64": {"keyctl": 219}}


def _seccomp_program(machine):
    """A classic-BPF seccomp program for `machine` (see the module docstring)."""
    audit_arch, nrs, x32 = _ARCHES[machine]
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno_ret = 0x7FFF0000, 0x00050000

    def op(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)

    prog = [
        op(ld_abs, 4),  # seccomp_data.arch
        op(jeq, audit_arch, 1, 0),
        op(ret, errno_ret | errno.ENOSYS),  # a foreign ABI (e.g. i386 via int 0x80)
        op(ld_abs, 0),  # seccomp_data.nr
    ]
    if x32:  # the x32 ABI: the same calls under other numbers
        prog += [op(jge, 0x40000000, 0, 1), op(ret, errno_ret | errno.ENOSYS)]
    for name in _BLOCKED:
        if name in nrs:
            prog += [op(jeq, nrs[name], 0, 1), op(ret, errno_ret | errno.EPERM)]
    prog += [
        op(jeq, nrs["clone3"], 0, 1),  # flags live in a struct a filter cannot read
        op(ret, errno_ret | errno.ENOSYS),
        op(jeq, nrs["clone"], 1, 0),
        op(jeq, nrs["unshare"], 0, 3),
        op(ld_abs, 16),  # low 32 bits of args[0] (flags; little-endian)
        op(jset, CLONE_NEWUSER, 0, 1),
        op(ret, errno_ret | errno.EPERM),
        op(ret, allow),
    ]
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp():
    """Installs the filter; returns what was done (reported to the host)."""
    machine = platform.machine()
    if machine not in _ARCHES or sys.byteorder != "little":
        return {"applied": False, "reason": f"no syscall table for {machine}"}
    libc = _libc()
    prog = _seccomp_program(machine)
    buf = ctypes.create_string_buffer(b"".join(prog))
    fprog = _SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        return {"applied": False, "reason": f"prctl(PR_SET_SECCOMP): {os.strerror(err)}"}
    blocked = [n for n in _BLOCKED if n in _ARCHES[machine][1]]
    return {"applied": True, "blocked": blocked + ["clone3", "CLONE_NEWUSER"]}


def _new_session_keyring():
    """Joins a new anonymous session keyring: the host's session keyring (inherited across
    fork) is no longer possessed, so its keys are out of reach even without seccomp."""
    nr = _SYSCALL_NR.get(platform.machine(), {}).get("keyctl")
    if nr is None:
        return False
    return _libc().syscall(nr, 1, None) >= 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous


# -- per-cell CPU limit (a courtesy: the host enforces its own) --------------------------------


def _arm_cpu_limit(seconds):
    """Sets the soft CPU limit `seconds` past the CPU time used so far (hard limit unchanged)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(used + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))


_IN_CELL = [False]


def _on_sigxcpu(signum, frame):
    if _IN_CELL[0]:  # outside a cell (the worker's own code) the signal is ignored
        raise CpuTimeExceeded("the cell used up its CPU-time limit")


def _disarm_cpu_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


# -- the control channel ------------------------------------------------------------------------


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = _os_read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _receive(fd):
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    if size > _MAX_REQUEST:
        raise ValueError(f"request of {size} bytes is too large")
    return json.loads(_read_exact(fd, size))


def _send(fd, obj):
    data = json.dumps(obj).encode()  # ASCII: lone surrogates travel as \\ud800 escapes
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[_os_write(fd, view) :]


# The worker's own references to what it uses, so that a cell that rebinds `os.kill`,
# `os.read` ... in the shared `os` module does not break the worker by accident (a cell
# that means to can still reach these; the host does not rely on any of it).
_os_kill, _os_waitpid, _os_read, _os_write = os.kill, os.waitpid, os.read, os.write
_os_dup2, _os_exit, _os_getpid = os.dup2, os._exit, os.getpid
_os_ftruncate, _os_lseek, _os_fstat = os.ftruncate, os.lseek, os.fstat


def _shorten(text, limit):
    """The head (where the exception's type is) and the tail of an over-long text."""
    if len(text) <= limit:
        return text
    half = (limit - 60) // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _reap():
    while True:
        try:
            pid, _ = _os_waitpid(-1, os.WNOHANG)
        except OSError:
            return
        if pid == 0:
            return


class Worker:
    """Serves cells over the control socket. `kill_others`: after each cell, SIGKILL every
    other process this worker may signal, which is safe only when that means the sandbox
    alone (pid 1 of its own namespace, or a uid of its own)."""

    def __init__(self, cfg, proto, devnull, kill_others):
        self.cfg, self.proto = cfg, proto
        self.devnull, self.kill_others = devnull, kill_others
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.pid = os.getpid()
        self.seq = 0
        self.out_fd = self._output_file()

    def _output_file(self):
        if hasattr(os, "memfd_create"):
            return os.memfd_create("cell-output", 0)
        import tempfile

        return tempfile.TemporaryFile(dir="/tmp").detach().fileno()

    def serve(self):
        while True:
            try:
                request = _receive(self.proto)
            except (EOFError, OSError):
                return
            self.seq = request["seq"]
            reply = self.run_cell(request["code"], request["cpu_s"])
            reply["seq"] = self.seq
            try:
                _send(self.proto, reply)
            except OSError:  # the cell closed or replaced the control socket
                _os_exit(EXIT_CHANNEL)

    # -- one cell --------------------------------------------------------------------------

    def run_cell(self, code, cpu_s):
        _reap()
        _os_ftruncate(self.out_fd, 0)
        _os_lseek(self.out_fd, 0, os.SEEK_SET)
        _os_dup2(self.out_fd, 1)
        _os_dup2(self.out_fd, 2)
        error = None
        try:
            _arm_cpu_limit(cpu_s)
            _IN_CELL[0] = True
            self._execute(code)
        except BaseException as e:  # noqa: BLE001 - everything the cell does is reported
            try:
                error = self._format_error(e)
            except BaseException as e2:  # noqa: BLE001 - e.g. a recursion error while formatting
                error = f"{type(e).__name__} (the traceback could not be formatted: {e2!r:.200})"
        finally:
            _IN_CELL[0] = False
            if _os_getpid() != self.pid:  # a forked child of the cell must never answer
                _os_exit(1)
            _disarm_cpu_limit()
        self._flush()
        self._cleanup_processes()
        if error is not None:
            error = _shorten(error, self.cfg["max_error_chars"])
        return {"error": error, **self._read_output()}

    def _execute(self, code):
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), self.namespace)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), self.namespace)
            if value is not None:
                print(repr(value))

    def _format_error(self, e):
        if isinstance(e, SyntaxError):
            return "".join(traceback.format_exception_only(type(e), e))
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        report = traceback.TracebackException(type(e), e, tb)
        report.stack = traceback.StackSummary.from_list(
            [frame for frame in report.stack if frame.filename != __file__]
        )
        return "".join(report.format())

    def _flush(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - e.g. the output file hit its size limit
                pass
        _os_dup2(self.devnull, 1)
        _os_dup2(self.devnull, 2)

    def _cleanup_processes(self):
        """Kills every other process of the sandbox (the host does it again from outside,
        whatever the cell did to this code) and reaps, never blocking: what the host kills
        is reaped here before the next cell."""
        if self.kill_others:
            try:
                _os_kill(-1, signal.SIGKILL)
            except OSError:
                pass
        _reap()

    def _read_output(self):
        total = _os_fstat(self.out_fd).st_size
        limit = self.cfg["max_output_bytes"]
        _os_lseek(self.out_fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < min(total, limit):
            chunk = _os_read(self.out_fd, min(total, limit) - len(data))
            if not chunk:
                break
            data += chunk
        return {"output": data.decode("utf-8", "replace"), "output_bytes": total}


def _std_streams(devnull):
    """Line-buffered text streams on fds 1/2 that write straight through to the fd."""
    import io

    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(
            raw, encoding="utf-8", errors="backslashreplace", write_through=True
        )
        setattr(sys, name, stream)
    sys.stdin = io.TextIOWrapper(io.FileIO(devnull, "r", closefd=False), encoding="utf-8")


def _setup(cfg, applied):
    for procs in cfg["cgroup_procs"]:  # join the sandbox's cgroups while still root
        with open(procs, "w") as f:
            f.write("0")
    applied["cgroups_joined"] = len(cfg["cgroup_procs"])
    if cfg["isolate"]:
        if os.getpid() != 1:
            raise RuntimeError("isolation requested but the worker is not pid 1 of a namespace")
        _build_root(cfg)
        applied["chroot"] = True
    elif cfg["private_mounts"]:
        applied["mount_namespace"] = _private_mounts(cfg)
    else:
        os.chdir(cfg["workdir"])
    if cfg["uid"] is not None:
        _drop_privileges(cfg["uid"], cfg["gid"])
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # cleared by the uid change
    applied["session_keyring"] = _new_session_keyring()
    _set_limits(cfg)
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    applied["no_new_privs"] = True
    if cfg["seccomp"]:
        applied["seccomp"] = _install_seccomp()
    else:
        applied["seccomp"] = {"applied": False, "reason": "disabled by the host"}


def _exit_like(status):
    """Exits the way the worker did: the same signal (re-raised on itself) or exit code."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL cannot be caught anyway
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default action is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))


def _kill_sandbox(pid, cfg):
    """The host is gone: kill the worker (the init of its pid namespace, if any) and every
    process of the sandbox's cgroups."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    if cfg.get("freezer_state"):
        try:
            with open(cfg["freezer_state"], "w") as f:
                f.write("THAWED")
        except OSError:
            pass
    for procs in cfg["cgroup_procs"]:
        try:
            with open(procs) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
        for victim in pids:
            try:
                os.kill(victim, signal.SIGKILL)
            except OSError:
                pass


def _supervise(pid, lifeline, cfg):
    """Waits for the worker; kills the sandbox if the lifeline (the host) goes away."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    poller = select.poll()
    poller.register(lifeline, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    watching = True
    while True:
        events = poller.poll(None if pidfd is not None else 100)
        if watching and any(fd == lifeline for fd, _ in events):
            _kill_sandbox(pid, cfg)
            if not cfg["isolate"] and cfg["uid"] is None:  # no namespace, cgroup or uid:
                os.killpg(0, signal.SIGKILL)  # the process group, this supervisor included
            poller.unregister(lifeline)
            watching = False
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status


# CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
_NAMESPACES = 0x00020000 | 0x40000000 | 0x08000000 | 0x04000000 | 0x20000000


def _probe():
    """Exit 0 if this host can make the namespaces (run by `namespaces_available`)."""
    if _libc().unshare(_NAMESPACES) != 0:
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 1)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status))


def main():
    if sys.argv[1:] == ["--probe"]:
        _probe()
    proto = os.dup(0)  # os.dup makes a non-inheritable copy
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    try:
        cfg = _receive(proto)
    except (EOFError, OSError, ValueError):
        os._exit(EXIT_SETUP)
    lifeline = cfg["lifeline_fd"]
    try:
        if cfg["isolate"]:  # new namespaces for the worker (pid: for its children only)
            if _libc().unshare(_NAMESPACES) != 0:
                raise OSError(ctypes.get_errno(), "unshare(namespaces) failed")
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
        sync_r, sync_w = os.pipe()
        pid = os.fork()
    except BaseException as e:  # noqa: BLE001 - reported to the host, which raises
        sys.stderr.write(f"sandbox supervisor failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(EXIT_SETUP)
    if pid == 0:
        os.close(sync_w)
        os.close(lifeline)
        os.read(sync_r, 1)  # the supervisor's frame is on the channel before the worker's
        os.close(sync_r)
        _worker_main(cfg, proto, devnull)
        os._exit(0)
    os.close(sync_r)
    try:
        _send(proto, {"seq": 0, "worker_pid": pid})
    except OSError:
        _kill_sandbox(pid, cfg)
    os.close(proto)  # only the worker holds the channel: its death is an EOF for the host
    os.write(sync_w, b"x")
    os.close(sync_w)
    os.dup2(devnull, 2)
    _exit_like(_supervise(pid, lifeline, cfg))


def _worker_main(cfg, proto, devnull):
    applied = {"pid_namespace": os.getpid() == 1}
    try:
        _setup(cfg, applied)
    except BaseException as e:  # noqa: BLE001 - reported to the host, which raises
        sys.stderr.write(f"sandbox setup failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(EXIT_SETUP)
    os.dup2(devnull, 2)  # the start-up diagnostics pipe is closed from here on
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes fail with EFBIG instead
    sys.path[:] = [p for p in sys.path if p] + list(cfg["python_paths"])
    _std_streams(devnull)
    kill_others = applied["pid_namespace"] or cfg["uid"] is not None
    worker = Worker(cfg, proto, devnull, kill_others)
    applied.update(uid=os.getuid(), gid=os.getgid(), cwd=os.getcwd())
    applied["limits"] = {
        name: resource.getrlimit(getattr(resource, name))
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    }
    try:
        _send(proto, {"seq": 0, "ready": True, "applied": applied})
    except OSError:
        os._exit(EXIT_CHANNEL)
    worker.serve()


if __name__ == "__main__":
    main()
