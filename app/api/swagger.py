"""Swagger UI at `/schema/swagger` from files shipped in the package, so it works offline.

Litestar's SwaggerRenderPlugin loads Swagger UI's script, styles and favicon from a CDN
unless told where else; here they come from app/swaggerfiles/ (Swagger UI 5.18.2, as
npm's swagger-ui-dist ships it: the version Litestar's page is written for), served
under `/schema/assets/`, which is public like the rest of `/schema` (app/api/access.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litestar import get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File

from jobtrail.api.access import SCHEMA_PATH

ASSETS_PATH = f"{SCHEMA_PATH}/assets"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_FOLDER = Path(str(resources.files("jobtrail").joinpath("swaggerfiles")))
# A week: the files change only with the installed package, and so does their content.
_CACHE = {"Cache-Control": "public, max-age=604800"}


def swagger_plugin() -> SwaggerRenderPlugin:
    """The Swagger UI page, pointing at our copies of its files."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(name: FromPath[str]) -> File:
    media_type = _ASSETS.get(name)
    if media_type is None:  # a name, never a path: nothing else of the package is served
        raise NotFoundException(f"no Swagger UI asset {name!r}")
    return File(_FOLDER / name, media_type=media_type, content_disposition_type="inline", headers=_CACHE)
