"""The API process's garbage-collector policy: fewer young collections, and none of the start-up objects in old ones.

Every live-tail event allocates a few short-lived containers (the wake's decoded list, the
entry's fields, the Event, its data). With CPython's default thresholds (700, 10, 10) a
young collection ran every few milliseconds at 10,000 events/s, and the events in flight at
each one were promoted until a full collection walked every object of the process: the 10,000
watched streams' subscriptions, queues and tasks, and every module, route and class
loaded at start. bench.hub measured it: 39 µs of the hub's CPU per event with the
defaults, 26 with this policy, and full collections of up to a second on a loaded machine
were the p99.

A young generation of 50,000 objects is collected a few times a second at that rate, by
when nearly every event's objects are already gone, so little is promoted and full
collections become rare; freezing what start-up made takes it out of the ones that remain.
Cycles are still collected, only later; the young generation costs a few MB at most.
"""

from __future__ import annotations

import gc

# (young, middle, old): see the module docstring for why the young one is this large.
THRESHOLDS = (50_000, 20, 100)


def settle() -> None:
    """Apply the policy once the process has started: what exists now is frozen out of collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
