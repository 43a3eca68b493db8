"""What taskiq's own retry middleware will do with a task: everything jobtrail knows about it.

jobtrail's middleware for a user's broker (workers/taskiq_middleware.py) must write
`retrying` for a failure that will be retried and `failed` for the last one, and it must
write it before the retry is kicked again, or the next attempt's `started` could land
while the job still shows the failed attempt as running. So it does not wait to see
the retry; it reads the same labels and settings the retry middleware reads and comes
to the same decision first. Its `on_error` runs before theirs because it comes after
them in `broker.middlewares` (taskiq calls `on_error` in reverse order); its `startup`
refuses any other order (`check_order`).

The rules below are those of taskiq 0.13's SimpleRetryMiddleware and
SmartRetryMiddleware (subclasses included): a task is retried when
- the exception is one of the task's `types_of_exceptions` label (a local label, never
  sent), else of the middleware's `types_of_exceptions`, when either is set;
- it is not a NoResultError;
- its `retry_on_error` label (else the middleware's `default_retry_label`) is true;
- `_retries + 1 < max_retries`, where `_retries` counts the kicks before this one (0 on
  the first) and `max_retries` is the label, else `default_retry_count`.
So a task runs at most `max_retries` times, and its attempt is `_retries + 1`. A retry
middleware of the user's own making is not understood: its retries show as a failed
job that a later delivery cannot start again.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskiq import AsyncBroker, SimpleRetryMiddleware, SmartRetryMiddleware, TaskiqMessage, TaskiqMiddleware
from taskiq.exceptions import NoResultError

RetryMiddleware = SimpleRetryMiddleware | SmartRetryMiddleware
RETRY_MIDDLEWARES = (SimpleRetryMiddleware, SmartRetryMiddleware)

# The labels the retry middlewares read and write.
RETRIES = "_retries"
RETRY_ON_ERROR = "retry_on_error"
MAX_RETRIES = "max_retries"
DELAY = "delay"


def attempt_of(message: TaskiqMessage) -> int:
    """The attempt a delivery runs, from 1: one more than the retries kicked before it."""
    return int(message.labels.get(RETRIES, 0)) + 1


def is_retry_kick(message: TaskiqMessage) -> bool:
    """Whether a message being sent is a retry middleware's kick of a task that ran already."""
    return attempt_of(message) > 1


def retry_middlewares(broker: AsyncBroker) -> list[RetryMiddleware]:
    return [m for m in broker.middlewares if isinstance(m, RETRY_MIDDLEWARES)]


def check_order(broker: AsyncBroker, middleware: TaskiqMiddleware) -> None:
    """ValueError unless every retry middleware comes before `middleware` in the broker's list."""
    after = broker.middlewares[broker.middlewares.index(middleware) + 1 :]
    late = [type(m).__name__ for m in after if isinstance(m, RETRY_MIDDLEWARES)]
    if late:
        raise ValueError(
            f"{type(middleware).__name__} must come after {', '.join(late)} in the broker's middlewares, "
            "so it sees each failure before the retry is kicked: "
            f"broker.add_middlewares({late[0]}(...), {type(middleware).__name__}(...))"
        )


def _enabled(retry: RetryMiddleware, message: TaskiqMessage) -> bool:
    value = message.labels.get(RETRY_ON_ERROR)
    if isinstance(value, str):
        value = value.lower() == "true"
    return bool(retry.default_retry_label if value is None else value)


def _max_retries(retry: RetryMiddleware, message: TaskiqMessage) -> int:
    return int(message.labels.get(MAX_RETRIES, retry.default_retry_count))


def _retries_on(broker: AsyncBroker, retry: RetryMiddleware, message: TaskiqMessage, exc: BaseException) -> bool:
    task = broker.find_task(message.task_name)
    types: Iterable[type[BaseException]] | None = task.labels.get("types_of_exceptions") if task else None
    if types is None:
        types = retry.types_of_exceptions
    if types is not None and not isinstance(exc, tuple(types)):
        return False
    return not isinstance(exc, NoResultError)


def max_attempts(broker: AsyncBroker, message: TaskiqMessage) -> int:
    """How many times the task may run, as the retry middlewares of this process see it (1 without any)."""
    limits = [_max_retries(r, message) for r in retry_middlewares(broker) if _enabled(r, message)]
    return max([1, *limits])


def retry_delay(broker: AsyncBroker, message: TaskiqMessage, exc: BaseException) -> float | None:
    """The delay (s) before the retry a retry middleware will kick after this failure; None if none will.

    SmartRetryMiddleware asks for its delay (jitter left out, being random); a broker
    without delayed delivery, like taskiq-redis's, delivers the retry at once anyway.
    SimpleRetryMiddleware asks for none.
    """
    retries = attempt_of(message)
    for retry in retry_middlewares(broker):
        if not (_enabled(retry, message) and _retries_on(broker, retry, message, exc)):
            continue
        if retries < _max_retries(retry, message):
            return _delay(retry, message, retries)
    return None


def _delay(retry: RetryMiddleware, message: TaskiqMessage, retries: int) -> float:
    if not isinstance(retry, SmartRetryMiddleware):
        return 0.0
    delay = float(message.labels.get(DELAY, retry.default_delay))
    if retry.use_delay_exponent:
        delay = min(delay * retries, retry.max_delay_exponent)
    return delay


def disable_retry(message: TaskiqMessage) -> None:
    """Keep the retry middlewares (whose `on_error` runs after ours) from retrying this failure.

    For a cancelled job, a PermanentFailure, an attempt another delivery took over. The
    label is changed on the message object they are handed next; the task's own labels
    stay as they are.
    """
    message.labels[RETRY_ON_ERROR] = False
