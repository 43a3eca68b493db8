"""The reference for the HTTP rows: a bare Litestar app doing the least each route needs.

    REDIS_URL=redis://127.0.0.1:PORT/0 BENCH_PREFIX=jt python -m bench.bare_app --port 8001

- `POST /jobs`: one XADD of the body to a queue stream, 202 with the entry id;
- `GET /jobs/{id}`: one HGETALL of the job's state hash (jobtrail's own key), 200 or 404;
- `GET /fanout/{stream}`: SSE; one XREAD loop per process over the streams that have
  subscribers, each entry encoded once and handed to every subscriber's queue; an entry
  of type `end` closes the streams. The bench appends to the stream itself.

It runs under uvicorn with the same event loop and HTTP protocol as `jobtrail serve`, taken
from the same settings (JOBTRAIL_LOOP, JOBTRAIL_HTTP: uvloop and httptools by default) by the
same code (app/eventloop.py, app/api/protocol.py), with no access log, so the ratio against
it is what jobtrail's own code costs, not a different server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import msgspec
import redis.asyncio as aioredis
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.response import Response, Stream

from jobtrail import eventloop
from jobtrail.api.protocol import protocol_class
from jobtrail.config import Settings
from jobtrail.keys import Keys

QUEUE = "bare:queue"


class Entry(msgspec.Struct):
    id: str
    type: str
    at: int
    data: msgspec.Raw


_encode = msgspec.json.Encoder().encode


class FanOut:
    """One blocking XREAD per process for every stream with subscribers; a frame encoded once for all."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.subscribers: dict[str, set[asyncio.Queue[bytes | None]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def subscribe(self, stream: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.subscribers.setdefault(stream, set()).add(queue)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())
        try:
            yield b"retry: 2000\n\n"
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            self.subscribers[stream].discard(queue)

    async def _read(self) -> None:
        last: dict[str, str] = {}
        while self.subscribers:
            for stream in self.subscribers:
                if stream not in last:
                    # A concrete id, not "$": an XADD between a read that timed out and the next
                    # read would be lost if each read started again from "$".
                    newest = await self.redis.xrevrange(stream, "+", "-", count=1)
                    last[stream] = newest[0][0] if newest else "0-0"
            replies = await self.redis.xread(dict(last), block=1000)
            for stream, entries in replies or []:
                for entry_id, fields in entries:
                    last[stream] = entry_id
                    self._publish(stream, entry_id, fields)

    def _publish(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        queues = self.subscribers.get(stream, set())
        if fields.get("type") == "end":
            frame = None
        else:
            body = Entry(entry_id, fields["type"], int(fields["at"]), msgspec.Raw(fields["data"].encode()))
            frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (entry_id.encode(), fields["type"].encode(), _encode(body))
        for queue in queues:
            queue.put_nowait(frame)


def create_app(redis_url: str, prefix: str) -> Litestar:
    redis = aioredis.from_url(redis_url, decode_responses=True)
    keys = Keys(prefix)
    fanout = FanOut(redis)

    @post("/jobs", status_code=202)
    async def submit(request: Request) -> Response[bytes]:
        body = msgspec.json.decode(await request.body())
        entry_id = await redis.xadd(f"{prefix}:{QUEUE}", {"job": msgspec.json.encode(body)})
        return Response(_encode({"id": entry_id}), media_type="application/json", status_code=202)

    @get("/jobs/{job_id:str}")
    async def status(job_id: str) -> Response[bytes]:
        state = await redis.hgetall(keys.job(job_id))
        if not state:
            raise NotFoundException(f"no job {job_id}")
        return Response(_encode(state), media_type="application/json")

    @get("/fanout/{stream:str}")
    async def events(stream: str) -> Stream:
        return Stream(fanout.subscribe(stream), media_type="text/event-stream")

    @get("/readyz")
    async def ready() -> dict[str, str]:
        await redis.ping()
        return {"status": "ready"}

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await redis.aclose()

    return Litestar([submit, status, events, ready], lifespan=[lifespan])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["REDIS_URL"], os.environ.get("BENCH_PREFIX", "jt"))
    settings = Settings.from_env()
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, http=protocol_class(settings),
                            access_log=False, log_level="warning")
    eventloop.run(uvicorn.Server(config).serve(), settings)


if __name__ == "__main__":
    main()
