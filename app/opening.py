"""A job follow's opening read: its state for the viewer, its gap and its first replay page, in one round trip.

An SSE request used to make these one after another: the state (visible.lua), XINFO for
the gap, then, once subscribed to the hub, the replay's first XRANGE. Under W1's load (200
observers connecting while their jobs report) each waited its turn for the pool and the
loop, and the waits, not the work, were most of an observer's lag behind its job. One
script on the job's slot (app/follow_open.lua, after visible.lua's own check) now answers
all three, in a round trip shared with the other reads of the moment (app/batching.py).

Reading the first page before subscribing keeps resumption exact: the page reaches the
stream's end at the time of the state (`reach`), the hub offers what comes after its
cursor when the follow joined (`Subscription.start`), and app/follow.py reads whatever
lies between the two, when the cursor is the later one (a stream the hub already watched
and read further). Each entry is then in the page, the read or the hub's queue, and the
follow drops by id what it already sent.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from jobtrail.errors import JobNotFound
from jobtrail.eventlog import EventLog, SharedRun, deleted_through
from jobtrail.jobstate import JobState
from jobtrail.replay_pages import RawEntry


def _script() -> str:
    files = resources.files("jobtrail")
    visible = files.joinpath("visible.lua").read_text()
    # visible.lua as a function, so that its check is the very one GET /jobs/{id} makes.
    return f"local function visible()\n{visible}\nend\n{files.joinpath('follow_open.lua').read_text()}"


_SCRIPT = _script()


class FirstPage(NamedTuple):
    """The replay's first page, read with the state; `reach`: how far it read the stream (the module's docstring).

    Its entries as the script returned them, for the follow to decode as its transport
    wants them (an SSE replay frames them straight from their fields, app/sse_frames.py).
    """

    entries: list[RawEntry]
    reach: str
    full: bool


class Opening(NamedTuple):
    """What a follow of one job starts from."""

    job: JobState
    deleted_through: str  # the newest entry id the stream may have lost (EventLog.max_deleted_id)
    page: FirstPage


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class FollowOpener:
    """Reads an Opening: one EVALSHA of app/follow_open.lua (with visible.lua in front)."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self._open = events.redis.register_script(_SCRIPT)

    async def open(
        self, job_id: str, tenant: str | None, offset: str, page_size: int, *, sees_all: bool,
        shared: SharedRun | None = None,
    ) -> Opening:
        """The job as `tenant` (or one that `sees_all`) may see it, and its stream after `offset`.

        JobNotFound for a missing job and another tenant's alike (visible.lua's rule). One
        round trip, shared with other callers' through `shared`; one more when Redis lost
        the script.
        """
        keys = self.events.keys
        script_keys = [keys.job(job_id), keys.events(job_id)]
        args = [tenant or "", "1" if sees_all else "0", offset, page_size]
        reply: Any = None
        if shared is not None:
            (reply,) = await shared(
                lambda pipe: pipe.execute_command("EVALSHA", self._open.sha, len(script_keys), *script_keys, *args))
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                raise reply
        if shared is None or isinstance(reply, NoScriptError):
            reply = await self._open(keys=script_keys, args=args)  # loads the script when Redis lost it
        if not reply:
            raise JobNotFound(job_id)
        state, (max_deleted, last_generated, first), raw = reply
        fields = _pairs(state[1:])
        if not fields.get("state"):
            raise JobNotFound(job_id)
        info = {
            "max-deleted-entry-id": max_deleted,
            "last-generated-id": last_generated,
            "first-entry": (first[0], _pairs(first[1])) if first else None,
        }
        entries: list[RawEntry] = [(entry_id, flat) for entry_id, flat in raw]
        full = len(entries) >= page_size
        page = FirstPage(entries, entries[-1][0] if entries else offset, full)
        return Opening(JobState.from_hash(job_id, fields, state[0]), deleted_through(info), page)
