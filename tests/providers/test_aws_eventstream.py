"""The event-stream decoder against botocore's published vectors
(botocore tests/unit/test_eventstream.py): each message whole and cut anywhere, the
malformed ones refused at once."""

from __future__ import annotations

import pytest

from llmroute.providers.aws_eventstream import (
    EventStreamDecoder,
    EventStreamError,
    Message,
    encode_message,
)

EMPTY = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff"
PAYLOAD_NO_HEADERS = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96"
ONE_STRING_HEADER = (
    b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
    b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1"
)
ALL_HEADER_TYPES = (
    b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
    b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
    b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
    b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
    b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
    b"\x63\x35\x36\x71"
)
ERROR_MESSAGE = (
    b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
    b"\x0d:message-type\x07\x00\x05error"
    b"\x0b:error-code\x07\x00\x04code"
    b"\x0e:error-message\x07\x00\x07message"
    b"\x6b\x6c\xea\x3d"
)
INITIAL_RESPONSE = (  # botocore gives it in these three pieces
    b"\x00\x00\x00~\x00\x00\x00O\xc5\xa3\xdd\xc6\r:message-type\x07\x00",
    b"\x05event\x0b:event-type\x07\x00\x10initial-response\r:content-type",
    b'\x07\x00\ttext/json{"InitialResponse": "sometext"}\xf6\x98$\x83',
)
POSITIVE = [
    (EMPTY, Message({}, b"")),
    (PAYLOAD_NO_HEADERS, Message({}, b"{'foo':'bar'}")),
    (ONE_STRING_HEADER, Message({"content-type": "application/json"}, b"{'foo':'bar'}")),
    (
        ALL_HEADER_TYPES,
        Message(
            {
                "0": True,
                "1": False,
                "2": 2,
                "3": 3,
                "4": 4,
                "5": 5,
                "6": b"bytes",
                "7": "utf8",
                "8": 8,
                "9": b"0123456789abcdef",
            },
            b"",
        ),
    ),
    (
        ERROR_MESSAGE,
        Message(
            {":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""
        ),
    ),
]


@pytest.mark.parametrize(("encoded", "decoded"), POSITIVE)
def test_botocores_messages_decode_whole_and_cut_anywhere(encoded: bytes, decoded: Message) -> None:
    assert EventStreamDecoder().feed(encoded) == [decoded]
    for cut in range(1, len(encoded)):
        decoder = EventStreamDecoder()
        assert decoder.feed(encoded[:cut]) == []
        assert decoder.feed(encoded[cut:]) == [decoded]
        assert decoder.pending == 0


def test_all_of_them_in_one_buffer_and_byte_by_byte() -> None:
    whole = b"".join(encoded for encoded, _ in POSITIVE)
    assert EventStreamDecoder().feed(whole) == [decoded for _, decoded in POSITIVE]
    decoder = EventStreamDecoder()
    got = [m for i in range(len(whole)) for m in decoder.feed(whole[i : i + 1])]
    assert got == [decoded for _, decoded in POSITIVE]


def test_the_initial_response_in_botocores_three_pieces() -> None:
    decoder = EventStreamDecoder()
    got = [m for piece in INITIAL_RESPONSE for m in decoder.feed(piece)]
    assert got == [
        Message(
            {
                ":message-type": "event",
                ":event-type": "initial-response",
                ":content-type": "text/json",
            },
            b'{"InitialResponse": "sometext"}',
        )
    ]


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(
            b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96", id="length"
        ),
        pytest.param(
            b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96", id="payload"
        ),
        pytest.param(ONE_STRING_HEADER.replace(b"content-type", b"content+type"), id="headers"),
        pytest.param(
            b"\x00\x00\x00=\xff\x00\x01\x02\x07\xfd\x83\x96\x0ccontent-type\x07\x00"
            b"\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
            id="headers-length",
        ),
        pytest.param(
            b"\x00\x00\x00\x24\x00\x00\x00\x14\x4b\xb9\x82\xd0"
            b"\x04test\x04asdf\x04test\x04asdf\xf3\xf4\x75\x63",
            id="duplicate-header",
        ),
    ],
)
def test_botocores_malformed_messages_are_refused_at_once(encoded: bytes) -> None:
    """A corrupt prelude is refused from its 12 bytes: no wait for a body that a wrong
    length says is 16 MiB long."""
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(encoded)


def test_the_encoder_writes_botocores_bytes() -> None:
    assert encode_message({"content-type": "application/json"}, b"{'foo':'bar'}") == (
        ONE_STRING_HEADER
    )
