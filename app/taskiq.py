"""Make an existing taskiq app's tasks jobtrail jobs: its public names.

    from jobtrail.taskiq import JobtrailMiddleware, job_context

    broker.add_middlewares(SmartRetryMiddleware(...), JobtrailMiddleware("redis://..."))

    @broker.task
    async def render(n: int, ctx: JobContext = TaskiqDepends(job_context)) -> int: ...

The middleware lives in workers/taskiq_middleware.py, beside jobtrail's own runner;
this module only names what a taskiq app imports, so `import jobtrail` stays free of
taskiq until an app asks for it.
"""

from jobtrail.workers.taskiq_middleware import JobtrailMiddleware, job_context

__all__ = ["JobtrailMiddleware", "job_context"]
