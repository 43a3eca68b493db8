"""The worker's logging: taskiq's line per message is dropped before it becomes a record, its other lines kept."""

from __future__ import annotations

import logging

from jobtrail.workers.worker import _PER_MESSAGE, quiet_taskiq


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def taskiq_callback(receiver_log: logging.Logger) -> None:
    receiver_log.info(_PER_MESSAGE, "jobtrail.run_job", "abc123")
    receiver_log.info("Listening started.")


def test_taskiqs_line_per_message_is_dropped_unless_at_debug_and_its_other_lines_name_their_caller() -> None:
    receiver_log = logging.getLogger("taskiq.receiver.receiver")
    handler, level = Recorded(), receiver_log.level
    receiver_log.addHandler(handler)
    try:
        quiet_taskiq()
        quiet_taskiq()  # once per process, however often called
        receiver_log.setLevel(logging.INFO)
        taskiq_callback(receiver_log)
        at_info = [r.getMessage() for r in handler.records]
        receiver_log.setLevel(logging.DEBUG)
        taskiq_callback(receiver_log)
    finally:
        receiver_log.removeHandler(handler)
        receiver_log.setLevel(level)

    assert at_info == ["Listening started."]
    assert [r.getMessage() for r in handler.records][1:] == [
        "Executing task jobtrail.run_job with ID: abc123", "Listening started."
    ]
    assert {r.funcName for r in handler.records} == {"taskiq_callback"}, "the line is the caller's, not the wrapper's"
