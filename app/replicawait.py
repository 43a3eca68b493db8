"""Waiting for replicas: the option that keeps a failover from losing a job's outcome.

Redis replicates asynchronously. A primary answers an append before any replica has it, so a
primary that dies in the next few milliseconds can take acknowledged events with it: the
promoted replica never saw them (the README's "Scaling out" has the measured rate). With
JOBTRAIL_WAIT_REPLICAS=N, the events whose loss hurts most (a submission, and the terminal
`succeeded`, `failed`, `cancelled`) are followed by `WAIT N timeout` in the same round trip,
on the same connection, so Redis answers once N replicas hold everything that connection
wrote, or when the timeout passes. On a Cluster the WAIT goes to the node serving the job's
slot, in the same pipeline as the append, since WAIT only counts that node's replicas.

What WAIT cannot do: undo. A write that the timeout outran stays on the primary (it is
there, and most likely on its replicas a moment later); the append then says so
(`Appended.replicas` below N, and a warning in the log) instead of failing, because every
caller's retry would find it written already. And it is not consensus: a replica that had
the event can still lose an election to one that did not (Sentinel and Cluster both prefer
the replica with the largest offset, which makes this rare, not impossible).
"""

from __future__ import annotations

import logging

import msgspec

from jobtrail.events import TERMINAL_STATES, EventType

log = logging.getLogger(__name__)

# The submission (a job that vanishes would be resubmitted by nobody) and the outcomes (an
# outcome that vanishes sends a finished job back to running, to be run again).
WAITED: frozenset[EventType] = frozenset(
    {EventType.SUBMITTED} | {event_type for event_type in EventType if event_type.value in TERMINAL_STATES}
)


class ReplicaWait(msgspec.Struct, frozen=True):
    """`WAIT replicas timeout_ms` after the appends of WAITED events; replicas 0 turns it off."""

    replicas: int
    timeout_ms: int

    def applies_to(self, event_type: EventType) -> bool:
        return self.replicas > 0 and event_type in WAITED

    def command(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def confirmed(self, reply: object, job_id: str, event_type: EventType) -> int:
        """How many replicas WAIT says hold the append; fewer than asked is logged, never raised.

        An error reply counts as none: WAIT answers one when the node it reached was just
        demoted (a failover under way), which is exactly when the event is not yet safe.
        """
        if isinstance(reply, Exception):
            log.warning("job %s: %s written, but its replicas could not be asked (%s)", job_id,
                        event_type.value, reply)
            return 0
        count = int(reply)  # type: ignore[call-overload]
        if count < self.replicas:
            log.warning("job %s: %s written on the primary, but only %d of %d replicas confirmed it within %d ms; "
                        "a failover now could lose it", job_id, event_type.value, count, self.replicas,
                        self.timeout_ms)
        return count
