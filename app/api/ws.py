"""/ws: many jobs (and the activity feed) on one WebSocket, each resumable exactly by id.

The socket is accepted first and its credentials checked after (app/api/access.py,
SocketAccess), so a refusal is a close frame whose code (4401) and reason a browser can
read, not a bare HTTP 403. Each socket holds one of its tenant's event-stream slots
(app/limits.py, SseSlots) for as long as it is open, counted with the SSE streams.
What happens on the socket is app/api/ws_session.py; its frames are app/api/ws_messages.py.

A plain GET of /ws answers 426 and is what OpenAPI shows: Litestar leaves WebSocket
routes out of the schema, so that operation's description is the protocol's.
"""

from __future__ import annotations

from litestar import WebSocket, get, websocket
from litestar.di import NamedDependency
from redis.exceptions import RedisError

from jobtrail.api.access import PUBLIC, SELF_AUTHENTICATING, SocketAccess
from jobtrail.api.common import error_responses
from jobtrail.api.ws_session import NOT_AUTHENTICATED, Session
from jobtrail.config import Settings
from jobtrail.errors import NotAuthenticated, RateLimited, UpgradeRequired
from jobtrail.eventlog import EventLog
from jobtrail.hub import Hub
from jobtrail.limits import SseSlots

PATH = "/ws"
OVER_LIMIT = 4429  # the tenant's event-stream slots are all taken
UNAVAILABLE = 4503  # Redis did not answer while the socket was being set up
_REASON_BYTES = 123  # the most a close frame's reason may hold


async def _refuse(socket: WebSocket, code: int, reason: str) -> None:
    await socket.close(code, reason.encode()[:_REASON_BYTES].decode(errors="ignore"))


@websocket(PATH, opt={SELF_AUTHENTICATING: True})
async def ws(
    socket: WebSocket,
    events: NamedDependency[EventLog],
    hub: NamedDependency[Hub],
    settings: NamedDependency[Settings],
    sse_slots: NamedDependency[SseSlots],
    socket_access: NamedDependency[SocketAccess],
) -> None:
    await socket.accept()
    try:
        principal, expires_at = await socket_access.principal(socket)
    except NotAuthenticated as exc:
        await _refuse(socket, NOT_AUTHENTICATED, str(exc))
        return
    try:
        slot = await sse_slots.take(principal.scope)
    except RateLimited as exc:
        await _refuse(socket, OVER_LIMIT, str(exc))
        return
    except (RedisError, OSError):
        await _refuse(socket, UNAVAILABLE, "event store unavailable; reconnect later")
        return
    async with sse_slots.holding(principal.scope, slot):
        with events.metrics.ws_connections.track_inprogress():
            await Session(socket, principal, expires_at, events, hub, settings).run()


_PROTOCOL = """Upgrade to a WebSocket here (a plain GET answers 426). One socket follows many jobs and the \
activity feed, each exactly once and in order, replay first, and each resumable by id.

**Auth**: `Authorization: Bearer <key>`, or `?token=` with a read-only token (`POST /jobs/{job_id}/tokens`: that \
job; `POST /events/tokens`: the tenant's feed and every job of the tenant). Bad credentials: the socket is closed \
with code 4401 right after the handshake, the reason says why. A token's socket ends at its expiry: \
`{"type":"end","reason":"token expired"}`, then close 4401. Over the tenant's event-stream limit (counted with SSE \
streams): close 4429; Redis away: close 4503.

**Client → server** (JSON text frames): `{"op":"subscribe","job":ID,"after":EVENT_ID|null}` (null: from the \
beginning); `{"op":"unsubscribe","job":ID}`; `{"op":"subscribe","feed":true,"after":ENTRY_ID|null,"kind":K|null,\
"state":S|null}` (null: the live tail, `"0-0"`: all the feed holds); `{"op":"unsubscribe","feed":true}`; \
`{"op":"ping"}` → `{"type":"pong"}`. Subscribing again to the same job (or the feed) replaces that subscription.

**Server → client**: `{"type":"subscribed","job":ID}` (or `"feed":true`) before the replay; each event as the \
SSE `data:` object plus `"job":ID`; each feed entry as the `/events` `data:` object plus `"feed":true`; \
`{"type":"gap","job":ID,"state":{...}}` (feed: `{"type":"gap","feed":true,"first_available":ID}`) when history \
after `after` was trimmed; `{"type":"skipped","job":ID,"id":EVENT_ID}` for an unreadable entry; \
`{"type":"end","job":ID,"reason":R}` (or `"feed":true`) with R one of `terminal`, `deleted`, `unsubscribed`, \
`not found` (instead of the ack: missing, or another tenant's job), `server stopping`, `event store unavailable`, \
`too slow`, `unreadable entry`; after the last four, subscribing with `after` = the last id received resumes \
exactly. `{"type":"error","code":C,"message":M,"job":ID?}` for a bad message (codes `bad_json`, `bad_message`, \
`unknown_op`, `message_too_large`, `too_many_subscriptions`, `not_covered`); the socket stays open unless more \
than `JOBTRAIL_WS_MAX_ERRORS` come in a minute (close 1008). Limits: `JOBTRAIL_WS_MAX_SUBSCRIPTIONS` per socket, \
`JOBTRAIL_WS_MAX_MESSAGE_BYTES` per client message, `JOBTRAIL_WS_QUEUE_SIZE` frames queued per socket. The server \
sends WebSocket pings every `JOBTRAIL_WS_PING_S`."""


@get(
    PATH,
    tags=["websocket"],
    summary="WebSocket: many jobs and the activity feed on one connection",
    description=_PROTOCOL,
    status_code=426,
    responses=error_responses(426),
    opt=PUBLIC,
)
async def ws_described() -> None:
    raise UpgradeRequired("/ws is a WebSocket endpoint: connect with a WebSocket client (`Upgrade: websocket`)")
