"""Checking an error answer: an RFC 9457 problem with the status and code a test expects."""

from __future__ import annotations

from typing import Any

import httpx

from facedemo.api.problems import PROBLEM_MEDIA_TYPE
from facedemo.schemas import PROBLEM_TYPE_BASE


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["title"], str) and body["title"]
    assert body["type"] in (PROBLEM_TYPE_BASE + code, "about:blank")
    return body
