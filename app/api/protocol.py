"""The HTTP/1.1 protocols `jobtrail serve` runs: uvicorn's, with jobtrail's error shape and head bound.

A request that the parser cannot take never reaches the app: a malformed request line, or
a request head over 16 KiB (a URL with thousands of query parameters, which arrives in
several reads), and uvicorn answers it in plain text. These protocols answer the same 400
with the JSON body every other error has, through `send_400_response`, uvicorn's one
place for that answer.

httptools (llhttp, in C) is the default: it parses a request for a fraction of h11's
pure-Python cost, which is a large share of a small request's CPU. h11 stays selectable
(JOBTRAIL_HTTP=h11). h11 bounds the head itself; llhttp does not bound it at all, so the
httptools protocol counts a head's bytes as h11 does and refuses past the same 16 KiB, with
the same answer: one limit, one error, whichever parser runs.
"""

from __future__ import annotations

import asyncio

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # uvicorn takes its default from there too
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobtrail.api.errors import unparsable_request_body
from jobtrail.config import Settings

_JSON_400_HEADERS = [(b"content-type", b"application/json"), (b"connection", b"close")]


def _head_limit(protocol: H11Protocol | HttpToolsProtocol) -> int:
    return protocol.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE


def _json_400(limit: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = unparsable_request_body(limit)
    return body, [*_JSON_400_HEADERS, (b"content-length", str(len(body)).encode())]


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body, headers = _json_400(_head_limit(self))
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with h11's bound on a request head.

    h11 refuses a head that is still incomplete once more than the bound has been read
    for it (a head that arrives whole in one read passes, however long, and the app then
    judges its query parameters); this counts the same: the bytes read while a head is
    incomplete, from the read after the previous request ended (so never a body's bytes).
    llhttp would otherwise buffer an endless header whole.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._head_limit = _head_limit(self)
        self._read_in_head = 0  # bytes read while the head is incomplete
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._read_in_head += len(data)
        super().data_received(data)
        if self._in_head and self._read_in_head > self._head_limit and not self.transport.is_closing():
            self.send_400_response("request head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._read_in_head = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        body, headers = _json_400(self._head_limit)
        head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body)
        self.transport.close()


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol `settings.http` names; the bench's bare app (bench/bare_app.py) runs the same one."""
    return JsonErrorH11Protocol if settings.http == "h11" else JsonErrorHttpToolsProtocol
