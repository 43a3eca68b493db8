"""The job queue as taskiq-redis lays it out: everything jobtrail knows of its internals.

The queue is one Redis stream, `keys.queue()`, read by one consumer group that every
worker joins (workers/broker.py's JobBroker, in taskiq-redis's RedisStreamBroker layout). A
message is one entry whose field `data` holds taskiq's own message, JSON naming the task
and its arguments; jobtrail's one task, `run_job`, takes the job id as its only argument. A
read (XREADGROUP) makes a message pending for the worker that read it until that worker
acknowledges it (XACK), which jobtrail's runner does after the job's terminal event.

So the worker and the reaper do here, on the same stream and group: hand back what a
stopping worker read but never ran, reclaim what a dead worker read, tell whether messages
wait unread, and trim what every worker is done with. Every command names the one queue
key, so all of it runs on a Redis Cluster too (a transaction here is on that one key).
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobtrail.keys import Keys
from jobtrail.offsets import is_after

# The name the worker registers `run_job` under, and that its messages carry.
RUN_JOB = "jobtrail.run_job"

# Where a new group starts reading: "0", not "$", so that jobs enqueued before the first
# worker ever started are not skipped.
GROUP_START = "0"


class _TaskiqMessage(msgspec.Struct):
    """The part of taskiq's message (the entry's `data`) that names the job."""

    task_name: str
    args: list[Any] = []


_decode = msgspec.json.Decoder(_TaskiqMessage).decode


def group_name(keys: Keys) -> str:
    """The workers' consumer group: one per prefix, so deployments sharing a Redis do not share work."""
    return f"{keys.prefix}-workers"


def job_of(fields: dict[Any, Any]) -> str | None:
    """The job a queue entry runs, or None for an entry that is not a `run_job` message."""
    data = fields.get("data", fields.get(b"data"))
    if data is None:
        return None
    try:
        message = _decode(data)
    except msgspec.DecodeError:
        return None
    if message.task_name != RUN_JOB or not message.args or not isinstance(message.args[0], str):
        return None
    return message.args[0]


class JobQueue:
    """The queue stream and the workers' group on it, on a client of jobtrail's own (not the broker's pool)."""

    def __init__(self, redis: Redis, stream: str, group: str) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group

    @classmethod
    def of(cls, redis: Redis, keys: Keys) -> JobQueue:
        return cls(redis, keys.queue(), group_name(keys))

    async def hand_back(self, consumer: str, limit: int) -> int:
        """Queue again the messages pending for `consumer`, and acknowledge them; how many (three round trips).

        XPENDING lists them, XCLAIM reads them back (still this consumer's, so nobody
        else takes them meanwhile), and one transaction adds copies at the end of the
        stream and acknowledges the originals: a message is never both gone and unqueued.
        A RedisError raises as itself.
        """
        unacked = await self.redis.xpending_range(self.stream, self.group, "-", "+", limit, consumername=consumer)
        ids = [entry["message_id"] for entry in unacked]
        if not ids:
            return 0
        messages = await self.redis.xclaim(self.stream, self.group, consumer, min_idle_time=0, message_ids=ids)
        await self._requeue(ids, messages)
        return len(ids)

    async def reclaim_idle(self, consumer: str, min_idle_ms: int, limit: int) -> int:
        """Queue again the messages any worker read more than `min_idle_ms` ago and never acknowledged; how many.

        Such a message's worker died (or runs a job longer than that, which a second
        delivery finds leased and drops). XAUTOCLAIM takes up to `limit` of them for
        `consumer`, then they are handed back as `hand_back` does, for any worker to read
        (two round trips; one more per `limit` messages).
        """
        reclaimed = 0
        start = "0-0"
        while reclaimed < limit:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_ms, start_id=start, count=limit - reclaimed
            )
            start, messages = reply[0], reply[1]
            # Entries deleted meanwhile (reply[2] on Redis 7) are acknowledged by XAUTOCLAIM itself.
            ids = [message_id for message_id, _ in messages]
            if ids:
                await self._requeue(ids, messages)
                reclaimed += len(ids)
            if start == "0-0":  # the whole pending list was scanned
                break
        return reclaimed

    async def _requeue(self, ids: list[str], messages: list[tuple[str, dict[str, Any] | None]]) -> None:
        """One transaction: copies of `messages` at the end of the stream, and `ids` acknowledged."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for _, fields in messages:
                if fields:  # None for a message deleted meanwhile
                    pipe.xadd(self.stream, fields)
            pipe.xack(self.stream, self.group, *ids)
            await pipe.execute()

    async def trim(self) -> int:
        """Remove the messages every worker is done with; how many went (two round trips).

        Done means read by the group and acknowledged: older than both the group's last
        delivered id and its oldest pending (unacknowledged) message.
        """
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xinfo_groups(self.stream)
                pipe.xpending(self.stream, self.group)
                groups, pending = await pipe.execute()
        except ResponseError:  # no queue or no group yet: nothing to trim
            return 0
        read = self._last_read(groups)
        if read is None:
            return 0
        keep_from = read
        if pending["pending"] and not is_after(pending["min"], read):
            keep_from = pending["min"]
        # Exact, not `~`: the queue is small once trimmed, and a trim that leaves
        # nothing behind is easy to check.
        return await self.redis.xtrim(self.stream, minid=keep_from, approximate=False)

    async def has_unread(self) -> bool:
        """Whether the stream holds a message the group has not read yet (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(self.stream)
            pipe.xrevrange(self.stream, count=1)
            groups, newest = await pipe.execute()
        if not newest:
            return False
        read = self._last_read(groups)
        return read is None or is_after(newest[0][0], read)

    def _last_read(self, groups: list[dict[str, Any]]) -> Any:
        """The id of the last message delivered to the group, from XINFO GROUPS; None without the group."""
        return next((group["last-delivered-id"] for group in groups if group["name"] == self.group), None)
