"""File tools confined to one directory: `list_files`, `read_file`, `write_file`, and
`search_files` (a grep-like literal search, `search_files_tool`).

Every path comes from the policy, so paths are checked as data, never trusted. Refused:
absolute paths (`/x`, `\\x`, `~x`, `C:x`), `..` components, NUL bytes, lone surrogates,
control and formatting characters (newlines, escapes, bidi overrides, zero-width
characters), names whose NFKC form would introduce `..`, `/` or `\\` (fullwidth dots and
slashes, dot leaders), slash lookalikes that NFKC keeps (division slash, ...), paths
over `max_path_chars` characters, components over 255 bytes, and more than `max_depth`
levels.

Resolution never goes through a path string. The root directory is opened and checked
to be the same inode (device and inode number) it was at construction, so a root moved
or replaced by a symlink is refused. Each component is then opened relative to the
previous directory's file descriptor with `O_NOFOLLOW` (and `O_DIRECTORY`), so a symlink
anywhere on the path, or a directory swapped for one between a check and the use, cannot
redirect an access; every directory must be on the root's file system (no mount points,
e.g. a bind-mounted /proc). The final name is `lstat`ed relative to its directory and
must be a regular file before it is opened (FIFOs, sockets and devices are never
opened, so nothing blocks or has open side effects); it is opened with `O_NOFOLLOW`,
`O_NONBLOCK`, `O_NOCTTY` and `O_CLOEXEC` for reading and re-checked on the opened inode,
before and after the read: a regular file, on the root's file system, with exactly one
hard link (a hard link names a file that may live outside the root), still the inode the
name resolves to. Writes never open an existing inode: they fill a new file created
with `O_EXCL` and rename it over the name, so a name swapped for a hard link, FIFO or
directory between a check and the write cannot redirect it, and a refused write changes
nothing.

Bounds: a read returns at most `max_read_chars` characters from at most
`4 * max_read_chars + 4` bytes read (files of any size, sparse or not, cost the same);
paging offsets are exact byte offsets even in binary files (undecodable bytes show as
U+FFFD); one write is at most `max_file_bytes` and all writes of one `ConfinedFiles`
at most `max_total_bytes`; the root holds at most `max_files` entries (counted with an
early stop, so a huge tree costs at most `max_files` entries of work); a listing shows
at most `max_list_entries` names, sorted among the first `max_list_scan` entries read
(an enormous directory is never read in full). A search opens every file through the
same checks as `read_file` (links, special files and multi-linked files are skipped),
reads at most `4 * max_read_chars + 4` bytes of each, visits at most
`max_search_files` files in sorted order and reports at most `max_search_matches`
lines of at most `max_search_line_chars` characters. Names in listings are shown with
`repr`-style escapes when they hold undecodable bytes or control characters, so an
observation is always valid Unicode and one line per entry. Case is significant, as
on the Linux file systems this runs on.

Imports: stdlib and agentic_rl.envs.tools.base only; never jax. One cohesive module over
400 lines: every operation goes through the same confinement checks.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import stat
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from agentic_rl.envs.tools.base import Tool, ToolExecutionError, require_positive

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | _CLOEXEC
_NAME_MAX_BYTES = 255
# Control (Cc), format (Cf: bidi overrides, zero-width), surrogate, line/paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
# Slash lookalikes that NFKC leaves alone (division/fraction slash, big solidus, set minus, ...).
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f5\u29f9\u2216")


class PathRefused(ToolExecutionError):
    """A path the policy may not use; the message says why."""


def _refuse_os_errors(op):
    """Any `OSError` an operation did not turn into a precise refusal becomes a
    `PathRefused`: the working directory is shared with the policy's own code (and its
    races), so a name or directory vanishing mid-operation is the policy's doing, and the
    tool answers it like any refused path instead of crashing the episode."""

    @functools.wraps(op)
    def wrapped(self, *args, **kwargs):
        try:
            return op(self, *args, **kwargs)
        except PathRefused:
            raise
        except OSError as e:
            raise PathRefused(
                f"{op.__name__} failed: {e.strerror or e} (the working directory changed "
                "while it was being used)"
            ) from None

    return wrapped


@dataclass(frozen=True)
class FsLimits:
    max_path_chars: int = 255
    max_depth: int = 16
    max_read_chars: int = 8000
    max_file_bytes: int = 1 << 20
    max_total_bytes: int = 8 << 20
    max_files: int = 200
    max_list_entries: int = 200
    max_list_scan: int = 10_000
    max_search_matches: int = 20
    max_search_files: int = 2000
    max_search_line_chars: int = 200

    def __post_init__(self):
        require_positive(self)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_shape(path: str, shown: str, limits: FsLimits) -> list[str]:
    """The components of `path`, refusing absolute paths, '..' and over-deep nesting."""
    if path.startswith(("/", "\\", "~")) or (len(path) > 1 and path[1] == ":"):
        raise PathRefused(f"absolute paths are not allowed: {shown}; use a relative path")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"'..' is not allowed in paths: {shown}")
    if len(parts) > limits.max_depth:
        raise PathRefused(f"path is nested too deeply (more than {limits.max_depth} levels)")
    return parts


def split_relative_path(path: str, limits: FsLimits) -> list[str]:
    """The components of a relative path inside the root, or `PathRefused` naming the problem.

    "" and "." mean the root itself (an empty list).
    """
    if not isinstance(path, str):
        raise PathRefused(f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise PathRefused("path contains a NUL character")
    if not _encodable(path):
        raise PathRefused("path is not valid Unicode (it contains a lone surrogate)")
    if len(path) > limits.max_path_chars:
        raise PathRefused(f"path is too long ({len(path)} > {limits.max_path_chars} characters)")
    shown = repr(path[:80])
    bad = next((c for c in path if unicodedata.category(c) in _BAD_CATEGORIES), None)
    if bad is not None:
        raise PathRefused(
            f"path contains a control or formatting character (U+{ord(bad):04X}): {shown}"
        )
    if any(c in _SLASH_LOOKALIKES for c in path):
        raise PathRefused(f"path looks like it has another separator (a slash lookalike): {shown}")
    parts = _check_shape(path, shown, limits)
    folded = unicodedata.normalize("NFKC", path)
    if folded != path:
        try:
            folded_parts = _check_shape(folded, shown, limits)
        except PathRefused as e:
            raise PathRefused(f"path looks like another path after Unicode folding: {e}") from None
        if len(folded_parts) != len(parts):
            raise PathRefused(f"path looks like it has another number of components: {shown}")
    for part in parts:
        if len(part.encode("utf-8")) > _NAME_MAX_BYTES:
            raise PathRefused(
                f"a path component is too long (over {_NAME_MAX_BYTES} bytes): {part[:40]!r}..."
            )
    return parts


def display_name(name: str) -> str:
    """A directory entry's name as one line of valid Unicode (escaped with repr if needed)."""
    if _encodable(name) and all(unicodedata.category(c) not in _BAD_CATEGORIES for c in name):
        return name
    raw = os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)  # b'...' with \x escapes: ASCII only
    return ascii(text)


def _decode_page(data: bytes, max_chars: int) -> tuple[str, int]:
    """(text, bytes consumed) for the first `max_chars` characters of `data`: bytes that are
    not UTF-8 count one byte each and show as U+FFFD, so offsets stay exact."""
    text = data.decode("utf-8", "surrogateescape")[:max_chars]
    consumed = len(text.encode("utf-8", "surrogateescape"))
    return _SURROGATE_RE.sub("\ufffd", text), consumed


class ConfinedFiles:
    """File operations inside `root` (see the module docstring). Thread-safe."""

    def __init__(self, root: str | os.PathLike, limits: FsLimits | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"file tool root is not a directory: {self.root}")
        st = os.stat(self.root)
        self._root_id = (st.st_dev, st.st_ino)
        self.limits = limits or FsLimits()
        self.bytes_written = 0
        self._lock = threading.Lock()

    # -- descriptor-relative resolution ------------------------------------------------------

    def _open_root(self) -> int:
        """An fd of the root, which must still be the directory it was at construction."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as e:
            raise PathRefused(
                f"the working directory is gone or was replaced ({os.strerror(e.errno)})"
            ) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._root_id:
            os.close(fd)
            raise PathRefused("the working directory was replaced; refusing to use it")
        return fd

    def _open_dir(self, parts: list[str], *, create: bool = False) -> int:
        """An fd of the directory `parts` under the root, opened component by component."""
        fd = self._open_root()
        try:
            for i, name in enumerate(parts):
                try:
                    next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        missing = "/".join(parts[: i + 1])
                        raise PathRefused(f"no such directory: {missing!r}") from None
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                        next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as e:
                        raise self._refusal(e, parts[: i + 1], fd) from None
                except OSError as e:
                    raise self._refusal(e, parts[: i + 1], fd) from None
                os.close(fd)
                fd = next_fd
                if os.fstat(fd).st_dev != self._root_id[0]:
                    where = "/".join(parts[: i + 1])
                    raise PathRefused(f"{where!r} is a mount point (another file system)")
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _refusal(error: OSError, parts: list[str], dir_fd: int | None = None) -> PathRefused:
        """The refusal for a failed open of `parts[-1]` (relative to `dir_fd`)."""
        where = "/".join(parts) or "."
        is_link = error.errno in (errno.ELOOP, errno.EMLINK)
        if not is_link and dir_fd is not None and parts:
            try:  # O_DIRECTORY on a symlink to a directory fails with ENOTDIR, not ELOOP
                mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
                is_link = stat.S_ISLNK(mode)
            except OSError:
                pass
        if is_link:
            return PathRefused(f"{where!r} is a symbolic link; links are not followed")
        if error.errno == errno.ENOTDIR:
            return PathRefused(f"{where!r} is not a directory")
        if error.errno == errno.EISDIR:
            return PathRefused(f"{where!r} is a directory, not a file")
        if error.errno == errno.ENOENT:
            return PathRefused(f"no such file: {where!r}")
        if error.errno == errno.ENXIO:
            return PathRefused(f"{where!r} is not a regular file")
        return PathRefused(f"cannot access {where!r}: {os.strerror(error.errno)}")

    @staticmethod
    def _kind(mode: int) -> str:
        if stat.S_ISDIR(mode):
            return "a directory, not a file"
        if stat.S_ISLNK(mode):
            return "a symbolic link; links are not followed"
        return "not a regular file (FIFOs, sockets and devices are refused)"

    def _check_inode(self, st: os.stat_result, where: str) -> None:
        """The opened inode must be a single-named regular file on the root's file system."""
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"{where!r} is {self._kind(st.st_mode)}")
        if st.st_dev != self._root_id[0]:
            raise PathRefused(f"{where!r} is on another file system")
        if st.st_nlink != 1:
            raise PathRefused(
                f"{where!r} has {st.st_nlink} hard links; files with more than one name are "
                "refused (another name may be outside the working directory)"
            )

    def _lstat_checked(self, name: str, dir_fd: int, parts: list[str]) -> os.stat_result | None:
        """lstat of the final name (None if absent), refused unless a single-named regular
        file: a FIFO, socket or device is never opened."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._refusal(e, parts, dir_fd) from None
        self._check_inode(st, "/".join(parts))
        return st

    @contextlib.contextmanager
    def _opened(self, path: str):
        """(fd, recheck) of an existing file for reading, both valid inside the block.

        `recheck()` (call it after reading) lstats the name again and fstats the fd: the
        name must still be the opened inode and it must still have one link. A single
        check is not enough: a rename that drops the last extra link of an outside file
        updates the link count before the name lookup sees the rename, so for an instant
        a hard link to an outside file can look single-named; both checks must fall in
        that instant for an outside file to pass."""
        parts = split_relative_path(path, self.limits)
        if not parts:
            raise PathRefused("a file name is required (got the root directory)")
        where, name = "/".join(parts), parts[-1]
        dir_fd = self._open_dir(parts[:-1])
        try:
            before = self._lstat_checked(name, dir_fd, parts)
            if before is None:
                raise PathRefused(f"no such file: {where!r}")
            try:
                fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                raise self._refusal(e, parts, dir_fd) from None
            try:
                ident = (before.st_dev, before.st_ino)

                def recheck() -> None:
                    st = os.fstat(fd)
                    try:
                        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except OSError:
                        now = None
                    if (st.st_dev, st.st_ino) != ident or now is None or (
                            now.st_dev, now.st_ino) != ident:
                        raise PathRefused(f"{where!r} was replaced while it was being read")
                    self._check_inode(st, where)
                    self._check_inode(now, where)

                recheck()
                yield fd, recheck
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    def _replace_file(self, path: str, data: bytes) -> None:
        """Writes `data` as `path`: into a new inode created here (`O_EXCL`), then renamed
        over the name. No existing inode is ever opened for writing, so no swap of the
        name (a hard link to an outside file, a FIFO, a directory) between a check and the
        write can make the write land anywhere else; a refused write changes nothing."""
        parts = split_relative_path(path, self.limits)
        if not parts:
            raise PathRefused("a file name is required (got the root directory)")
        name = parts[-1]
        dir_fd = self._open_dir(parts[:-1], create=True)
        try:
            self._lstat_checked(name, dir_fd, parts)  # clear refusals for links, dirs, FIFOs
            tmp = f".write-{secrets.token_hex(8)}.tmp"
            try:
                # Inside the try: a directory removed after it was opened (e.g. an empty
                # directory renamed over) makes even O_CREAT fail with ENOENT.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o644,
                             dir_fd=dir_fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                if isinstance(e, FileNotFoundError) and e.filename == tmp:
                    raise PathRefused(
                        f"the directory of {'/'.join(parts)!r} was removed or replaced during "
                        "the write; nothing was written"
                    ) from None
                if isinstance(e, OSError):
                    raise self._refusal(e, parts, dir_fd) from None
                raise
        finally:
            os.close(dir_fd)

    # -- operations ----------------------------------------------------------------------------

    @_refuse_os_errors
    def list_files(self, path: str = "") -> str:
        parts = split_relative_path(path, self.limits)
        lim = self.limits
        fd = self._open_dir(parts)
        names: list[str] = []
        complete = True
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(names) >= lim.max_list_scan:
                        complete = False
                        break
                    names.append(entry.name)
            names.sort()
            lines = []
            for name in names[: lim.max_list_entries]:
                shown = display_name(name)
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    lines.append(f"{shown} (vanished)")
                    continue
                if stat.S_ISDIR(st.st_mode):
                    lines.append(f"{shown}/")
                elif stat.S_ISLNK(st.st_mode):
                    lines.append(f"{shown} (symbolic link, not followed)")
                elif not stat.S_ISREG(st.st_mode):
                    lines.append(f"{shown} (special file, not readable)")
                else:
                    lines.append(f"{shown} ({st.st_size} bytes)")
        finally:
            os.close(fd)
        if not complete:
            lines.append(
                f"... and more: the directory has over {lim.max_list_scan} entries; "
                f"the first {min(len(names), lim.max_list_entries)} of {lim.max_list_scan} "
                "read are shown"
            )
        elif len(names) > lim.max_list_entries:
            lines.append(f"... and {len(names) - lim.max_list_entries} more")
        return "\n".join(lines) if lines else "(empty directory)"

    @_refuse_os_errors
    def read_file(self, path: str, offset: int = 0) -> str:
        if isinstance(offset, bool) or not isinstance(offset, (int, float)):
            raise PathRefused(f"offset must be between 0 and 2**62, got {str(offset)[:40]!r}")
        if isinstance(offset, float) and not offset.is_integer():
            raise PathRefused(f"offset must be a whole number of bytes, got {offset}")
        if not 0 <= offset < 1 << 62:
            raise PathRefused(f"offset must be between 0 and 2**62, got {offset}")
        offset = int(offset)
        with self._opened(path) as (fd, recheck):
            size = os.fstat(fd).st_size
            data = os.pread(fd, 4 * self.limits.max_read_chars + 4, offset)
            recheck()
        if size == 0:
            return "(empty file)"
        if offset >= size:
            return f"(end of file: the file has {size} bytes)"
        text, consumed = _decode_page(data, self.limits.max_read_chars)
        end = offset + consumed
        if end < size:
            text += f"\n[file continues: {size} bytes in total; read more with offset={end}]"
        return text

    @_refuse_os_errors
    def write_file(self, path: str, content: str) -> str:
        if not isinstance(content, str):
            raise PathRefused(f"content must be a string, got {type(content).__name__}")
        lim = self.limits
        if len(content) > lim.max_file_bytes:  # before encoding: a huge string costs nothing
            raise PathRefused(
                f"content is too large ({len(content)} characters > {lim.max_file_bytes} bytes)"
            )
        if not _encodable(content):
            raise PathRefused("content is not valid Unicode (it contains a lone surrogate)")
        data = content.encode("utf-8")
        if len(data) > lim.max_file_bytes:
            raise PathRefused(f"content is too large ({len(data)} > {lim.max_file_bytes} bytes)")
        with self._lock:
            if self.bytes_written + len(data) > lim.max_total_bytes:
                raise PathRefused(
                    f"write budget exhausted ({lim.max_total_bytes} bytes per episode)"
                )
            if not self._exists(path) and self._count_files(lim.max_files) >= lim.max_files:
                raise PathRefused(f"too many files (limit {lim.max_files})")
            self._replace_file(path, data)
            self.bytes_written += len(data)
        return f"wrote {len(data)} bytes to {path}"

    @_refuse_os_errors
    def search_files(self, pattern: str, path: str = "") -> str:
        """Lines containing `pattern` (a literal, case-insensitive) in the files under
        `path`, as `path:line: text`, in sorted path order (see the module docstring for
        the bounds)."""
        if not isinstance(pattern, str) or not pattern.strip():
            raise PathRefused("pattern must be a non-empty string")
        if not _encodable(pattern) or "\x00" in pattern or "\n" in pattern:
            raise PathRefused("pattern must be one line of valid Unicode")
        lim = self.limits
        needle = pattern.casefold()
        base = split_relative_path(path, lim)
        lines: list[str] = []
        state = {"files": 0, "skipped": 0, "more": False}
        with contextlib.closing(self._walk_files(base, state)) as walker:
            for rel in walker:
                try:
                    with self._opened(rel) as (fd, recheck):
                        data = os.pread(fd, 4 * lim.max_read_chars + 4, 0)
                        recheck()
                except PathRefused:
                    state["skipped"] += 1
                    continue
                text, _ = _decode_page(data, 4 * lim.max_read_chars)
                for number, line in enumerate(text.splitlines(), start=1):
                    if needle in line.casefold():
                        if len(lines) >= lim.max_search_matches:
                            state["more"] = True
                            break
                        lines.append(f"{display_name(rel)}:{number}: {self._shown(line)}")
                if state["more"]:
                    break
        where = "/".join(base) or "."
        if not lines:
            lines.append(f"no matches for {pattern[:80]!r} under {where!r}")
        if state["more"]:
            lines.append(f"... more matches not shown (at most {lim.max_search_matches}); "
                         "use a longer pattern or a narrower path")
        if state["files"] >= lim.max_search_files:
            lines.append(f"... search stopped after {lim.max_search_files} files; "
                         "use a narrower path")
        if state["skipped"]:
            lines.append(f"({state['skipped']} entries skipped: links, special files or "
                         "files that cannot be read)")
        return "\n".join(lines)

    def _shown(self, line: str) -> str:
        """One matched line as safe text: control/format characters replaced, bounded."""
        shown = "".join(c if unicodedata.category(c) not in _BAD_CATEGORIES else "\ufffd"
                        for c in line.strip())
        limit = self.limits.max_search_line_chars
        return shown if len(shown) <= limit else shown[:limit] + "..."

    def _walk_files(self, base: list[str], state: dict):
        """Relative paths of the regular-looking files under `base`, sorted, depth-first;
        directories are opened as in `_open_dir` (no links, same file system), at most
        `max_list_scan` names per directory and `max_search_files` files in all."""
        lim = self.limits

        def walk(fd: int, parts: list[str]):
            names: list[str] = []
            with os.scandir(fd) as it:
                for entry in it:
                    if len(names) >= lim.max_list_scan:
                        break
                    names.append(entry.name)
            for name in sorted(names):
                if state["files"] >= lim.max_search_files:
                    return
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    state["skipped"] += 1
                    continue
                sub_parts = [*parts, name]
                if stat.S_ISDIR(st.st_mode) and len(sub_parts) < lim.max_depth:
                    try:
                        sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        state["skipped"] += 1
                        continue
                    try:
                        if os.fstat(sub).st_dev == self._root_id[0]:
                            yield from walk(sub, sub_parts)
                        else:
                            state["skipped"] += 1
                    finally:
                        os.close(sub)
                elif stat.S_ISREG(st.st_mode):
                    state["files"] += 1
                    yield "/".join(sub_parts)
                else:
                    state["skipped"] += 1

        fd = self._open_dir(base)
        try:
            yield from walk(fd, base)
        finally:
            os.close(fd)

    def _exists(self, path: str) -> bool:
        try:
            with self._opened(path):
                return True
        except PathRefused:
            return False

    def _count_files(self, stop_at: int) -> int:
        """Entries under the root (files and directories, links not followed, down to
        `max_depth` levels), counting at most `stop_at`: the walk stops early, so a huge
        tree costs bounded work."""
        count = 0

        def walk(fd: int, depth: int) -> None:
            nonlocal count
            with os.scandir(fd) as it:
                for entry in it:
                    count += 1
                    if count >= stop_at:
                        return
                    if depth < self.limits.max_depth and entry.is_dir(follow_symlinks=False):
                        try:
                            sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                        except OSError:
                            continue
                        try:
                            walk(sub, depth + 1)
                        finally:
                            os.close(sub)
                        if count >= stop_at:
                            return

        root_fd = self._open_root()
        try:
            walk(root_fd, 0)
        finally:
            os.close(root_fd)
        return count


def search_files_tool(files: ConfinedFiles) -> Tool:
    """The `search_files` tool over `files` (a grep-like literal search)."""
    return Tool(
        "search_files",
        "Search the text files under a directory (default: the working directory) for "
        "lines containing `pattern` (literal text, case-insensitive); returns "
        f"`path:line: text` for at most {files.limits.max_search_matches} matching lines.",
        {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "minLength": 1, "maxLength": 200},
                "path": {"type": "string", "maxLength": files.limits.max_path_chars},
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
        files.search_files,
    )


def file_tools(files: ConfinedFiles) -> tuple[Tool, Tool, Tool]:
    """The `list_files`, `read_file` and `write_file` tools over `files`."""
    path_schema = {"type": "string", "maxLength": files.limits.max_path_chars}
    return (
        Tool(
            "list_files",
            "List the files and directories at a path relative to your working directory "
            "(default: the working directory itself).",
            {"type": "object", "properties": {"path": path_schema}, "additionalProperties": False},
            files.list_files,
        ),
        Tool(
            "read_file",
            f"Read a text file (up to {files.limits.max_read_chars} characters from `offset`).",
            {
                "type": "object",
                "properties": {"path": path_schema, "offset": {"type": "integer", "minimum": 0}},
                "required": ["path"],
                "additionalProperties": False,
            },
            files.read_file,
        ),
        Tool(
            "write_file",
            "Create or overwrite a text file (parent directories are created).",
            {
                "type": "object",
                "properties": {
                    "path": path_schema,
                    "content": {"type": "string", "maxLength": files.limits.max_file_bytes},
                },
                "required": ["path", "content"],
                "additionalProperties": False,
            },
            files.write_file,
        ),
    )
