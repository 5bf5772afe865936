"""Property-based run over the OpenAPI document: no 5xx, every answer as documented.

schemathesis generates requests for every operation from the served /openapi.json (valid ones
and, in its negative mode, deliberately invalid ones), sends them in-process to the ASGI app with
its lifespan running and the tiny models loaded, and checks each response: never a server error,
a documented status code and content type, and a body that matches the documented schema.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from facedemo.api import create_app
from facedemo.config import Settings

MAX_EXAMPLES = 25  # per operation and generation mode: bounded, so the suite stays quick
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# The document does not depend on the models, so any instance of the app can provide it; the
# requests go to the fixture's app, whose lifespan has loaded the tiny models.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def session(tiny_models_dir: Path) -> Iterator[asgi.ASGIClient]:
    """A requests session into the app, whose lifespan has loaded the tiny models.

    The lifespan runs for the whole module on a portal of its own: schemathesis' lifespan
    handling ends a lifespan after every test, and restarting it would reload the models.
    """
    app = create_app(Settings(models_dir=tiny_models_dir))

    async def lifespan_manager() -> LifespanManager:  # it must be built inside the event loop
        return LifespanManager(app, startup_timeout=60)

    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(portal.call(lifespan_manager)),
    ):
        client = asgi.get_client(app)  # never entered: schemathesis starts no lifespan
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the tiny models never loaded"
            time.sleep(0.1)
        yield client


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, session: asgi.ASGIClient
) -> None:
    case.call_and_validate(session=session, base_url=session.base_url, checks=CHECKS)
