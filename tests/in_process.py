"""The app in-process: its lifespan started, an httpx client over ASGI, readiness waited for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


@asynccontextmanager
async def running(
    app: FastAPI, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and a client talking to it in-process."""
    async with LifespanManager(app, startup_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as client:
            yield client


async def settled_readiness(client: httpx.AsyncClient) -> httpx.Response:
    """/readyz once model loading has finished, one way or the other."""
    with anyio.fail_after(120):
        while True:
            response = await client.get("/readyz")
            if response.status_code == 200 or "still loading" not in response.json()["detail"]:
                return response
            await anyio.sleep(0.05)
