"""Job kinds of a team's own, outside workers/: loaded by JOBTRAIL_KINDS or --kinds in the tests.

Never imported by the test process itself: registering them there would change the
known kinds every other test sees.
"""
