"""`python -m bench`: the performance suite (bench/perf.py)."""

from bench.perf import main

raise SystemExit(main())
