"""Property-based run over the OpenAPI document, with every check schemathesis has.

schemathesis generates requests for every operation from the served /openapi.json (valid ones
and, in its negative mode, deliberately invalid ones), sends them in-process to the ASGI app with
its lifespan running and the tiny models loaded, and runs all its checks on each response: never
a server error, a documented status code, content type, headers and body, and (the contract of
issue 39) a schema-valid request accepted and a schema-violating one refused, so that the request
schemas state exactly what the service enforces. The configuration is the repository's
schemathesis.toml, the same as `schemathesis run URL/openapi.json --checks all` reads: its hooks
(tests/schemathesis_hooks.py) make schema-valid uploads real images, and it counts 413 (more files
than a batch's maxItems) as a refusal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import tests.schemathesis_hooks  # noqa: F401  (registers the hooks, as the config names them)
from anyio.from_thread import start_blocking_portal
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from facedemo.api import create_app
from facedemo.config import Settings

MAX_EXAMPLES = 25  # per operation and generation mode: bounded, so the suite stays quick
CONFIG = SchemathesisConfig.from_path(Path(__file__).parents[1] / "schemathesis.toml")

load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())

# The document does not depend on the models, so any instance of the app can provide it; the
# requests go to the fixture's app, whose lifespan has loaded the tiny models.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=CONFIG)


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
    case.call_and_validate(session=session, base_url=session.base_url, checks=ALL_CHECKS)


def test_the_run_uses_every_check_and_the_repository_configuration() -> None:
    names = {check.__name__ for check in ALL_CHECKS}

    assert {"positive_data_acceptance", "negative_data_rejection", "unsupported_method"} <= names
    assert {"missing_required_header", "use_after_free", "ensure_resource_availability"} <= names
    assert "413" in CONFIG.projects.default.checks.negative_data_rejection.expected_statuses
