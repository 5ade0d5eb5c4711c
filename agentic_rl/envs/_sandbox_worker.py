"""The code-sandbox worker: a persistent Python process that runs notebook-style cells.

This file is executed as a script (`python -I -S _sandbox_worker.py CONFIG_JSON`) by
`agentic_rl.envs.code_sandbox`; it imports only the standard library because it runs
before (and after) the file system is narrowed to a few read-only directories.

Start-up, in order (each step is trusted code, before any model-written code runs):
1. keep private copies of the protocol pipes (fds 0/1) and point 0/1/2 elsewhere;
2. if asked (`isolate`), and running as pid 1 of fresh pid/mount/net/ipc/uts namespaces
   made by `unshare(1)`: build a new root on a tmpfs with read-only binds of the
   interpreter and system libraries, a private /tmp, a minimal /dev, a fresh /proc, and
   the episode's directory at /workspace; then `chroot` into it;
3. drop to the sandbox's own unprivileged uid/gid (no capabilities remain, so the chroot
   cannot be escaped and mounts cannot be changed);
4. set resource limits; report the protections actually applied; serve cells.

Per cell: stdout/stderr (also of child processes) go to an anonymous memory file that is
capped by RLIMIT_FSIZE; the soft CPU limit is re-armed so an over-long cell gets a
`CpuTimeExceeded` exception (state is kept), and the hard limit kills the worker. After
each cell every other process of the sandbox is killed, so nothing outlives a cell.
"""

import ast
import ctypes
import json
import math
import os
import resource
import signal
import struct
import sys
import traceback

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_HEADER = struct.Struct(">I")
_MAX_REQUEST = 8 << 20


class CpuTimeExceeded(BaseException):
    """Raised in the cell when it used up its CPU-time budget (from SIGXCPU)."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


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


def _build_root(cfg):
    """Builds the sandbox's file system under cfg["root"] and chroots into it."""
    root = cfg["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    # /tmp first: the interpreter or its site-packages may themselves live under /tmp
    # (a virtualenv in a CI checkout), and their binds must land inside this tmpfs
    # rather than be hidden by it.
    os.makedirs(root + "/tmp")
    _mount(
        "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmp_mb']}m,mode=1777"
    )
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
    }
    if cfg["nproc"] is not None:
        limits[resource.RLIMIT_NPROC] = cfg["nproc"]
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))


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


class Worker:
    """Serves cells over the protocol pipes. `kill_others`: after each cell, SIGKILL every
    other process this worker may signal, which is safe only when that means the sandbox
    alone (pid 1 of its own namespace, or a uid of its own)."""

    def __init__(self, cfg, proto_in, proto_out, devnull, kill_others):
        self.cfg, self.proto_in, self.proto_out = cfg, proto_in, proto_out
        self.devnull, self.kill_others = devnull, kill_others
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.pid = os.getpid()
        self.out_fd = self._output_file()

    def _output_file(self):
        if hasattr(os, "memfd_create"):
            return os.memfd_create("cell-output", 0)
        import tempfile

        return tempfile.TemporaryFile(dir="/tmp").detach().fileno()

    def send(self, obj):
        data = json.dumps(obj).encode()
        os.write(self.proto_out, _HEADER.pack(len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(self.proto_out, view) :]

    def _read_exact(self, n):
        chunks = []
        while n:
            chunk = os.read(self.proto_in, n)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def receive(self):
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size))
        if size > _MAX_REQUEST:
            raise ValueError(f"request of {size} bytes is too large")
        return json.loads(self._read_exact(size))

    def serve(self):
        while True:
            try:
                request = self.receive()
            except EOFError:
                return
            self.send(self.run_cell(request["code"], request["cpu_s"]))

    # -- one cell --------------------------------------------------------------------------

    def run_cell(self, code, cpu_s):
        os.ftruncate(self.out_fd, 0)
        os.lseek(self.out_fd, 0, os.SEEK_SET)
        os.dup2(self.out_fd, 1)
        os.dup2(self.out_fd, 2)
        error = None
        try:
            _arm_cpu_limit(cpu_s)
            _IN_CELL[0] = True
            self._execute(code)
        except BaseException as e:  # noqa: BLE001 - everything the cell does is reported
            error = self._format_error(e)
        finally:
            _IN_CELL[0] = False
            if os.getpid() != self.pid:  # a forked child of the cell must never answer
                os._exit(1)
            _disarm_cpu_limit()
        self._flush()
        self._cleanup_processes()
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
        os.dup2(self.devnull, 1)
        os.dup2(self.devnull, 2)

    def _cleanup_processes(self):
        """Kills every other process of the sandbox and reaps what it can."""
        if self.kill_others:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if not self.kill_others:
                    break
                os.waitpid(-1, 0)

    def _read_output(self):
        total = os.fstat(self.out_fd).st_size
        limit = self.cfg["max_output_bytes"]
        os.lseek(self.out_fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < min(total, limit):
            chunk = os.read(self.out_fd, min(total, limit) - len(data))
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


def main():
    cfg = json.loads(sys.argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)  # os.dup makes non-inheritable copies
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    applied = {"pid_namespace": os.getpid() == 1}
    try:
        for procs in cfg["cgroup_procs"]:  # join the sandbox's cgroups while still root
            with open(procs, "w") as f:
                f.write("0")
        applied["cgroups_joined"] = len(cfg["cgroup_procs"])
        if cfg["isolate"]:
            if os.getpid() != 1:
                raise RuntimeError("isolation requested but the worker is not pid 1 of a namespace")
            _build_root(cfg)
            applied["chroot"] = True
        else:
            os.chdir(cfg["workdir"])
        if cfg["uid"] is not None:
            _drop_privileges(cfg["uid"], cfg["gid"])
        _set_limits(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the host, which raises
        sys.stderr.write(f"sandbox setup failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(70)
    os.dup2(devnull, 2)  # the start-up diagnostics pipe is closed from here on
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes fail with EFBIG instead
    sys.path[:] = [p for p in sys.path if p] + list(cfg["python_paths"])
    _std_streams(devnull)
    kill_others = applied["pid_namespace"] or cfg["uid"] is not None
    worker = Worker(cfg, proto_in, proto_out, devnull, kill_others)
    applied.update(uid=os.getuid(), gid=os.getgid(), cwd=os.getcwd())
    applied["limits"] = {
        name: resource.getrlimit(getattr(resource, name))
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    }
    worker.send({"ready": True, "applied": applied})
    worker.serve()


if __name__ == "__main__":
    main()
