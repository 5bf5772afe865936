"""`MemoryAdmissionMiddleware`: request bodies are charged to the memory budget before they are
read, so that concurrent large uploads cannot together grow the process past it.

A body with a Content-Length reserves that many bytes before the application runs: when they do
not fit, the answer is 503 `overloaded` with Retry-After and `Connection: close`, and the body is
never held: it is read off the connection and dropped, chunk by chunk, before the answer goes
out. (A server that answers and closes while the client is still sending resets the connection,
and the client never reads the 503: "lingering close" in nginx and Apache. The connection's body
deadline bounds the time this takes, the upload limit its bytes.) A body without a
Content-Length (chunked), or one that lies, reserves as it arrives, and fails with the same 503,
its rest dropped the same way, when the budget runs out. The reservation is given back once the
answer has been sent, since the route holds the upload until then. Decoding charges the same
budget (serving.py), so bytes and pixels in flight share one limit: FACEDEMO_MEMORY_BUDGET_BYTES.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facedemo.api.limits import declared_length
from facedemo.api.problems import problem_for, problem_response
from facedemo.errors import OverloadedError
from facedemo.serving import MemoryBudget, Reservation


class MemoryAdmissionMiddleware:
    """Reserve each request body in `budget`, or refuse the request with 503 before reading it."""

    def __init__(self, app: ASGIApp, *, budget: MemoryBudget) -> None:
        """Guard `app` with `budget`."""
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its body reserved, or answer 503 in its place."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            reservation = self.budget.reserve(declared_length(scope), "this request's body")
        except OverloadedError as error:
            await drop_body(receive)
            await _refuse(scope, send, error)
            return
        with reservation:
            await self.app(scope, _charging(receive, reservation), send)


def _charging(receive: Receive, reservation: Reservation) -> Receive:
    """`receive` that grows `reservation` when more body bytes arrive than it holds."""
    received = 0

    async def charged_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            try:
                reservation.grow(received - reservation.nbytes)
            except OverloadedError:
                if message.get("more_body", False):
                    await drop_body(receive)
                raise
        return message

    return charged_receive


async def drop_body(receive: Receive) -> None:
    """Read the rest of the request body off the connection, holding none of it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _refuse(scope: Scope, send: Send, error: OverloadedError) -> None:
    async def no_body() -> Message:  # the body has been dropped already
        return {"type": "http.disconnect"}

    # Connection: close: a client that sent a body the service could not take gets a fresh start.
    response = problem_response(
        problem_for(error, instance=scope["path"]),
        headers={"Retry-After": str(error.retry_after), "Connection": "close"},
    )
    await response(scope, no_body, send)
