"""/ui: the dashboard and the browser client (`/ui/jobtrail.js`), static files shipped in the package.

Public like the health probes: the files hold no data. The page asks for an API key and
every call it makes is checked as any other client's.
"""

from __future__ import annotations

from pathlib import Path

from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

from jobtrail.api.access import PUBLIC

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def ui_router() -> Router:
    # no-cache, not max-age: a browser revalidates (a 304 when unchanged), so an upgraded
    # server's page and client never run beside a stale copy of the other.
    return create_static_files_router(
        path="/ui", directories=[UI_DIR], html_mode=True, name="ui", opt=PUBLIC,
        cache_control=CacheControlHeader(no_cache=True),
    )
