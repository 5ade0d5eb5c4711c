"""File tools confined to one directory: `list_files`, `read_file`, `write_file`.

Every path comes from the policy, so paths are checked as data, never trusted:
absolute paths, `..` components, NUL bytes, over-long names and symlinks anywhere on
the path are refused. Resolution does not go through the path string at all: each
component is opened relative to the previous directory's file descriptor with
`O_NOFOLLOW` (and `O_DIRECTORY` for directories), so a symlink or a directory swapped
for one between the check and the use cannot redirect an access outside the root.
Only regular files are read or written (no FIFOs or devices, which could block), and
file size, total bytes written and the number of files are capped.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from agentic_rl.envs.tools import Tool, ToolExecutionError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class PathRefused(ToolExecutionError):
    """A path the policy may not use; the message says why."""


@dataclass(frozen=True)
class FsLimits:
    max_path_chars: int = 255
    max_depth: int = 16
    max_read_chars: int = 8000
    max_file_bytes: int = 1 << 20
    max_total_bytes: int = 8 << 20
    max_files: int = 200
    max_list_entries: int = 200

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"FsLimits.{name} must be > 0, got {value!r}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    if path.startswith(("/", "\\", "~")) or (len(path) > 1 and path[1] == ":"):
        raise PathRefused(f"absolute paths are not allowed: {path[:80]!r}; use a relative path")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"'..' is not allowed in paths: {path[:80]!r}")
    if len(parts) > limits.max_depth:
        raise PathRefused(f"path is nested too deeply (more than {limits.max_depth} levels)")
    return parts


class ConfinedFiles:
    """File operations inside `root` (see the module docstring). Thread-safe."""

    def __init__(self, root: str | os.PathLike, limits: FsLimits | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"file tool root is not a directory: {self.root}")
        self.limits = limits or FsLimits()
        self.bytes_written = 0
        self._lock = threading.Lock()

    # -- descriptor-relative resolution ------------------------------------------------------

    def _open_dir(self, parts: list[str], *, create: bool = False) -> int:
        """An fd of the directory `parts` under the root, opened component by component."""
        fd = os.open(self.root, _DIR_FLAGS)
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
        return PathRefused(f"cannot access {where!r}: {os.strerror(error.errno)}")

    def _open_file(self, path: str, flags: int, *, create_dirs: bool = False) -> int:
        parts = split_relative_path(path, self.limits)
        if not parts:
            raise PathRefused("a file name is required (got the root directory)")
        dir_fd = self._open_dir(parts[:-1], create=create_dirs)
        try:
            fd = os.open(parts[-1], flags | os.O_NOFOLLOW | _NONBLOCK, 0o644, dir_fd=dir_fd)
        except OSError as e:
            raise self._refusal(e, parts, dir_fd) from None
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathRefused(f"{path[:80]!r} is not a regular file")
        return fd

    # -- operations ----------------------------------------------------------------------------

    def list_files(self, path: str = "") -> str:
        parts = split_relative_path(path, self.limits)
        fd = self._open_dir(parts)
        try:
            entries = sorted(os.listdir(fd))
            lines = []
            for name in entries[: self.limits.max_list_entries]:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    lines.append(f"{name}/")
                elif stat.S_ISLNK(st.st_mode):
                    lines.append(f"{name} (symbolic link, not followed)")
                else:
                    lines.append(f"{name} ({st.st_size} bytes)")
        finally:
            os.close(fd)
        if len(entries) > self.limits.max_list_entries:
            lines.append(f"... and {len(entries) - self.limits.max_list_entries} more")
        return "\n".join(lines) if lines else "(empty directory)"

    def read_file(self, path: str, offset: int = 0) -> str:
        offset = int(offset)
        if not 0 <= offset < 1 << 62:
            raise PathRefused(f"offset must be between 0 and 2**62, got {offset}")
        fd = self._open_file(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read(4 * self.limits.max_read_chars + 4)
            size = os.fstat(f.fileno()).st_size
        if size == 0:
            return "(empty file)"
        if offset >= size:
            return f"(end of file: the file has {size} bytes)"
        text = data.decode("utf-8", "replace")[: self.limits.max_read_chars]
        end = offset + len(text.encode("utf-8", "replace"))
        if end < size:
            text += f"\n[file continues: {size} bytes in total; read more with offset={end}]"
        return text

    def write_file(self, path: str, content: str) -> str:
        if not _encodable(content):
            raise PathRefused("content is not valid Unicode (it contains a lone surrogate)")
        data = content.encode("utf-8")
        lim = self.limits
        if len(data) > lim.max_file_bytes:
            raise PathRefused(f"content is too large ({len(data)} > {lim.max_file_bytes} bytes)")
        with self._lock:
            if self.bytes_written + len(data) > lim.max_total_bytes:
                raise PathRefused(
                    f"write budget exhausted ({lim.max_total_bytes} bytes per episode)"
                )
            if self._count_files() >= lim.max_files and not self._exists(path):
                raise PathRefused(f"too many files (limit {lim.max_files})")
            fd = self._open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.bytes_written += len(data)
        return f"wrote {len(data)} bytes to {path}"

    def _exists(self, path: str) -> bool:
        try:
            os.close(self._open_file(path, os.O_RDONLY))
            return True
        except PathRefused:
            return False

    def _count_files(self) -> int:
        count = 0
        for _, dirs, files in os.walk(self.root, followlinks=False):
            count += len(files) + len(dirs)
        return count


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
