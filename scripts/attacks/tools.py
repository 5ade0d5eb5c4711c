"""Attacks on the tool layer: the confined file tools, MCP servers, the tool-call parser, the
calculator and the search tools (issue items 11, 12 and 13, and more of each class).

Every attack plays a hostile policy (tool calls written as text, parsed and executed the
way a rollout does) or a hostile environment (a file layout prepared on disk, an MCP server
that breaks the protocol: tests/envs/mcp_hostile_server.py). `run()` returns None when the
defence held and a short string naming what escaped otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import Attack

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOSTILE_SERVER = str(REPO / "tests" / "envs" / "mcp_hostile_server.py")
SECRET = "TOP-SECRET-7f3a"


# -- helpers ----------------------------------------------------------------------------------


def _call_text(name: str, arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _policy_call(tools, name: str, arguments, max_call_chars: int = 1 << 20):
    """What a rollout does with a policy's call: parse (with the schema) and execute.

    Returns (content, error kind); error kind "parse" when the parser refused the call.
    """
    from agentic_rl.envs import ParserLimits, execute_tool, parse_action

    action = parse_action(
        _call_text(name, arguments), tools, ParserLimits(max_call_chars=max_call_chars)
    )
    if action.errors:
        return "; ".join(e.message for e in action.errors), "parse"
    result = execute_tool({t.name: t for t in tools}[name], action.tool_calls[0].arguments)
    return result.content, result.error


def _crashed(error) -> bool:
    """An error kind that means the tool raised something unexpected (or hung)."""
    return error not in (None, "tool_error", "parse")


def _fs():
    """(root, outside, ConfinedFiles, tools): root/ is confined, outside/secret.txt is private."""
    from agentic_rl.envs import ConfinedFiles, file_tools

    base = Path(tempfile.mkdtemp(prefix="attack-fs-"))
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    files = ConfinedFiles(root)
    return root, outside, files, file_tools(files)


def _outside_intact(outside: Path) -> bool:
    names = sorted(p.name for p in outside.iterdir())
    return names == ["secret.txt"] and (outside / "secret.txt").read_text() == SECRET


def _fs_probe(tools, outside: Path, calls) -> str | None:
    """Runs policy calls; an escape if the secret shows, outside changes or a tool crashes."""
    for name, arguments in calls:
        content, error = _policy_call(tools, name, arguments)
        if SECRET in content:
            return f"{name}({_short(arguments)}) read the outside secret"
        if _crashed(error):
            return f"{name}({_short(arguments)}) crashed: {content[:120]}"
        if not _outside_intact(outside):
            return f"{name}({_short(arguments)}) changed a file outside the root"
    return None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _hostile(mode: str, *args: str, **kwargs):
    from agentic_rl.envs import McpToolset, stdio_server

    kwargs = {"timeout_s": 3.0, "startup_timeout_s": 8.0, **kwargs}
    return McpToolset(stdio_server(sys.executable, HOSTILE_SERVER, mode, *args), **kwargs)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _servers(mode: str) -> set[int]:
    marker = f"mcp_hostile_server.py {mode} ".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ")
            except OSError:
                continue
            if marker in cmdline and _alive(int(entry.name)):
                pids.add(int(entry.name))
    return pids


def _wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while (left := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _echo(ts, text: str):
    from agentic_rl.envs import execute_tool

    return execute_tool({t.name: t for t in ts.tools}["echo"], {"text": text})


# -- file tool: item 11 and its class -----------------------------------------------------------


def fs_hardlink_read() -> str | None:
    root, outside, _, tools = _fs()
    os.link(outside / "secret.txt", root / "notes.txt")
    return _fs_probe(
        tools,
        outside,
        [("read_file", {"path": "notes.txt"}), ("read_file", {"path": "notes.txt", "offset": 3})],
    )


def fs_hardlink_overwrite() -> str | None:
    root, outside, _, tools = _fs()
    (root / "d").mkdir()
    os.link(outside / "secret.txt", root / "d" / "log.txt")
    return _fs_probe(
        tools,
        outside,
        [
            ("write_file", {"path": "d/log.txt", "content": "pwned"}),
            ("write_file", {"path": "d/log.txt", "content": ""}),
        ],
    )


def fs_symlinks_anywhere() -> str | None:
    root, outside, _, tools = _fs()
    os.symlink(outside / "secret.txt", root / "file_link")
    os.symlink(outside, root / "dir_link")
    (root / "a").mkdir()
    os.symlink("../../outside", root / "a" / "up")
    os.symlink("/proc/self/root", root / "proc")
    os.symlink("dangling-target", root / "dangling")
    calls = []
    for path in (
        "file_link",
        "dir_link/secret.txt",
        "a/up/secret.txt",
        "proc/etc/hostname",
        "a/../dir_link/secret.txt",
    ):
        calls += [("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"})]
    calls += [
        ("list_files", {"path": "dir_link"}),
        ("write_file", {"path": "dangling", "content": "x"}),
    ]
    escaped = _fs_probe(tools, outside, calls)
    if escaped:
        return escaped
    return "the dangling symlink was followed" if (root / "dangling-target").exists() else None


def fs_path_string_tricks() -> str | None:
    _, outside, files, tools = _fs()
    paths = [
        "../outside/secret.txt",
        "..\\outside\\secret.txt",
        "/etc/passwd",
        "//etc/passwd",
        "~/.bashrc",
        "C:/x",
        "\\\\server\\share",
        "./../outside/secret.txt",
        "a/b/../../../x",
        "\uff0e\uff0e/outside/secret.txt",
        "\u2025/outside/secret.txt",
        "..\uff0foutside",
        "..\u2215outside\u2215secret.txt",
        "\u2024\u2024/outside/secret.txt",
        ".\u200b./x",
        "x\x00y",
        "x\n../y",
        "\udc2e\udc2e/outside",
        "\u202e../x",
        "/proc/self/environ",
        "proc/self/environ",
        "." * 300,
        "a/" * 40 + "x",
        "é" * 200,
    ]
    calls = [
        (op, {"path": p, **extra})
        for p in paths
        for op, extra in (("read_file", {}), ("write_file", {"content": "x"}), ("list_files", {}))
    ]
    escaped = _fs_probe(tools, outside, calls)
    if escaped:
        return escaped
    from agentic_rl.envs import PathRefused

    for p in ("../outside/secret.txt", "\uff0e\uff0e/outside/secret.txt", "/etc/passwd"):
        try:
            text = files.read_file(p)
        except PathRefused:
            continue
        return f"read_file({p!r}) was not refused: {text[:60]!r}"
    return None


def _blocks(fn, seconds: float = 10.0) -> bool:
    done = threading.Event()

    def target():
        try:
            fn()
        except Exception:  # noqa: BLE001 - refusals are fine; only blocking matters here
            pass
        done.set()

    threading.Thread(target=target, daemon=True).start()
    return not done.wait(seconds)


def fs_fifo_and_socket() -> str | None:
    root, outside, files, tools = _fs()
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    for name in ("pipe", "sock"):
        if _blocks(lambda n=name: files.read_file(n)):
            return f"read_file({name!r}) blocked"
        if _blocks(lambda n=name: files.write_file(n, "x")):
            return f"write_file({name!r}) blocked"
    return _fs_probe(
        tools,
        outside,
        [("read_file", {"path": "pipe"}), ("write_file", {"path": "sock", "content": "x"})],
    )


def fs_fifo_swapped_in_after_check() -> str | None:
    """A thread keeps replacing a regular file by a FIFO while the policy reads and writes it."""
    root, outside, files, _ = _fs()
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            with open(root / "f.tmp", "w") as f:
                f.write("x")
            os.replace(root / "f.tmp", root / "f")
            os.unlink(root / "f")
            os.mkfifo(root / "f.fifo")
            os.replace(root / "f.fifo", root / "f")
            os.unlink(root / "f")

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if _blocks(lambda: files.read_file("f"), 5) or _blocks(
                lambda: files.write_file("f", "y"), 5
            ):
                return "an operation blocked on a FIFO swapped in after the check"
    finally:
        stop.set()
        t.join(5)
    return None if _outside_intact(outside) else "outside changed"


def fs_directory_swap_race() -> str | None:
    """A thread swaps a directory on the path for a symlink to outside, over and over."""
    root, outside, files, _ = _fs()
    (outside / "f.txt").write_text(SECRET)
    (root / "d").mkdir()
    (root / "d" / "f.txt").write_text("mine")
    os.symlink(outside, root / "link")
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            try:
                os.rename(root / "d", root / "d.real")
                os.rename(root / "link", root / "d")
                os.rename(root / "d", root / "link")
                os.rename(root / "d.real", root / "d")
            except OSError:
                pass

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for op in (
                lambda: files.read_file("d/f.txt"),
                lambda: files.write_file("d/f.txt", "pwned"),
            ):
                try:
                    if SECRET in (op() or ""):
                        return "read the outside file through a swapped-in symlink"
                except Exception as e:  # noqa: BLE001
                    from agentic_rl.envs import PathRefused

                    if not isinstance(e, PathRefused):
                        return f"the race crashed the tool: {type(e).__name__}: {e}"
            if (outside / "f.txt").read_text() != SECRET:
                return "wrote the outside file through a swapped-in symlink"
    finally:
        stop.set()
        t.join(5)
    (outside / "f.txt").unlink()
    return None if _outside_intact(outside) else "outside changed"


def fs_hardlink_swap_race() -> str | None:
    """A thread keeps replacing the policy's own file by a hard link to an outside file."""
    root, outside, files, _ = _fs()
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            try:
                os.link(outside / "secret.txt", root / "hl")
                os.replace(root / "hl", root / "x.txt")
                with open(root / "own", "w") as f:
                    f.write("own")
                os.replace(root / "own", root / "x.txt")
            except OSError:
                pass

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for op in (
                lambda: files.write_file("x.txt", "pwned"),
                lambda: files.read_file("x.txt"),
            ):
                try:
                    if SECRET in (op() or ""):
                        return "read the outside file through a hard link swapped in"
                except Exception as e:  # noqa: BLE001
                    from agentic_rl.envs import PathRefused

                    if not isinstance(e, PathRefused):
                        return f"the race crashed the tool: {type(e).__name__}: {e}"
            if (outside / "secret.txt").read_text() != SECRET:
                return "overwrote the outside file through a hard link swapped in"
    finally:
        stop.set()
        t.join(5)
    return None


def fs_replaced_root() -> str | None:
    root, outside, files, tools = _fs()
    root.rename(root.with_name("moved"))
    os.symlink(outside, root)
    return _fs_probe(
        tools,
        outside,
        [
            ("read_file", {"path": "secret.txt"}),
            ("list_files", {}),
            ("write_file", {"path": "new.txt", "content": "x"}),
        ],
    )


def fs_huge_sparse_file() -> str | None:
    root, _, files, tools = _fs()
    with open(root / "huge.bin", "wb") as f:
        f.truncate(1 << 42)  # 4 TiB, sparse
    rss = _rss_mb()
    start = time.monotonic()
    for offset in (0, 1 << 41, (1 << 42) - 10, 1 << 50):
        content, error = _policy_call(tools, "read_file", {"path": "huge.bin", "offset": offset})
        if _crashed(error) or len(content) > 20_000:
            return f"read_file at offset {offset} returned {len(content)} characters ({error})"
    if _rss_mb() - rss > 100 or time.monotonic() - start > 10:
        return "reading a huge file cost unbounded memory or time"
    return None


def fs_huge_writes() -> str | None:
    root, _, files, tools = _fs()
    from agentic_rl.envs import PathRefused

    big = "x" * (64 << 20)
    start = time.monotonic()
    try:
        files.write_file("big.txt", big)
        return "a 64 MiB write was accepted"
    except PathRefused:
        pass
    content, error = _policy_call(
        tools, "write_file", {"path": "big2.txt", "content": "y" * (2 << 20)}
    )
    if error is None:
        return "a 2 MiB write through the tool was accepted"
    for i in range(40):  # the per-episode budget (8 MiB) across many files
        try:
            files.write_file(f"chunk{i}.txt", "z" * (1 << 20))
        except PathRefused:
            break
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    if total > files.limits.max_total_bytes:
        return f"{total} bytes written in all, over the budget"
    if time.monotonic() - start > 20:
        return "refusing huge writes took too long"
    return None


def fs_enormous_directory() -> str | None:
    root, _, files, tools = _fs()
    for i in range(50_000):
        os.close(os.open(root / f"entry{i:06d}", os.O_CREAT | os.O_WRONLY))
    start = time.monotonic()
    content, error = _policy_call(tools, "list_files", {})
    if _crashed(error) or len(content) > 50_000:
        return f"listing returned {len(content)} characters ({error})"
    content, error = _policy_call(tools, "write_file", {"path": "one-more", "content": "x"})
    if error is None:
        return "the file count limit did not apply"
    if time.monotonic() - start > 20:
        return f"listing/counting 50000 entries took {time.monotonic() - start:.1f} s"
    return None


def fs_odd_names_in_listings() -> str | None:
    root, _, files, tools = _fs()
    os.close(os.open(os.path.join(os.fsencode(root), b"\xff\xfe\xfd"), os.O_CREAT | os.O_WRONLY))
    (root / "fake\nsecret.txt (10 bytes)").write_text("")
    (root / "bidi\u202egnp.exe").write_text("")
    content, error = _policy_call(tools, "list_files", {})
    if _crashed(error):
        return f"listing crashed: {content[:100]}"
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        return "the listing holds lone surrogates (a tokenizer would crash on it)"
    if len(content.split("\n")) != 3:
        return "a newline in a file name forged a listing line"
    if "\u202e" in content:
        return "a bidi override reached the observation"
    return None


def fs_binary_paging() -> str | None:
    root, _, _, _ = _fs()
    from agentic_rl.envs import ConfinedFiles, FsLimits

    data = bytes(range(256)) * 40 + "ünïcødé ✓".encode() * 20
    (root / "b.bin").write_bytes(data)
    files = ConfinedFiles(root, FsLimits(max_read_chars=97))
    out, offset = [], 0
    for _ in range(1000):
        page = files.read_file("b.bin", offset=offset)
        page.encode("utf-8")
        if "\n[file continues" not in page:
            out.append(page)
            break
        text, note = page.split("\n[file continues", 1)
        out.append(text)
        offset = int(note.rsplit("offset=", 1)[1].rstrip("]"))
    if "".join(out) != data.decode("utf-8", "replace"):
        return "paging through a binary file lost or repeated bytes"
    return None


# -- MCP: item 12 and its class -----------------------------------------------------------------


def mcp_huge_result() -> str | None:
    rss = _rss_mb()
    with _hostile("big_result", str(32 << 20)) as ts:
        start = time.monotonic()
        r = _echo(ts, "big")
        if r.error is None or "too large" not in r.content:
            return f"a 32 MiB result was not refused clearly: {r.content[:100]!r}"
        if time.monotonic() - start > 15:
            return f"refusing a 32 MiB result took {time.monotonic() - start:.1f} s"
        if _echo(ts, "hi").content != "hi":
            return "the session was stuck after a huge result"
    if _rss_mb() - rss > 200:
        return f"a huge result grew memory by {_rss_mb() - rss:.0f} MB"
    return None


def mcp_endless_line() -> str | None:
    with _hostile("huge_line", str(128 << 20)) as ts:
        r = _echo(ts, "big")
        if r.error is None or "too large" not in r.content:
            return f"a 128 MiB line was not refused clearly: {r.content[:100]!r}"
        if _echo(ts, "hi").content != "hi":
            return "the session was stuck after an endless line"
    return None


def mcp_stderr_flood() -> str | None:
    rss = _rss_mb()
    with _hostile("stderr_flood", str(64 << 20), startup_timeout_s=30.0) as ts:
        if _echo(ts, "hi").content != "hi":
            return "a server flooding stderr stalled"
        kept = len(ts.stderr_tail().encode())
        if kept > ts.limits.max_stderr_bytes:
            return f"{kept} bytes of stderr kept (limit {ts.limits.max_stderr_bytes})"
    if _rss_mb() - rss > 200:
        return f"a stderr flood grew memory by {_rss_mb() - rss:.0f} MB"
    return None


def mcp_detached_grandchild() -> str | None:
    pidfile = Path(tempfile.mkdtemp(prefix="attack-mcp-")) / "pid"
    ts = _hostile("grandchild", str(pidfile))
    deadline = time.monotonic() + 15
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pidfile.exists():
        ts.close()
        return None  # the grandchild never started: nothing to outlive close()
    pid = int(pidfile.read_text())
    ts.close()
    if _wait_gone({pid}):
        os.kill(pid, 9)
        return "a detached grandchild (setsid) outlived close()"
    return None


def _startup_attack(mode: str, *args: str) -> str | None:
    before = _servers(mode)
    start = time.monotonic()
    try:
        ts = _hostile(mode, *args, startup_timeout_s=4.0)
    except (TimeoutError, ConnectionError):
        pass
    else:
        ts.close()
        return f"a {mode} server was accepted"
    if time.monotonic() - start > 4.0 + 10:
        return f"start-up against a {mode} server took {time.monotonic() - start:.1f} s"
    if _wait_gone(_servers(mode) - before):
        return f"the {mode} server outlived its failed start-up"
    return None


def _call_attack(mode: str, *args: str, expect: str) -> str | None:
    with _hostile(mode, *args) as ts:
        start = time.monotonic()
        r = _echo(ts, "hi")
        if r.error is None or expect not in r.content:
            return f"a {mode} call gave {r.content[:100]!r}"
        if time.monotonic() - start > 15:
            return f"a {mode} call took {time.monotonic() - start:.1f} s"
    return None


def mcp_many_tools() -> str | None:
    with _hostile("many_tools", "20000", startup_timeout_s=30.0) as ts:
        if len(ts.tools) > ts.limits.max_tools:
            return f"{len(ts.tools)} tools accepted (limit {ts.limits.max_tools})"
        if len(ts.skipped) > ts.limits.max_skipped_listed + 1:
            return f"{len(ts.skipped)} skip records kept"
    return None


def mcp_huge_and_deep_schemas() -> str | None:
    with _hostile("huge_schema", "5000") as ts:
        tools = {t.name: t for t in ts.tools}
        if "big" in tools or "deep" in tools:
            return "an enormous or deeply nested schema reached the tool prompt"
        if len(tools["longdesc"].description) > ts.limits.max_description_chars:
            return "an enormous description reached the tool prompt"
    try:
        _hostile("deep_schema", "20000").close()
    except ConnectionError:
        return None
    except TimeoutError:
        return "a schema too deep to parse made start-up time out instead of failing clearly"
    return None


def mcp_bad_and_colliding_names() -> str | None:
    from agentic_rl.envs import tool_system_prompt

    with _hostile("bad_tools") as ts:
        names = [t.name for t in ts.tools]
        if len(names) != len(set(names)):
            return f"colliding tool names accepted: {names}"
        if set(names) != {"echo", "good2"}:
            return f"invalid tool names accepted: {sorted(set(names) - {'echo', 'good2'})!r}"
        tool_system_prompt(ts.tools).encode("utf-8")
    return None


def mcp_paginate_forever() -> str | None:
    start = time.monotonic()
    with _hostile("paginate_forever") as ts:
        if len(ts.tools) > ts.limits.max_tools:
            return "endless pagination produced unbounded tools"
    if time.monotonic() - start > 30:
        return "endless pagination took too long"
    return None


def mcp_deaf_server() -> str | None:
    from agentic_rl.envs.tools.base import ToolExecutionError

    before = _servers("deaf")
    ts = _hostile("deaf")
    start = time.monotonic()
    try:
        ts.call("echo", {"text": "x" * 500_000})
        return "a call to a deaf server answered"
    except ToolExecutionError:
        pass
    if time.monotonic() - start > 15:
        return "a call to a deaf server took too long"
    start = time.monotonic()
    ts.close()
    if time.monotonic() - start > 20:
        return f"close() took {time.monotonic() - start:.1f} s on a deaf server"
    if _wait_gone(_servers("deaf") - before):
        return "a deaf server that ignores SIGTERM outlived close()"
    return None


def mcp_floods() -> str | None:
    """Floods of notifications or blank lines before each answer: the call answers or fails
    with a clear timeout, in bounded time, and never crashes or hangs."""
    for mode, n in (("notify_flood", "20000"), ("blank_flood", "1000000")):
        with _hostile(mode, n, startup_timeout_s=60.0) as ts:
            start = time.monotonic()
            r = _echo(ts, "hi")
            if r.content != "hi" and not (
                r.error == "tool_error" and "did not answer" in r.content
            ):
                return f"a {mode} server's call gave {r.content[:100]!r}"
            if time.monotonic() - start > 20:
                return f"a {mode} stalled the call for {time.monotonic() - start:.1f} s"
    return None


# -- the parser: item 13 and its class ----------------------------------------------------------


def _lookup_tool():
    from agentic_rl.envs import Tool

    return Tool(
        "lookup",
        "look up",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
        lambda key: key,
    )


def parser_close_tag_in_string() -> str | None:
    from agentic_rl.envs import parse_action

    for key in ("</tool_call>", 'x"</tool_call>"', "</tool_call><tool_call>{}", "\\</tool_call>"):
        text = _call_text("lookup", {"key": key})
        action = parse_action(text, [_lookup_tool()])
        if action.errors or dict(action.tool_calls[0].arguments) != {"key": key}:
            return f"a raw </tool_call> inside a string was not carried: {key!r} -> {action.errors}"
    return None


def parser_escaped_close_round_trip() -> str | None:
    from agentic_rl.envs import parse_action
    from agentic_rl.envs.tools.parser import render_tool_call

    for key in ("</tool_call>", "</", "<\\/tool_call>", "a</tool_call>b</tool_call>", "\ud800</"):
        text = render_tool_call("lookup", {"key": key})
        if text.count("</tool_call>") != 1:
            return f"the renderer left a raw </tool_call> inside a string: {text!r}"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "the renderer produced text that is not valid UTF-8"
        # the sampler's cut: up to and including the first raw stop string
        cut = text[: text.find("</tool_call>") + len("</tool_call>")]
        action = parse_action(cut, [_lookup_tool()])
        if action.errors or dict(action.tool_calls[0].arguments) != {"key": key}:
            return f"a rendered call did not round-trip: {key!r} -> {action.errors}"
    return None


def parser_stop_string_cut() -> str | None:
    """The sampler cuts at a raw </tool_call> inside a string: no wrong call may run."""
    from agentic_rl.envs import parse_action

    full = _call_text("lookup", {"key": "rm -rf / </tool_call> --no-preserve-root"})
    cut = full[: full.find("</tool_call>") + len("</tool_call>")]
    action = parse_action(cut, [_lookup_tool()])
    if action.tool_calls:
        return f"a call cut mid-string executed with {dict(action.tool_calls[0].arguments)}"
    if not any("<\\/tool_call>" in e.message for e in action.errors):
        return f"the error does not teach the escape: {action.errors}"
    return None


def parser_linear_time() -> str | None:
    from agentic_rl.envs import parse_action

    texts = {
        "quotes": "<tool_call>" + '"' * 5_000_000,
        "closes in strings": '<tool_call>"</tool_call>"' * 200_000,
        "opens": "<tool_call>" * 500_000,
        "stray closes": "</tool_call>" * 500_000 + "<tool_call>",
        "backslashes": "<tool_call>" + '"\\' * 2_000_000,
        "angles": "<tool_call>" + "<" * 5_000_000 + "</tool_call>",
        "many blocks": _call_text("lookup", {"key": "x"}) * 100_000,
    }
    for name, text in texts.items():
        start = time.monotonic()
        action = parse_action(text, [_lookup_tool()])
        if action.text != text:
            return f"{name}: the action lost its text"
        if time.monotonic() - start > 10:
            return f"parsing {name} ({len(text)} chars) took {time.monotonic() - start:.1f} s"
    return None


def parser_deep_json() -> str | None:
    from agentic_rl.envs import parse_action

    for body in (
        "[" * 4000 + "]" * 4000,
        '{"name": "lookup", "arguments": "' + "[" * 3000 + '"}',
        '{"name": "lookup", "arguments": {"key": ' + "[" * 2000 + "]" * 2000 + "}}",
    ):
        action = parse_action(f"<tool_call>{body}</tool_call>", [_lookup_tool()])
        if action.tool_calls or not action.errors:
            return "a deeply nested call was accepted"
    return None


def parser_hostile_argument_values() -> str | None:
    from agentic_rl.envs import ParserLimits, parse_action

    tool = _lookup_tool()
    for body in (
        '{"name": "lookup", "arguments": {"key": "\\ud800"}}',
        '{"name": "lookup", "arguments": {"key": "x", "key": 5}}',
        '{"name": "lookup", "arguments": {"key": 1e999}}',
        '{"name": "lookup", "arguments": {"key": NaN}}',
        '{"name": "lookup\\u0000", "arguments": {"key": "x"}}',
        '{"name": ["lookup"], "arguments": {"key": "x"}}',
        '{"name": "lookup", "arguments": null}',
    ):
        action = parse_action(f"<tool_call>{body}</tool_call>", [tool], ParserLimits(max_calls=4))
        for call in action.tool_calls:
            if not isinstance(call.arguments.get("key"), str):
                return f"a non-string key passed the schema: {body}"
    return None


# -- calculator and search -------------------------------------------------------------------------


def calc_power_towers() -> str | None:
    from agentic_rl.envs import calculator_tool

    tool = calculator_tool()
    for expr in (
        "9**9**9",
        "2**2**2**2**2**2",
        "(10**18)**(10**18)",
        "9**9**9**9**9",
        "(-9)**(9**9)",
        "10**18*10**18",
        "2**63*2**63",
        "0.5**-(10**18)",
        "(1+1e-15)**(10**18)",
        "exp(exp(exp(10)))",
        "10.0**308*10",
        "2**1023.9999",
    ):
        start = time.monotonic()
        content, error = _policy_call([tool], "calculator", {"expression": expr})
        if _crashed(error) or time.monotonic() - start > 5:
            return f"{expr!r}: {error} after {time.monotonic() - start:.1f} s: {content[:80]}"
        if error is None and len(content) > 40:
            return f"{expr!r} produced a huge number ({len(content)} digits)"
    return None


def calc_deep_nesting_and_many_terms() -> str | None:
    from agentic_rl.envs import calculator_tool
    from agentic_rl.envs.tools.calculator import CalculatorError, evaluate_expression

    tool = calculator_tool()
    exprs = [
        "-" * 255 + "1",
        "(" * 127 + "1" + ")" * 127,
        "+".join(["1"] * 128),
        "*".join(["9"] * 100),
        "max(" * 60 + "1" + ")" * 60,
        "sqrt(" * 50 + "2" + ")" * 50,
        "1" + "**1" * 100,
        "~" * 200 + "1",
    ]
    for expr in exprs:
        content, error = _policy_call([tool], "calculator", {"expression": expr})
        if _crashed(error):
            return f"{expr[:30]!r}...: {content[:80]}"
    for expr in ("1+" * 500_000 + "1", "(" * 100_000, "-" * 1_000_000 + "1"):  # direct calls
        start = time.monotonic()
        try:
            evaluate_expression(expr)
            return f"{expr[:20]!r}... was evaluated"
        except CalculatorError:
            pass
        if time.monotonic() - start > 5:
            return f"refusing {len(expr)} characters took {time.monotonic() - start:.1f} s"
    return None


def search_enormous_queries() -> str | None:
    from agentic_rl.envs import SearchIndex, generate_world, search_tools

    tools = list(search_tools(SearchIndex(generate_world(3).documents)))
    start = time.monotonic()
    for arguments in (
        {"query": "tolk " * 100},
        {"query": "x" * 500},
        {"query": "a1 " * 166},
        {"query": "q " * 1_000_000},
        {"query": "vessa", "k": 10**18},
        {"query": "\x00" * 400},
        {"query": "é" * 500},
        {"query": "😀" * 500},
    ):
        content, error = _policy_call(tools, "search", arguments)
        if _crashed(error) or len(content) > 10_000:
            return f"search({_short(arguments)}) gave {error}: {content[:80]}"
    for doc_id in ("\x00", "../../etc/passwd", "[" * 100, "city-0" + " " * 90):
        content, error = _policy_call(tools, "open", {"doc_id": doc_id})
        if _crashed(error):
            return f"open({doc_id!r}) crashed: {content[:80]}"
    if time.monotonic() - start > 20:
        return f"hostile searches took {time.monotonic() - start:.1f} s"
    return None


# -- the list ----------------------------------------------------------------------------------


def _a(name: str, item: str, fn, timeout_s: float = 60.0, description: str = "") -> Attack:
    return Attack(name, item, fn, timeout_s, description or (fn.__doc__ or "").strip())


ATTACKS: list[Attack] = [
    _a(
        "fs_hardlink_read",
        "11",
        fs_hardlink_read,
        description="read an outside file via a hard link",
    ),
    _a(
        "fs_hardlink_overwrite",
        "11",
        fs_hardlink_overwrite,
        description="overwrite an outside file via a hard link",
    ),
    _a("fs_hardlink_swap_race", "11", fs_hardlink_swap_race),
    _a(
        "fs_symlinks_anywhere",
        "new",
        fs_symlinks_anywhere,
        description="symlinks as the file, a middle component, to /proc, dangling",
    ),
    _a(
        "fs_path_string_tricks",
        "new",
        fs_path_string_tricks,
        description="'..', absolute, NUL, lookalike dots/slashes, bidi, long names, /proc",
    ),
    _a(
        "fs_fifo_and_socket",
        "new",
        fs_fifo_and_socket,
        description="read/write a FIFO and a socket (opening a FIFO blocks)",
    ),
    _a("fs_fifo_swapped_in_after_check", "new", fs_fifo_swapped_in_after_check),
    _a("fs_directory_swap_race", "new", fs_directory_swap_race),
    _a("fs_replaced_root", "new", fs_replaced_root, description="the root replaced by a symlink"),
    _a("fs_huge_sparse_file", "new", fs_huge_sparse_file, description="read a 4 TiB sparse file"),
    _a("fs_huge_writes", "new", fs_huge_writes, description="64 MiB writes, the total budget"),
    _a("fs_enormous_directory", "new", fs_enormous_directory, 120.0, "list/count 50000 entries"),
    _a(
        "fs_odd_names_in_listings",
        "new",
        fs_odd_names_in_listings,
        description="non-UTF-8, newline and bidi names in listings",
    ),
    _a("fs_binary_paging", "new", fs_binary_paging, description="page through a binary file"),
    _a("mcp_huge_result", "12", mcp_huge_result, 120.0, "a 32 MiB tool result"),
    _a("mcp_stderr_flood", "12", mcp_stderr_flood, 120.0, "64 MiB written to stderr"),
    _a(
        "mcp_detached_grandchild",
        "12",
        mcp_detached_grandchild,
        90.0,
        "a double-forked setsid grandchild must not outlive close()",
    ),
    _a("mcp_endless_line", "new", mcp_endless_line, 120.0, "a 128 MiB line"),
    _a(
        "mcp_silent_initialize",
        "new",
        functools.partial(_startup_attack, "silent"),
        90.0,
        "a server that never answers initialize",
    ),
    _a(
        "mcp_silent_list_tools",
        "new",
        functools.partial(_startup_attack, "silent_list"),
        90.0,
        "a server that never answers tools/list",
    ),
    _a(
        "mcp_garbage_initialize",
        "new",
        functools.partial(_startup_attack, "garbage_init"),
        90.0,
        "a server that answers initialize with garbage",
    ),
    _a(
        "mcp_silent_call",
        "new",
        functools.partial(_call_attack, "silent_call", expect="did not answer"),
        90.0,
        "a server that never answers a call",
    ),
    _a(
        "mcp_exit_mid_call",
        "new",
        functools.partial(_call_attack, "exit_mid_call", expect="lost"),
        90.0,
        "a server that exits during a call",
    ),
    _a(
        "mcp_garbage_answer",
        "new",
        functools.partial(_call_attack, "garbage", expect="not JSON-RPC"),
        90.0,
        "a server that answers a call with garbage",
    ),
    _a(
        "mcp_wrong_id",
        "new",
        functools.partial(_call_attack, "wrong_id", expect="unexpected id"),
        90.0,
        "a server that answers with an id nobody asked for",
    ),
    _a("mcp_many_tools", "new", mcp_many_tools, 120.0, "20000 tools advertised"),
    _a(
        "mcp_huge_and_deep_schemas",
        "new",
        mcp_huge_and_deep_schemas,
        120.0,
        "enormous and deeply nested schemas, enormous descriptions",
    ),
    _a(
        "mcp_bad_and_colliding_names",
        "new",
        mcp_bad_and_colliding_names,
        90.0,
        "invalid, duplicate, non-string tool names and bad schemas",
    ),
    _a("mcp_paginate_forever", "new", mcp_paginate_forever, 90.0, "an endless tools/list"),
    _a(
        "mcp_deaf_server",
        "new",
        mcp_deaf_server,
        90.0,
        "a server that stops reading stdin and ignores SIGTERM",
    ),
    _a("mcp_floods", "new", mcp_floods, 120.0, "floods of notifications and blank lines"),
    _a(
        "parser_close_tag_in_string",
        "13",
        parser_close_tag_in_string,
        description="a raw </tool_call> inside a JSON string argument",
    ),
    _a(
        "parser_escaped_close_round_trip",
        "13",
        parser_escaped_close_round_trip,
        description="render -> sampler cut -> parse keeps the call",
    ),
    _a("parser_stop_string_cut", "13", parser_stop_string_cut),
    _a("parser_linear_time", "new", parser_linear_time, description="quadratic-time inputs"),
    _a("parser_deep_json", "new", parser_deep_json, description="deeply nested call JSON"),
    _a("parser_hostile_argument_values", "new", parser_hostile_argument_values),
    _a("calc_power_towers", "new", calc_power_towers, description="9**9**9 and friends"),
    _a("calc_deep_nesting_and_many_terms", "new", calc_deep_nesting_and_many_terms),
    _a(
        "search_enormous_queries",
        "new",
        search_enormous_queries,
        120.0,
        "enormous queries, huge k, odd document ids",
    ),
]
