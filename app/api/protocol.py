"""The HTTP/1.1 protocol `jobtrail serve` runs: uvicorn's h11 one, with jobtrail's error shape.

A request that h11 cannot parse never reaches the app: a malformed request line, or a
request head over h11's 16 KiB bound (a URL with thousands of query parameters, which
arrives in several reads), and uvicorn answered it in plain text. This protocol answers
the same 400 with the JSON body every other error has. It overrides
`H11Protocol.send_400_response`, uvicorn's one place for that answer, and is named
explicitly so that installing httptools does not swap it out.
"""

from __future__ import annotations

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # uvicorn takes its default from there too
from uvicorn.protocols.http.h11_impl import H11Protocol

from jobtrail.api.errors import unparsable_request_body


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = unparsable_request_body(self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
