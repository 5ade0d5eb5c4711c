"""The host's end of the code sandbox's control channel: bounded I/O, untrusted replies.

The worker and the host exchange length-prefixed JSON frames over a Unix socket pair. The
worker's end sits in the same process as model-written code, which can write anything to
it at any time, so everything read from it is untrusted input:

- every send and receive has a deadline (non-blocking socket + poll), so a worker that
  stops reading or writing cannot block the host; `MSG_NOSIGNAL` means a closed peer is an
  error (`ChannelClosed`), never a SIGPIPE for the host;
- a frame larger than the caller's bound, bytes that are not a JSON object, non-finite
  numbers, any float where an int is expected, unknown or missing keys, wrong types or
  out-of-range values are a `ProtocolError`;
- each request carries a sequence number that the reply must echo, and bytes that arrive
  after a complete reply (or between cells) are a violation, so a forged frame can never
  shift which reply answers which request.

The caller (`CodeSandbox`) answers every violation by killing the worker and starting a
fresh one; nothing here ever raises anything but the three errors below.

Imports: stdlib only; never jax.
"""

from __future__ import annotations

import json
import math
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
_CHUNK = 1 << 16
_POLL_S = 0.1  # how often a waiting call runs its watchdog


class ChannelTimeout(TimeoutError):
    """The deadline passed; `stage` is "send" or "receive"."""

    def __init__(self, stage: str):
        super().__init__(f"no progress on the control channel ({stage}) before the deadline")
        self.stage = stage


class ChannelClosed(EOFError):
    """The worker's end is closed (the worker died or closed the socket)."""


class ProtocolError(ValueError):
    """The worker sent something that is not a valid reply."""


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-finite number {name} in a reply")


def decode_frame(data: bytes) -> dict[str, Any]:
    """Bytes of one frame -> a JSON object, or `ProtocolError` (never anything else)."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError, MemoryError, UnicodeDecodeError) as e:
        raise ProtocolError(f"undecodable reply ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"reply is a JSON {type(obj).__name__}, not an object")
    return obj


def encode_frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()  # ASCII: lone surrogates travel as \\ud800 escapes
    return HEADER.pack(len(data)) + data


class Channel:
    """The host's end of the socket pair; see the module docstring."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _wait(self, events: int, deadline: float, watchdog: Callable[[], None] | None,
              stage: str) -> None:  # fmt: skip
        """Waits until the socket is ready for `events`, running `watchdog` every _POLL_S."""
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        while True:
            if watchdog is not None:
                watchdog()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(stage)
            try:
                if poller.poll(1000 * min(remaining, _POLL_S)):
                    return
            except InterruptedError:  # pragma: no cover - PEP 475 retries poll itself
                continue

    def send(self, obj: dict[str, Any], deadline: float,
             watchdog: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Sends one frame before `deadline` or raises `ChannelTimeout`/`ChannelClosed`."""
        view = memoryview(encode_frame(obj))
        while view:
            try:
                sent = self.sock.send(view[: _CHUNK * 4], socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLOUT, deadline, watchdog, "send")
                continue
            except OSError as e:  # EPIPE, ECONNRESET, EBADF after close ...
                raise ChannelClosed(f"the worker's end is closed ({e.strerror})") from None
            view = view[sent:]

    def _fill(self, deadline: float, watchdog: Callable[[], None] | None, limit: int) -> None:
        """Reads at least one more byte into the buffer (at most `limit` buffered in all)."""
        while True:
            try:
                chunk = self.sock.recv(max(1, min(_CHUNK, limit - len(self._buffer))))
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLIN, deadline, watchdog, "receive")
                continue
            except OSError as e:
                raise ChannelClosed(f"the worker's end is closed ({e.strerror})") from None
            if not chunk:
                raise ChannelClosed("the worker closed the control channel")
            self._buffer += chunk
            return

    def receive(self, deadline: float, max_bytes: int,
                watchdog: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """One frame as a JSON object; `ProtocolError` if it is over `max_bytes` or malformed.

        Reads exactly the frame's bytes, never into the next one: at start-up the
        supervisor's frame and the worker's hello are sent back to back, and a host slow
        to read (a loaded machine) used to find both in one recv and fail the start with
        "unexpected bytes after a reply". Bytes nobody asked for stay in the socket, where
        `pending()` finds them before the next cell runs."""
        while len(self._buffer) < HEADER.size:
            self._fill(deadline, watchdog, HEADER.size)
        (size,) = HEADER.unpack(self._buffer[: HEADER.size])
        if size > max_bytes:
            raise ProtocolError(f"oversized reply ({size} bytes > {max_bytes})")
        while len(self._buffer) < HEADER.size + size:
            self._fill(deadline, watchdog, HEADER.size + size)
        data = bytes(self._buffer[HEADER.size : HEADER.size + size])
        extra = len(self._buffer) - HEADER.size - size
        self._buffer.clear()
        if extra:
            raise ProtocolError(f"{extra} unexpected bytes after a reply")
        return decode_frame(data)

    def pending(self) -> bool:
        """True if the worker sent anything that was not asked for (or closed its end)."""
        if self._buffer:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        # an empty read (b"") means the peer closed: `bool(b"")` is False, and the next
        # send/receive reports it as ChannelClosed


# -- validation of the worker's replies ------------------------------------------------------


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"field {key!r} must be an int in [{lo}, {hi}], got {value!r:.50}")
    return value


def _str_field(obj: dict[str, Any], key: str, max_chars: int, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return None  # type: ignore[return-value]
    if type(value) is not str or len(value) > max_chars:
        raise ProtocolError(f"field {key!r} must be a str of at most {max_chars} characters")
    # A forged frame can carry lone surrogates ("\ud800"), which would make the observation
    # unencodable further down the pipeline (tokenizers, JSON writers): replace them.
    return value.encode("utf-8", "replace").decode("utf-8")


def validate_reply(obj: dict[str, Any], seq: int, *, max_output_chars: int,
                   max_error_chars: int) -> dict[str, Any]:  # fmt: skip
    """A cell's reply: exactly {seq, output, output_bytes, error} with sane values."""
    if set(obj) != {"seq", "output", "output_bytes", "error"}:
        raise ProtocolError(f"unexpected reply fields {sorted(map(str, obj))[:8]}")
    if _int_field(obj, "seq", 0, 1 << 62) != seq:
        raise ProtocolError(f"reply to request {obj['seq']} while waiting for {seq}")
    return {
        "output": _str_field(obj, "output", max_output_chars),
        "output_bytes": _int_field(obj, "output_bytes", 0, 1 << 62),
        "error": _str_field(obj, "error", max_error_chars, optional=True),
    }


def validate_hello(obj: dict[str, Any]) -> dict[str, Any]:
    """The worker's greeting, sent by trusted start-up code before any cell ran; still
    checked for shape so that a broken worker is a clear error rather than a crash."""
    applied = obj.get("applied")
    if obj.get("seq") != 0 or obj.get("ready") is not True or not isinstance(applied, dict):
        raise ProtocolError(f"unexpected greeting {obj!r:.200}")

    def finite(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and finite(v) for k, v in value.items())
        if isinstance(value, list):
            return all(finite(v) for v in value)
        return value is None or isinstance(value, (str, int, bool))

    if not finite(applied):
        raise ProtocolError("malformed protections in the greeting")
    return applied


def read_bounded(fd: int, deadline: float, max_bytes: int = 4000) -> bytes:
    """Up to `max_bytes` from a pipe until EOF or `deadline` (start-up diagnostics)."""
    out = bytearray()
    os.set_blocking(fd, False)
    while len(out) < max_bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        try:
            chunk = os.read(fd, max_bytes - len(out))
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)
