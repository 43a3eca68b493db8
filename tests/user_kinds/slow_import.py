"""A module of kinds that takes its time to import, as a large application's can.

It says so on stderr first, so a test knows the worker is in its start-up; it registers no kind.
"""

import sys
import time

print("slow_import: importing", file=sys.stderr, flush=True)
time.sleep(2)
