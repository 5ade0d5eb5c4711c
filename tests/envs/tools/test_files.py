"""The confined file tools on a real directory: round trips, refusals, limits, and that nothing
outside the root is ever read or changed."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from agentic_rl.envs import (
    ConfinedFiles,
    FsLimits,
    PathRefused,
    execute_tool,
    file_tools,
    search_files_tool,
)


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


# -- hostile layouts: hard links, special files, odd names, replaced roots (issue item 11) ------


def test_hardlinks_to_outside_files_are_neither_read_nor_overwritten(layout):
    root, outside = layout
    files = ConfinedFiles(root)
    os.link(outside / "secret.txt", root / "hl.txt")
    (root / "sub").mkdir()
    os.link(outside / "secret.txt", root / "sub" / "deep.txt")
    before = snapshot(outside)
    for path in ("hl.txt", "sub/deep.txt"):
        with pytest.raises(PathRefused, match="hard link"):
            files.read_file(path)
        with pytest.raises(PathRefused, match="hard link"):
            files.write_file(path, "pwned")
    assert snapshot(outside) == before
    assert (outside / "secret.txt").read_text() == "TOP-SECRET"
    # through the tool layer it is an error observation, and the secret never shows
    by_name = {t.name: t for t in file_tools(files)}
    r = execute_tool(by_name["read_file"], {"path": "hl.txt"})
    assert r.error == "tool_error" and "TOP-SECRET" not in r.content
    # a file with a single name is still fine, and an ordinary overwrite still works
    files.write_file("own.txt", "mine")
    files.write_file("own.txt", "mine again")
    assert files.read_file("own.txt") == "mine again"


def test_writes_never_open_an_existing_inode(layout):
    """A write fills a new inode and renames it over the name. Writing into the existing
    inode after checking it lost a race in the attack run: a rename dropping the last
    extra link of an outside file shows link count 1 while the name still resolves to it,
    and the outside file was overwritten."""
    root, outside = layout
    files = ConfinedFiles(root)
    files.write_file("x.txt", "first")
    keep = os.open(root / "x.txt", os.O_RDONLY)  # the old inode, as a racing link would hold it
    try:
        old_ino = os.fstat(keep).st_ino
        files.write_file("x.txt", "second")
        assert os.stat(root / "x.txt").st_ino != old_ino
        assert os.pread(keep, 100, 0) == b"first"  # the old inode was not written
    finally:
        os.close(keep)
    assert files.read_file("x.txt") == "second"
    assert sorted(p.name for p in root.iterdir()) == ["x.txt"]  # no temporary file left
    # a write the rename refuses (the name became a directory) leaves nothing behind
    (root / "d").mkdir()
    with pytest.raises(PathRefused, match="directory"):
        files.write_file("d", "x")
    assert sorted(p.name for p in root.iterdir()) == ["d", "x.txt"]


def test_a_directory_removed_during_a_write_is_refused_not_a_crash(layout, monkeypatch):
    """The attack run's directory-swap race: the write opened `d/` (created empty by the
    write itself), then a rename of another directory over it removed that inode, so even
    `O_CREAT` of the temporary file failed with a bare FileNotFoundError. It must be a
    refusal, and nothing may be written anywhere."""
    root, outside = layout
    files = ConfinedFiles(root)
    real_open_dir = ConfinedFiles._open_dir

    def open_then_replaced(self, parts, *, create=False):
        fd = real_open_dir(self, parts, create=create)
        if parts == ["d"]:
            (root / "other").mkdir()
            os.rename(root / "other", root / "d")  # replaces the empty d/ that fd holds
        return fd

    monkeypatch.setattr(ConfinedFiles, "_open_dir", open_then_replaced)
    with pytest.raises(PathRefused, match="removed or replaced during the write"):
        files.write_file("d/f.txt", "x")
    assert list((root / "d").iterdir()) == []
    assert snapshot(outside) == {"secret.txt": hashlib.sha256(b"TOP-SECRET").hexdigest()}


def test_stray_os_errors_become_refusals(layout, monkeypatch):
    """Any OSError that a tool operation did not turn into a precise refusal (here a
    listing whose directory read fails) still reaches the policy as a refusal."""
    root, _ = layout
    files = ConfinedFiles(root)

    def failing_scandir(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "scandir", failing_scandir)
    with pytest.raises(PathRefused, match="list_files failed: Input/output error"):
        files.list_files()


def test_a_name_swapped_during_a_read_is_refused(layout, monkeypatch):
    """The read re-checks the name and the inode after reading: here the name is replaced
    by a hard link to the outside file while the (open) file is being read."""
    root, outside = layout
    files = ConfinedFiles(root)
    files.write_file("x.txt", "mine")
    real_pread = os.pread

    def swapping_pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        os.link(outside / "secret.txt", root / "hl")
        os.replace(root / "hl", root / "x.txt")
        return data

    monkeypatch.setattr(os, "pread", swapping_pread)
    with pytest.raises(PathRefused, match="replaced"):
        files.read_file("x.txt")


def test_fifos_and_sockets_are_refused_without_blocking_for_writes_too(layout):
    import socket

    root, _ = layout
    files = ConfinedFiles(root)
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        result: dict = {}

        def attempt():
            for op in ("read", "write"):
                for name in ("pipe", "sock"):
                    try:
                        if op == "read":
                            files.read_file(name)
                        else:
                            files.write_file(name, "x")
                        result[op, name] = "allowed"
                    except PathRefused as e:
                        result[op, name] = str(e)

        t = threading.Thread(target=attempt, daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), "an operation on a FIFO or socket blocked"
        assert len(result) == 4
        assert all("not a regular file" in v for v in result.values()), result
    finally:
        sock.close()


def test_listing_escapes_odd_names_and_stays_valid_unicode(layout):
    root, _ = layout
    files = ConfinedFiles(root)
    os.close(os.open(os.path.join(os.fsencode(root), b"bad\xff\xfename"), os.O_CREAT | os.O_WRONLY))
    (root / "evil\nsecret.txt (0 bytes)").write_text("")
    (root / "rtl\u202etxt.exe").write_text("")
    listing = files.list_files()
    listing.encode("utf-8")  # no lone surrogates: the observation must be encodable
    lines = listing.split("\n")
    assert len(lines) == 3, listing  # the newline in a name cannot forge a listing line
    assert "\u202e" not in listing


def test_reading_binary_files_in_pages_loses_and_repeats_nothing(layout):
    root, _ = layout
    data = ("héllo wörld ✓ " * 5).encode() + b"\xff\xfe\x80 raw bytes \xc3" + "€uro".encode()
    (root / "bin.dat").write_bytes(data)
    files = ConfinedFiles(root, FsLimits(max_read_chars=7))
    pages, offset = [], 0
    for _ in range(200):
        page = files.read_file("bin.dat", offset=offset)
        page.encode("utf-8")
        if "\n[file continues" not in page:
            pages.append(page)
            break
        text, note = page.split("\n[file continues", 1)
        pages.append(text)
        offset = int(note.rsplit("offset=", 1)[1].rstrip("]"))
    assert "".join(pages) == data.decode("utf-8", "replace")


def test_paths_with_control_characters_or_lookalike_dots_are_refused(layout):
    root, outside = layout
    files = ConfinedFiles(root)
    for path in ("a\nb.txt", "x\x1b[2J.txt", "rtl\u202e.txt", "zero\u200bwidth"):
        with pytest.raises(PathRefused, match="control or formatting character"):
            files.write_file(path, "x")
    for path in ("\uff0e\uff0e/outside/secret.txt", "\u2025/x", "a\uff0fb", "a\u2215b"):
        with pytest.raises(PathRefused, match="looks like"):
            files.write_file(path, "x")
    with pytest.raises(PathRefused, match="too long"):
        files.write_file("é" * 200, "x")  # 200 characters, but 400 bytes: over NAME_MAX
    assert files.list_files() == "(empty directory)"


def test_a_replaced_root_is_refused_not_followed(layout, tmp_path):
    root, outside = layout
    files = ConfinedFiles(root)
    files.write_file("a.txt", "a")
    root.rename(tmp_path / "moved")
    os.symlink(outside, root)
    with pytest.raises(PathRefused, match="working directory"):
        files.read_file("secret.txt")
    with pytest.raises(PathRefused, match="working directory"):
        files.list_files()
    os.unlink(root)
    (tmp_path / "impostor").mkdir()
    (tmp_path / "impostor").rename(root)
    with pytest.raises(PathRefused, match="working directory"):
        files.write_file("b.txt", "b")
    assert snapshot(outside) == {"secret.txt": snapshot(outside)["secret.txt"]}


def test_enormous_directories_are_listed_and_counted_in_bounded_work(layout):
    import time

    root, _ = layout
    for i in range(30_000):
        os.close(os.open(root / f"f{i:05d}", os.O_CREAT | os.O_WRONLY))
    files = ConfinedFiles(root, FsLimits(max_files=100, max_list_entries=50))
    start = time.monotonic()
    listing = files.list_files()
    assert len(listing.split("\n")) <= 51 and "more" in listing.split("\n")[-1]
    with pytest.raises(PathRefused, match="too many files"):
        files.write_file("new.txt", "x")
    assert time.monotonic() - start < 20


def test_huge_sparse_files_are_read_in_bounded_memory(layout):
    root, _ = layout
    with open(root / "huge.bin", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse
    files = ConfinedFiles(root, FsLimits(max_read_chars=100))
    page = files.read_file("huge.bin", offset=(1 << 40) - 50)
    assert page == "\x00" * 50
    assert "1099511627776 bytes in total" in files.read_file("huge.bin")
    with pytest.raises(PathRefused, match="offset must be"):
        files.read_file("huge.bin", offset="lots")  # type: ignore[arg-type]


def test_search_goes_through_the_same_confinement(layout):
    """search_files never follows a link, never opens a FIFO, skips hard links to outside
    files, refuses paths like read_file, and bounds what it shows."""
    root, outside = layout
    files = ConfinedFiles(root, FsLimits(max_search_matches=3, max_search_line_chars=20))
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.txt").write_text("Needle one\nhay\nneedle\x1b[2J two\n")
    (root / "top.txt").write_text("nothing\n" + "NEEDLE " * 10 + "\n")
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    os.link(outside / "secret.txt", root / "hl.txt")
    os.mkfifo(root / "pipe")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(out=files.search_files("needle")),
                         daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive()
    assert result["out"].splitlines()[:3] == [
        "a/b/x.txt:1: Needle one",
        "a/b/x.txt:3: needle\ufffd[2J two",  # control characters never reach the agent
        "top.txt:2: " + ("NEEDLE " * 3)[:20] + "...",
    ]
    assert "(4 entries skipped" in result["out"]
    assert "TOP-SECRET" not in files.search_files("SECRET")
    assert files.search_files("needle", "a").splitlines() == [
        "a/b/x.txt:1: Needle one", "a/b/x.txt:3: needle\ufffd[2J two"]
    (root / "many.txt").write_text("needle\n" * 10)
    assert "more matches not shown (at most 3)" in files.search_files("needle")
    for path, reason in (("../outside", "'..' is not allowed"), ("/etc", "absolute paths"),
                         ("linkdir", "symbolic link"), ("top.txt", "not a directory")):
        with pytest.raises(PathRefused, match=reason):
            files.search_files("x", path)
    with pytest.raises(PathRefused, match="non-empty"):
        files.search_files("  ")
    tool = search_files_tool(files)
    r = execute_tool(tool, {"pattern": "secret", "path": "../outside"})
    assert r.error == "tool_error" and "TOP-SECRET" not in r.content
