"""A client that goes away stops its request's work, and is not a server error.

`cancel_on_disconnect(request, work)` awaits `work` while watching the connection. When the
client disconnects first, the work is cancelled (serving.py then drops what has not started and
stops its threads at their next step) and Starlette's ClientDisconnect is raised; problems.py
answers that with status 499 (nginx's "client closed request"), which nobody receives but the
metrics and the access line record, instead of a 500 with a traceback. A disconnect while the
body is still arriving raises the same ClientDisconnect from Starlette's body parser.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

Result = TypeVar("Result")


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, Result]) -> Result:
    """`await work`, or ClientDisconnect as soon as the client has gone (the work cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # let the work's own clean-up run before answering
    if task.cancelled():
        raise ClientDisconnect()
    return task.result()


async def _disconnected(receive: Receive) -> None:
    """Return once the server reports the client gone; the body has been read already, so
    nothing else can arrive (an ASGI server answers `receive` with http.disconnect then)."""
    while (await receive())["type"] != "http.disconnect":
        pass
