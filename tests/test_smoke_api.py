from jobtrail.events import EventType, StartedData, SubmittedData, SucceededData
from tests.support.sse import collect


async def test_sse_replays_a_finished_job_and_closes(client, events):
    await events.append("j1", EventType.SUBMITTED, SubmittedData(kind="demo", params={}, max_attempts=1))
    await events.append("j1", EventType.STARTED, StartedData(worker="w", attempt=1), attempt=1)
    await events.append("j1", EventType.SUCCEEDED, SucceededData(result=1))
    got = await collect(client, "/jobs/j1/events")
    assert [m.event for m in got] == ["submitted", "started", "succeeded"]
