"""The exceptions `facedemo.client` raises, one tree:

    FacedemoClientError                    anything the client raises on purpose
    ├── ProblemError                       the service answered with problem details (RFC 9457)
    │   ├── ClientError                    4xx: the request is at fault; never retried
    │   └── ServerError                    5xx
    │       └── ServiceUnavailableError    503
    │           ├── ServiceNotReadyError   code not_ready: models loading, or failed to; retried
    │           └── ServiceOverloadedError code overloaded or deadline_exceeded; retried
    ├── TransportError                     no answer (refused, reset, timed out), after retries
    └── UnexpectedResponseError            an answer that is not what the API documents

A `ProblemError` carries the answer's `status`, `code` (stable: branch on it), `title`, `detail`
and the `request_id` that finds the request in the service's logs, plus `retry_after` (seconds)
when the service sent a Retry-After header.
"""

from __future__ import annotations

import http
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

from facedemo.schemas import Problem, ValidationIssue

NOT_READY_CODES = frozenset({"not_ready"})
OVERLOADED_CODES = frozenset({"overloaded", "deadline_exceeded"})


class FacedemoClientError(Exception):
    """Base of every error `facedemo.client` raises on purpose."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ProblemError(FacedemoClientError):
    """The service refused or failed the request and said why, as problem details."""

    def __init__(
        self, problem: Problem, request_id: str | None, retry_after: float | None = None
    ) -> None:
        """Wrap `problem`; `request_id` is the one the service answered with."""
        reason = problem.detail or problem.title
        super().__init__(
            f"{problem.status} {problem.code}: {reason} (request id {request_id})", request_id
        )
        self.problem = problem
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.problem.status

    @property
    def code(self) -> str:
        """The stable machine-readable error code, e.g. `image_undecodable`."""
        return self.problem.code

    @property
    def title(self) -> str:
        """Short summary of the kind of problem."""
        return self.problem.title

    @property
    def detail(self) -> str | None:
        """What went wrong with this request."""
        return self.problem.detail

    @property
    def errors(self) -> list[ValidationIssue] | None:
        """For code validation_error: each invalid part of the request."""
        return self.problem.errors


class ClientError(ProblemError):
    """A 4xx answer: the request (its image, parameters or API key) is at fault."""


class ServerError(ProblemError):
    """A 5xx answer."""


class ServiceUnavailableError(ServerError):
    """A 503 answer: the service cannot take the request now."""


class ServiceNotReadyError(ServiceUnavailableError):
    """The models are still loading (or failed to load): code not_ready."""


class ServiceOverloadedError(ServiceUnavailableError):
    """Too much work is queued (overloaded) or the request waited too long (deadline_exceeded)."""


class TransportError(FacedemoClientError):
    """No answer came: the connection was refused or reset, or timed out. Its cause is httpx's."""


class UnexpectedResponseError(FacedemoClientError):
    """The service answered with something the API does not document (wrong shape, not JSON)."""

    def __init__(self, message: str, response: httpx.Response, request_id: str | None) -> None:
        super().__init__(f"{message} (HTTP {response.status_code}, request id {request_id})")
        self.request_id = request_id
        self.status = response.status_code


def problem_error(response: httpx.Response, request_id: str | None) -> ProblemError:
    """The exception for an error answer (400-599), of the family its status and code name.

    An answer without problem details (a proxy's HTML page, ...) gets a code made from its status
    phrase, as the service does for its own plain HTTP errors.
    """
    try:
        problem = Problem.model_validate_json(response.content)
    except ValueError:
        phrase = _phrase(response.status_code)
        problem = Problem(
            title=phrase,
            status=response.status_code,
            detail=response.text[:200] or None,
            code=phrase.lower().replace(" ", "_").replace("-", "_"),
        )
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return _family(problem)(problem, request_id, retry_after)


def _family(problem: Problem) -> type[ProblemError]:
    if problem.status < 500:
        return ClientError
    if problem.status != 503:
        return ServerError
    if problem.code in NOT_READY_CODES:
        return ServiceNotReadyError
    if problem.code in OVERLOADED_CODES:
        return ServiceOverloadedError
    return ServiceUnavailableError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from a Retry-After header: delay-seconds or an HTTP date.

    None when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
