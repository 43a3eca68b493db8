"""Test helpers, the one place for them: tests/ and bench/ import them as `tests.support.…`."""
