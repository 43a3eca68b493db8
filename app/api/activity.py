"""/events: the activity feed of every job's transitions, as server-sent events.

A tenant reads its own feed stream, which holds its own jobs' transitions only; an admin
reads the global one, which holds everybody's (app/activity.py). So neither the replay nor
the live tail of a tenant costs anything in proportion to other tenants' traffic.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import Stream

from jobtrail.api.access import FEED_TOKEN
from jobtrail.api.common import SSE_ROUTE, error_responses, requested_offset, sse_response, token_ttl
from jobtrail.api.schemas import ActivityStreamMessage, TokenOut, TokenRequest
from jobtrail.auth import Principal
from jobtrail.config import Settings
from jobtrail.eventlog import EventLog
from jobtrail.events import State, ms_to_datetime
from jobtrail.hub import Hub
from jobtrail.limits import SseSlots
from jobtrail.offsets import is_after
from jobtrail.sse import activity_event_stream
from jobtrail.tokens import TokenSigner


@get(
    "/events",
    tags=["activity"],
    summary="Server-sent events of every job's transitions (the activity feed)",
    description="Each message has `id:` (the feed's entry id), `event:` (the event type: submitted, started, "
    "cancel_requested, retrying, succeeded, failed or cancelled) and `data:` (`{id, job_id, kind, type, state, "
    "at, event_id, attempt, tenant}`, where `event_id` is the event's id in the job's own history and `tenant` "
    "the job's tenant, null for none). Starts after "
    "`Last-Event-ID` (header), else `after` or `last_event_id` (query; `after=0-0` replays all the feed still "
    "holds), else at the live tail (only transitions from now on), then follows live and never closes by "
    "itself. A tenant's key reads its own jobs' feed, an admin key every job's; each has its own entry ids. "
    "The feed is capped "
    "(`JOBTRAIL_ACTIVITY_MAXLEN`, approximately): when entries after the client's offset were trimmed, a `gap` "
    "event without an id, carrying `{\"first_available\": id}`, comes first. `kind` and `state` filter the "
    "messages. The feed is best-effort: a job's own history is the truth. A reconnect (a `Last-Event-ID` header) "
    "that meets the tenant's stream limit or a Redis outage answers 200 with only a `retry:` hint and a comment "
    "saying why, then ends, so an EventSource keeps trying; without the header those are 429 and 503.",
    responses={
        200: ResponseSpec(
            data_container=ActivityStreamMessage, media_type="text/event-stream", generate_examples=False,
            description="The event stream, one message per transition",
        ),
        **error_responses(400, 429, 503),
    },
    opt={**FEED_TOKEN, **SSE_ROUTE},
)
async def activity_events(
    request: Request,
    events: NamedDependency[EventLog],
    hub: NamedDependency[Hub],
    settings: NamedDependency[Settings],
    principal: NamedDependency[Principal],
    sse_slots: NamedDependency[SseSlots],
    after: FromQuery[str | None] = None,
    last_event_id: FromQuery[str | None] = None,
    kind: Annotated[str | None, Parameter(max_length=100, description="Only transitions of jobs of this kind")] = None,
    state_filter: Annotated[
        State | None, QueryParameter(name="state", description="Only transitions into this state")
    ] = None,
) -> Stream:
    offset, resuming = requested_offset(request, after, last_event_id)
    feed = events.activity.reader(None if principal.admin else principal.tenant)
    position = await feed.position()
    if not resuming:
        # No offset: start at the live tail, so a connect costs the same however much
        # the feed holds; a client that wants the backlog asks for it (`after=0-0`).
        offset = position.last_id
    gap = is_after(position.lost_up_to, offset)
    stream = activity_event_stream(
        feed,
        hub,
        position,
        offset,
        gap=gap,
        retry_ms=settings.sse_retry_ms,
        ping_s=settings.sse_ping_s,
        kind=kind,
        state=state_filter.value if state_filter else None,
        sees=principal.sees,
    )
    return await sse_response(sse_slots, principal, stream, events.metrics.sse_streams("feed"))


@post(
    "/events/tokens",
    tags=["activity"],
    status_code=201,
    summary="Issue a read-only token for the activity feed",
    description="Like `POST /jobs/{job_id}/tokens`, for `GET /events?token=`: the feed of the key's tenant "
    "(every tenant's, for an admin key).",
    responses=error_responses(400, 413, 415, 503),
)
async def feed_token(
    principal: NamedDependency[Principal],
    signer: NamedDependency[TokenSigner],
    settings: NamedDependency[Settings],
    data: JSONBody[TokenRequest | None] = None,
) -> TokenOut:
    token, expires = await signer.issue(principal, None, token_ttl(settings, data))
    return TokenOut(token=token, expires_at=ms_to_datetime(expires * 1000), job_id=None,
                    events_url=f"/events?token={token}")
