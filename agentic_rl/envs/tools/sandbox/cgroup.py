"""Per-sandbox control groups, managed from the host (root only).

One group per controller hierarchy, named `agentic_rl_sandbox_<host pid>_<host start
time>_<uid>` so that a later host can tell a stale one (its owner is dead) from a live
one. What each controller gives the sandbox:

- memory (v1 `memory.limit_in_bytes` (+ `memsw` when present), v2 `memory.max`): one bound
  on the memory of all its processes together, files on its tmpfs mounts included; the
  OOM-kill counter (v1 `memory.oom_control`, v2 `memory.events`) tells the host that a
  death was an out-of-memory kill;
- pids (`pids.max`): the number of tasks (processes and threads) of the sandbox;
- cpu (v1 `cpu.cfs_quota_us`, v2 `cpu.max`): a CPU rate cap (`cpu_cores`);
- cpuacct (v1 `cpuacct.usage`, v2 `cpu.stat`): CPU time of all its tasks, which the host
  reads to enforce the per-cell CPU limit from outside;
- freezer (v1 `freezer.state`, v2 `cgroup.freeze`): lets the host kill every task of the
  group without racing a fork bomb (freeze, SIGKILL all, thaw).

Everything is best effort: a controller that is missing or not writable is simply absent
from `limits` / `controllers`, and the caller reports that.

Imports: stdlib only; never jax.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PREFIX = "agentic_rl_sandbox_"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo() -> list[tuple[str, str, str, str]]:
    """(mount root, mount point, fs type, super options) of every mount of this process."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if sep and len(fields) >= 5 and len(rest) >= 3:
            mounts.append((_unescape(fields[3]), _unescape(fields[4]), rest[0], rest[2]))
    return mounts


def hierarchies() -> dict[str, Path]:
    """controller -> the directory of this process's own cgroup in that hierarchy ("" is
    the cgroup v2 unified hierarchy)."""
    try:
        own_lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    own: dict[str, str] = {}
    for line in own_lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                own[controller.removeprefix("name=")] = parts[2]
    found: dict[str, Path] = {}
    for root, point, fstype, options in mountinfo():
        if fstype == "cgroup2":
            controllers = [""]
        elif fstype == "cgroup":
            controllers = [o.removeprefix("name=") for o in options.split(",")]
        else:
            continue
        for controller in controllers:
            path = own.get(controller)
            if path is None or controller in found:
                continue
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            if rel is not None and not rel.startswith(".."):
                found[controller] = Path(point) / ("" if rel == "." else rel)
    return found


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _read_int(path: Path, key: str | None = None) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        if key is None:
            return int(text.split()[0])
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (ValueError, IndexError):
        return None
    return None


def read_pids(procs_file: Path) -> set[int]:
    try:
        return {int(p) for p in procs_file.read_text().split()}
    except (OSError, ValueError):
        return set()


class SandboxCgroup:
    """The cgroups of one sandbox (see the module docstring).

    `dirs`: the directories created (empty once removed); `limits`: the limits in force, by
    controller ("memory" in bytes, "pids" in tasks, "cpu_cores"); `controllers`: every
    controller the group has, limits or not ("cpuacct", "freezer" ...).
    """

    def __init__(self, name: str, *, memory_bytes: int, max_tasks: int, cpu_cores: float):
        self.name = name
        self.dirs: list[Path] = []
        self.limits: dict[str, float | int] = {}
        self.controllers: dict[str, Path] = {}
        self._v2 = False
        found = hierarchies()
        v1 = {c: p for c, p in found.items() if c in ("memory", "pids", "cpu", "cpuacct",
                                                        "freezer")}  # fmt: skip
        for controller, parent in v1.items():
            self._make(controller, parent / name)
        if "" in found and not {"memory", "pids"} <= set(self.controllers):
            self._v2_setup(found[""], name)
        quota = max(1000, int(cpu_cores * 100_000))
        for controller, path in list(self.controllers.items()):
            if controller == "memory" and not self._v2:
                if _write(path / "memory.limit_in_bytes", str(memory_bytes)):
                    _write(path / "memory.memsw.limit_in_bytes", str(memory_bytes))
                    self.limits["memory"] = memory_bytes
            elif controller == "memory":
                if _write(path / "memory.max", str(memory_bytes)):
                    _write(path / "memory.swap.max", "0")
                    self.limits["memory"] = memory_bytes
            elif controller == "pids":
                if _write(path / "pids.max", str(max_tasks)):
                    self.limits["pids"] = max_tasks
            elif controller == "cpu" and not self._v2:
                if _write(path / "cpu.cfs_period_us", "100000") and _write(
                    path / "cpu.cfs_quota_us", str(quota)
                ):
                    self.limits["cpu_cores"] = cpu_cores
            elif controller == "cpu":
                if _write(path / "cpu.max", f"{quota} 100000"):
                    self.limits["cpu_cores"] = cpu_cores
        for controller in ("memory", "pids"):  # a group without its limit is useless
            if controller in self.controllers and controller not in self.limits:
                del self.controllers[controller]

    def _make(self, controller: str, path: Path) -> None:
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return
        if path not in self.dirs:
            self.dirs.append(path)
        self.controllers[controller] = path

    def _v2_setup(self, parent: Path, name: str) -> None:
        try:
            delegated = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            return
        wanted = [c for c in ("memory", "pids", "cpu") if c in delegated]
        if not wanted:
            return
        path = parent / name
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return
        self._v2 = True
        self.dirs.append(path)
        for controller in [*wanted, "cpuacct", "freezer"]:  # cpu.stat, cgroup.freeze: core
            self.controllers.setdefault(controller, path)

    # -- queries -----------------------------------------------------------------------------

    def procs_files(self) -> list[str]:
        """The cgroup.procs files the worker writes itself into (one per directory)."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        """Every process in the sandbox's groups (host pids)."""
        found: set[int] = set()
        for d in self.dirs:
            found |= read_pids(d / "cgroup.procs")
        return found

    def cpu_seconds(self) -> float | None:
        """CPU time used by all tasks of the group so far (None: not accounted)."""
        path = self.controllers.get("cpuacct")
        if path is None:
            return None
        if self._v2:
            usec = _read_int(path / "cpu.stat", "usage_usec")
            return None if usec is None else usec / 1e6
        ns = _read_int(path / "cpuacct.usage")
        return None if ns is None else ns / 1e9

    def oom_kills(self) -> int | None:
        """How many processes of the group the OOM killer has killed so far."""
        path = self.controllers.get("memory")
        if path is None:
            return None
        if self._v2:
            return _read_int(path / "memory.events", "oom_kill")
        return _read_int(path / "memory.oom_control", "oom_kill")

    @property
    def can_freeze(self) -> bool:
        return "freezer" in self.controllers

    # -- actions -----------------------------------------------------------------------------

    def _set_frozen(self, frozen: bool, timeout_s: float = 2.0) -> bool:
        path = self.controllers.get("freezer")
        if path is None:
            return False
        if self._v2:
            state_file, value = path / "cgroup.freeze", "1" if frozen else "0"
        else:
            state_file, value = path / "freezer.state", "FROZEN" if frozen else "THAWED"
        if not _write(state_file, value):
            return False
        if not frozen or self._v2:
            return True  # v2: cgroup.events "frozen" lags; SIGKILL works on frozen v2 tasks
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if state_file.read_text().strip() == "FROZEN":
                    return True
            except OSError:
                return False
            time.sleep(0.005)
        return False

    def kill(self, keep: int | None = None, timeout_s: float = 5.0) -> bool:
        """SIGKILLs every process of the group but `keep`; True once none is left.

        With a freezer the group is frozen first, so nothing can fork while it is being
        killed (v1: a frozen task dies as soon as it is thawed); without one, kill rounds
        repeat until the group is empty (pids.max bounds how many can appear meanwhile).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.pids() - {keep}:
                return True
            frozen = self._set_frozen(True)
            victims = self.pids() - {keep}
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if frozen or self.can_freeze:
                self._set_frozen(False)
            if not victims:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kills what is left in the groups and removes them (bounded retries)."""
        self.kill(timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        self.dirs = []
        self.controllers = {}


def stale_cgroup_dirs(is_stale, max_depth: int = 6) -> list[Path]:
    """Directories named PREFIX... (in any cgroup hierarchy, at most `max_depth` deep) for
    which `is_stale(name)` is true."""
    points = {Path(p) for _, p, fstype, _ in mountinfo() if fstype in ("cgroup", "cgroup2")}
    found = []
    for top in points:
        stack = [(top, 0)]
        while stack:
            path, depth = stack.pop()
            try:
                entries = list(os.scandir(path))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name.startswith(PREFIX):
                    if is_stale(entry.name):
                        found.append(Path(entry.path))
                elif depth < max_depth:
                    stack.append((Path(entry.path), depth + 1))
    return found


def remove_stale_cgroup(path: Path) -> None:
    """Kills every process of a stale group and removes it (and any child groups)."""
    for d in sorted((Path(r) for r, _, _ in os.walk(path)), key=lambda p: -len(p.parts)):
        state = d / "freezer.state"
        if state.exists():
            _write(state, "THAWED")
        for _ in range(50):
            pids = read_pids(d / "cgroup.procs")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
