"""The confined file tools on a real directory: round trips, refusals, limits, and that nothing
outside the root is ever read or changed."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from agentic_rl.envs import ConfinedFiles, FsLimits, PathRefused, execute_tool, file_tools


@pytest.fixture
def layout(tmp_path):
    """root/ (the confined directory) next to outside/ (host files that must stay private)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET")
    return root, outside


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_write_read_list_round_trip(layout):
    root, _ = layout
    files = ConfinedFiles(root)
    assert files.list_files() == "(empty directory)"
    assert files.write_file("notes/day1.txt", "hello\nworld") == "wrote 11 bytes to notes/day1.txt"
    assert (root / "notes" / "day1.txt").read_text() == "hello\nworld"
    assert files.read_file("notes/day1.txt") == "hello\nworld"
    assert files.read_file("./notes//day1.txt", offset=6) == "world"
    files.write_file("a.txt", "ünïcode")
    assert files.list_files() == "a.txt (9 bytes)\nnotes/"
    assert files.list_files("notes") == "day1.txt (11 bytes)"
    files.write_file("a.txt", "short")  # overwrite truncates
    assert files.read_file("a.txt") == "short"
    files.write_file("empty", "")
    assert files.read_file("empty") == "(empty file)"
    assert files.read_file("a.txt", offset=100) == "(end of file: the file has 5 bytes)"


def test_long_files_are_read_in_pages(layout):
    root, _ = layout
    files = ConfinedFiles(root, FsLimits(max_read_chars=10))
    files.write_file("long.txt", "0123456789abcdefghij")
    first = files.read_file("long.txt")
    assert first.startswith("0123456789\n[file continues: 20 bytes")
    assert "offset=10" in first
    assert files.read_file("long.txt", offset=10) == "abcdefghij"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute paths are not allowed"),
        ("~/secret.txt", "absolute paths are not allowed"),
        ("C:/Windows/win.ini", "absolute paths are not allowed"),
        ("../outside/secret.txt", "'..' is not allowed"),
        ("notes/../../outside/secret.txt", "'..' is not allowed"),
        ("..\\outside\\secret.txt", "'..' is not allowed"),
        ("a\x00b", "NUL"),
        ("x" * 300, "too long"),
        ("/".join("d" * 20), "nested too deeply"),
        ("missing.txt", "no such file"),
        ("nodir/missing.txt", "no such directory"),
        ("", "a file name is required"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(layout, path, reason):
    root, outside = layout
    files = ConfinedFiles(root)
    before = snapshot(outside)
    with pytest.raises(PathRefused, match=reason):
        files.read_file(path)
    if reason not in ("no such file", "no such directory", "a file name is required"):
        with pytest.raises(PathRefused, match=reason):
            files.write_file(path, "overwritten")
    assert snapshot(outside) == before
    assert "TOP-SECRET" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())


def test_symlinks_are_never_followed(layout):
    root, outside = layout
    files = ConfinedFiles(root)
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    os.symlink("/etc", root / "etc")
    before = snapshot(outside)
    for path in ("link.txt", "linkdir/secret.txt", "etc/passwd"):
        with pytest.raises(PathRefused, match="symbolic link"):
            files.read_file(path)
    with pytest.raises(PathRefused, match="symbolic link"):
        files.write_file("link.txt", "pwned")
    with pytest.raises(PathRefused, match="symbolic link"):
        files.write_file("linkdir/new.txt", "pwned")
    with pytest.raises(PathRefused, match="symbolic link"):
        files.list_files("linkdir")
    listing = files.list_files()
    assert "link.txt (symbolic link, not followed)" in listing
    assert snapshot(outside) == before and not (outside / "new.txt").exists()


def test_special_files_are_refused_without_blocking(layout):
    root, _ = layout
    files = ConfinedFiles(root)
    os.mkfifo(root / "pipe")
    result: dict = {}

    def read():
        try:
            files.read_file("pipe")
        except PathRefused as e:
            result["error"] = str(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and "not a regular file" in result["error"]
    (root / "sub").mkdir()
    with pytest.raises(PathRefused, match="is a directory|not a regular file"):
        files.read_file("sub")
    files.write_file("x.txt", "a")
    with pytest.raises(PathRefused, match="not a directory"):
        files.list_files("x.txt")
    with pytest.raises(PathRefused, match="not a directory"):
        files.read_file("x.txt/y")


def test_limits(layout):
    root, _ = layout
    files = ConfinedFiles(root, FsLimits(max_file_bytes=10, max_total_bytes=25, max_files=3))
    with pytest.raises(PathRefused, match="too large"):
        files.write_file("big.txt", "x" * 11)
    files.write_file("a", "x" * 10)
    files.write_file("b", "x" * 10)
    with pytest.raises(PathRefused, match="write budget exhausted"):
        files.write_file("c", "x" * 10)
    files.write_file("c", "x")
    with pytest.raises(PathRefused, match="too many files"):
        files.write_file("d", "x")
    with pytest.raises(PathRefused, match="offset must be"):
        files.read_file("a", offset=-1)


def test_tools_turn_refusals_into_error_observations(layout):
    root, _ = layout
    by_name = {t.name: t for t in file_tools(ConfinedFiles(root))}
    assert execute_tool(by_name["write_file"], {"path": "f.txt", "content": "x"}).ok
    r = execute_tool(by_name["read_file"], {"path": "../f.txt"})
    assert r.error == "tool_error" and r.content.startswith("Error: '..' is not allowed")
    assert execute_tool(by_name["list_files"], {}).content == "f.txt (1 bytes)"
    with pytest.raises(NotADirectoryError):
        ConfinedFiles(root / "f.txt")
