"""AWS event-stream framing (``application/vnd.amazon.eventstream``), the binary form
Amazon Bedrock streams an answer in: what `EventStreamDecoder` reads, whatever chunks
the bytes arrive in, checking both CRCs of every message.

A message is a prelude (total length, headers length, both big-endian uint32, and the
CRC32 of those 8 bytes), the headers (name length uint8, name, value type uint8, value),
the payload and the CRC32 of everything before it. A bad CRC or length is an
`EventStreamError` at once, never a wait for bytes that will not come. Checked against
botocore's published vectors (tests/providers/test_aws_eventstream.py).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["EventStreamDecoder", "EventStreamError", "Message", "encode_message"]

HeaderValue = bool | int | bytes | str
_PRELUDE = 12
_MIN_MESSAGE = _PRELUDE + 4
# The limits AWS's SDKs enforce: a payload of at most 16 MiB, headers of at most 128 KiB.
_MAX_PAYLOAD = 16 * 1024 * 1024
_MAX_HEADERS = 128 * 1024
_INTS = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}  # value type -> struct format


class EventStreamError(ValueError):
    """Bytes that are not a valid event-stream message (a CRC or a length is wrong)."""


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str:
        """A string header's value, "" when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


class EventStreamDecoder:
    """Feed it bytes as they come; it returns each message they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= _PRELUDE:
            total, headers_length = _prelude(bytes(self._buffer[:_PRELUDE]))
            if len(self._buffer) < total:
                break
            raw = bytes(self._buffer[:total])
            del self._buffer[:total]
            out.append(_message(raw, headers_length))
        return out

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete (at the end of a stream: a cut one)."""
        return len(self._buffer)


def _prelude(prelude: bytes) -> tuple[int, int]:
    total, headers_length, crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != crc:
        raise EventStreamError("event-stream prelude CRC does not match")
    if headers_length > _MAX_HEADERS:
        raise EventStreamError(f"event-stream headers of {headers_length} bytes")
    payload_length = total - _MIN_MESSAGE - headers_length
    if payload_length < 0 or payload_length > _MAX_PAYLOAD:
        raise EventStreamError(f"event-stream message of {total} bytes")
    return total, headers_length


def _message(raw: bytes, headers_length: int) -> Message:
    (crc,) = struct.unpack(">I", raw[-4:])
    if zlib.crc32(raw[:-4]) != crc:
        raise EventStreamError("event-stream message CRC does not match")
    headers_end = _PRELUDE + headers_length
    headers = _headers(raw[_PRELUDE:headers_end])
    return Message(headers, raw[headers_end:-4])


def _headers(data: bytes) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(data):
            size = data[at]
            name = data[at + 1 : at + 1 + size].decode("utf-8")
            at += 1 + size
            kind = data[at]
            at += 1
            value, at = _value(data, at, kind)
            if name in out:
                raise EventStreamError(f"event-stream header {name!r} twice")
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise EventStreamError("event-stream headers are malformed") from None
    return out


def _value(data: bytes, at: int, kind: int) -> tuple[HeaderValue, int]:
    if kind in (0, 1):
        return kind == 0, at
    if kind in _INTS:
        fmt = _INTS[kind]
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise IndexError
        return struct.unpack(fmt, data[at : at + size])[0], at + size
    if kind in (6, 7):
        (size,) = struct.unpack(">H", data[at : at + 2])
        raw = data[at + 2 : at + 2 + size]
        if len(raw) != size:
            raise IndexError
        return (raw.decode("utf-8") if kind == 7 else raw), at + 2 + size
    if kind == 9:
        raw = data[at : at + 16]
        if len(raw) != 16:
            raise IndexError
        return raw, at + 16  # a UUID's 16 bytes, as botocore gives them
    raise EventStreamError(f"event-stream header value of unknown type {kind}")


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One message with string headers (what Bedrock sends; the tests' fake sends it)."""
    encoded = b"".join(
        bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
        for n, v in ((k.encode(), val.encode()) for k, val in headers.items())
    )
    total = _MIN_MESSAGE + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))
