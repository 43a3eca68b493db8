"""/events: the activity feed of every job's transitions, as server-sent events."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.di import NamedDependency
from litestar.params import FromQuery, Parameter, QueryParameter
from litestar.response import Stream

from app.api.common import SSE_HEADERS, error_responses, requested_offset
from app.config import Settings
from app.eventlog import EventLog
from app.events import State
from app.hub import Hub
from app.offsets import is_after
from app.sse import activity_event_stream


@get(
    "/events",
    tags=["activity"],
    summary="Server-sent events of every job's transitions (the activity feed)",
    description="Each message has `id:` (the feed's entry id), `event:` (the event type: submitted, started, "
    "cancel_requested, retrying, succeeded, failed or cancelled) and `data:` (`{id, job_id, kind, type, state, "
    "at, event_id, attempt}`, where `event_id` is the event's id in the job's own history). Starts after "
    "`Last-Event-ID` (header), else `after` or `last_event_id` (query), else from the oldest entry the feed "
    "still holds, then follows live and never closes by itself. The feed is capped "
    "(`JOBTRAIL_ACTIVITY_MAXLEN`, approximately): when entries after the client's offset were trimmed, a `gap` "
    "event without an id, carrying `{\"first_available\": id}`, comes first. `kind` and `state` filter the "
    "messages. The feed is best-effort: a job's own history is the truth.",
    responses={
        200: ResponseSpec(data_container=str, media_type="text/event-stream", description="The event stream"),
        **error_responses(400, 503),
    },
)
async def activity_events(
    request: Request,
    events: NamedDependency[EventLog],
    hub: NamedDependency[Hub],
    settings: NamedDependency[Settings],
    after: FromQuery[str | None] = None,
    last_event_id: FromQuery[str | None] = None,
    kind: Annotated[str | None, Parameter(max_length=100, description="Only transitions of jobs of this kind")] = None,
    state_filter: Annotated[
        State | None, QueryParameter(name="state", description="Only transitions into this state")
    ] = None,
) -> Stream:
    offset, resuming = requested_offset(request, after, last_event_id)
    position = await events.activity.position()
    # A client without an offset asked for whatever the feed holds: nothing is missing for it.
    gap = resuming and is_after(position.lost_up_to, offset)
    return Stream(
        activity_event_stream(
            events.activity,
            hub,
            position,
            offset,
            gap=gap,
            retry_ms=settings.sse_retry_ms,
            ping_s=settings.sse_ping_s,
            kind=kind,
            state=state_filter.value if state_filter else None,
        ),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
