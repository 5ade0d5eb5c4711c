"""Host-side system helpers of the code sandbox: /proc, uids, tmpfs mounts, stale cleanup.

Naming: everything a sandbox leaves on the host (its directory under the temporary
directory, its cgroups) is named `agentic_rl_sandbox_<owner pid>_<owner start time>_...`,
where the owner is the host process and its start time (in clock ticks since boot, from
/proc/<pid>/stat) tells it apart from a later process that reuses the pid. At start-up a
sandbox removes those whose owner is dead (`clean_stale_sandboxes`): it kills their
processes, unmounts their workspace and removes their directories and cgroups.

Imports: stdlib and agentic_rl.envs.tools.sandbox.cgroup only; never jax.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from agentic_rl.envs.tools.sandbox.cgroup import PREFIX, mountinfo, remove_stale_cgroup
from agentic_rl.envs.tools.sandbox.cgroup import stale_cgroup_dirs as _stale_cgroup_dirs

UID_BASE, UID_SPAN = 200_000, 1_000_000
MNT_DETACH = 2
MS_NOSUID, MS_NODEV, MS_NOSYMFOLLOW = 2, 4, 256
_NAME = re.compile(rf"^{PREFIX}(\d+)_(\d+)_(\d+|x)(?:_[A-Za-z0-9_]*)?$")


# -- /proc --------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def start_time(pid: int) -> int | None:
    fields = proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def cpu_seconds_of(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (all its threads), plus its reaped children's if asked."""
    fields = proc_stat(pid)
    if not fields:
        return 0.0
    try:
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
    except (IndexError, ValueError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (OSError, ValueError):
        return {}


def processes_of_uid(uid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose real uid is `uid`, from /proc.

    Zombies are skipped: they hold no resources and only wait for their parent to reap
    them (after a sandbox is killed, that parent can be the host's init).
    """
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        fields = _status(int(entry))
        state, uids = fields.get("State", "").split(), fields.get("Uid", "").split()
        if uids and uids[0].isdigit() and int(uids[0]) == uid and state[:1] not in (["Z"], ["X"]):
            pids.append(int(entry))
    return pids


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid`."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields and len(fields) > 2 and fields[2] == str(pid):
                kids.append(int(entry))
    return kids


def task_count(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) of the processes of `uid`."""
    total = 0
    for pid in processes_of_uid(uid):
        try:
            total += int(_status(pid).get("Threads", "1"))
        except ValueError:
            total += 1
    return total


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def kill_uid(uid: int, *, keep: int | None = None, timeout_s: float = 2.0) -> bool:
    """SIGKILLs every process of `uid` but `keep` until none is left (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [p for p in processes_of_uid(uid) if p != keep]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


# -- owner tags and uids ------------------------------------------------------------------------


def owner_tag() -> str:
    """<pid>_<start time> of this process (see the module docstring)."""
    return f"{os.getpid()}_{start_time(os.getpid()) or 0}"


def owner_alive(pid: int, started: int) -> bool:
    if pid == os.getpid():
        return True
    current = start_time(pid)
    return current is not None and (started == 0 or current == started)


_UIDS_IN_USE: set[int] = set()
_UIDS_LOCK = threading.Lock()


def allocate_uid() -> int:
    """A uid for one sandbox: unused by this process's other sandboxes and by any live
    process on the host (so killing "every process of the uid" hits only this sandbox)."""
    with _UIDS_LOCK:
        while True:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            if uid not in _UIDS_IN_USE and not processes_of_uid(uid):
                _UIDS_IN_USE.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    with _UIDS_LOCK:
        _UIDS_IN_USE.discard(uid)


# -- mounts -------------------------------------------------------------------------------------


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(target: Path, *, size_mb: int, inodes: int, uid: int, mode: int = 0o700) -> bool:
    """Mounts a size- and inode-limited tmpfs owned by `uid` at `target` (root only).

    The host's mount is also `nosymfollow` where the kernel has it (5.10+): host code that
    opens a path inside the workspace never follows a symlink the sandbox planted there
    (the sandbox's own view is a separate bind without the flag). Returns whether it is.
    """
    data = f"size={size_mb}m,nr_inodes={inodes},mode={mode:o},uid={uid},gid={uid}".encode()
    libc = _libc()
    for flags in (MS_NOSUID | MS_NODEV | MS_NOSYMFOLLOW, MS_NOSUID | MS_NODEV):
        if libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", ctypes.c_ulong(flags), data) == 0:
            return bool(flags & MS_NOSYMFOLLOW)
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    raise OSError(err, f"mounting a tmpfs on {target}: {os.strerror(err)}")


def unmount(target: Path) -> bool:
    """Lazily unmounts `target` (MNT_DETACH); True if something was unmounted."""
    if _libc().umount2(os.fsencode(target), MNT_DETACH) == 0:
        return True
    return ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = str(path).rstrip("/")
    points = [p for _, p, _, _ in mountinfo() if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(points), key=lambda p: -p.count("/"))


def remove_tree(path: Path, timeout_s: float = 60.0) -> None:
    """Deletes a directory tree; never raises, never recurses without bound (a sandbox can
    leave trees deeper than Python's recursion limit), bounded in time."""
    for point in mounts_under(path):
        unmount(Path(point))
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    try:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)],
                       timeout=timeout_s, capture_output=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass


# -- stale sandboxes ----------------------------------------------------------------------------


def parse_name(name: str) -> tuple[int, int, int | None] | None:
    """(owner pid, owner start time, uid or None) of a sandbox's directory or cgroup name."""
    m = _NAME.match(name)
    if not m:
        return None
    uid = None if m.group(3) == "x" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), uid


def _is_stale(name: str) -> bool:
    parsed = parse_name(name)
    return parsed is not None and not owner_alive(parsed[0], parsed[1])


_CLEAN_LOCK = threading.Lock()


def clean_stale_sandboxes(tmpdir: str | None = None) -> list[str]:
    """Removes what sandboxes of dead host processes left behind; returns what it removed.

    Only names of the form above whose owner (pid + start time) is dead are touched: their
    uid's processes are killed (only uids of the sandbox range), their cgroups emptied and
    removed, their workspace mounts detached and their directories deleted.
    """
    removed: list[str] = []
    if not _CLEAN_LOCK.acquire(blocking=False):
        return removed  # another thread of this process is cleaning right now
    try:
        is_root = os.geteuid() == 0
        base = Path(tmpdir or tempfile.gettempdir())
        try:
            entries = [e for e in os.scandir(base) if e.name.startswith(PREFIX)]
        except OSError:
            entries = []
        for entry in entries:
            parsed = parse_name(entry.name)
            if parsed is None or not _is_stale(entry.name):
                continue
            uid = parsed[2]
            if is_root and uid is not None and UID_BASE <= uid < UID_BASE + UID_SPAN:
                kill_uid(uid)
            remove_tree(Path(entry.path))
            removed.append(entry.path)
        if is_root:
            for path in _stale_cgroup_dirs(_is_stale):
                parsed = parse_name(path.name)
                if parsed and parsed[2] is not None and UID_BASE <= parsed[2] < UID_BASE + UID_SPAN:
                    kill_uid(parsed[2])
                remove_stale_cgroup(path)
                removed.append(str(path))
    finally:
        _CLEAN_LOCK.release()
    return removed
