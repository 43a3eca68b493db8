"""Both Python clients behind one face, so one test runs over the sync and the asyncio client."""

from __future__ import annotations

import asyncio
from contextlib import aclosing, closing
from typing import Any

from jobtrail.client import AsyncClient, Client


class Flavor:
    """One face over both clients: `await flavor.call("get", id)`, `await flavor.collect("history", id)`."""

    def __init__(self, name: str, url: str, api_key: str | None = None, **options: Any) -> None:
        self.name = name
        self.client: Client | AsyncClient = (Client if name == "sync" else AsyncClient)(url, api_key, **options)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.client, method)
        if isinstance(self.client, Client):
            return await asyncio.to_thread(bound, *args, **kwargs)
        return await bound(*args, **kwargs)

    async def collect(self, method: str, *args: Any, limit: int | None = None, **kwargs: Any) -> list[Any]:
        """Every item the method iterates (or the first `limit`), its stream closed afterwards."""
        bound = getattr(self.client, method)
        if isinstance(self.client, Client):
            def take() -> list[Any]:
                found: list[Any] = []
                with closing(bound(*args, **kwargs)) as items:
                    for item in items:
                        found.append(item)
                        if limit is not None and len(found) >= limit:
                            break
                return found

            return await asyncio.to_thread(take)
        found: list[Any] = []
        async with aclosing(bound(*args, **kwargs)) as items:
            async for item in items:
                found.append(item)
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def close(self) -> None:
        if isinstance(self.client, Client):
            self.client.close()
        else:
            await self.client.aclose()
