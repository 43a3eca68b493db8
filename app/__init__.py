"""jobtrail: every job transition is an event in a per-job Redis stream."""
