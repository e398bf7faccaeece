"""The CLI as a client of ``flock serve``: ``flock publish --url`` and ``flock board list --url``.

The token comes from ``--token`` or ``$FLOCK_TOKEN``. Each publish carries an ``Idempotency-Key``,
so the client retries a publish whose answer was lost (a cut connection, a replica that died)
without ever storing it twice; a 429 is waited out as its ``Retry-After`` says.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from flock_cli.cli.common import EXIT_FAILED, fail
from flock_cli.store.board_url import redact

__all__ = ["TOKEN_ENV", "ServiceClient"]

TOKEN_ENV = "FLOCK_TOKEN"
ATTEMPTS = 5
"""Tries of one request (connection failures, 429 and 503 answers)."""


class ServiceClient:
    """A few calls of the service's API, with its errors turned into one-line CLI failures."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        import httpx

        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            fail(f"--url needs a token: pass --token TOKEN or set ${TOKEN_ENV}")
        if not url.startswith(("http://", "https://")):
            fail(f"--url must start with http:// or https://, got {redact(url)!r}")
        self.url = url.rstrip("/")
        self.shown = redact(self.url)
        """The URL as messages show it: a password in it is hidden."""
        try:
            self._client = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
            )
        except httpx.InvalidURL as exc:
            fail(f"--url {self.shown!r} is not a valid URL: {exc}")

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def publish(self, type_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Publish one artifact (retried with one idempotency key); returns it."""
        key = str(uuid.uuid4())
        path = f"/v1/types/{type_name}/artifacts"
        answer = self._call("POST", path, json=body, headers={"Idempotency-Key": key})
        return self._expect(answer, "POST", path, {"id": str, "type": str, "correlation_id": object})

    def artifacts(self, params: dict[str, Any]) -> dict[str, Any]:
        """One page of ``GET /v1/artifacts``."""
        answer = self._call("GET", "/v1/artifacts", params=params)
        return self._expect(answer, "GET", "/v1/artifacts", {"items": list, "total": int})

    def whoami(self) -> dict[str, Any]:
        """The identity the token stands for."""
        answer = self._call("GET", "/v1/whoami")
        return self._expect(answer, "GET", "/v1/whoami", {"name": str, "tenant": object, "labels": list})

    def _expect(self, answer: Any, method: str, path: str, fields: dict[str, type]) -> dict[str, Any]:
        """``answer`` when it has ``fields`` of their types; else the service is not what it seems."""
        if not isinstance(answer, dict) or any(
            name not in answer or not isinstance(answer[name], kind) for name, kind in fields.items()
        ):
            fail(self._not_the_service(method, path, "unexpected answer"), EXIT_FAILED)
        return answer

    def _not_the_service(self, method: str, path: str, what: str) -> str:
        return f"{method} {self.shown}{path}: {what} (is {self.shown} a flock serve service?)"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.InvalidURL as exc:  # a URL httpx took but cannot send to
                fail(f"--url {self.shown!r} is not a valid URL: {exc}")
            except httpx.HTTPError as exc:
                if attempt == ATTEMPTS:
                    fail(f"cannot reach the service at {self.shown}: {redact(str(exc))}")
                time.sleep(min(2.0, 0.2 * 2**attempt))
                continue
            if response.status_code in (429, 503) and attempt < ATTEMPTS:
                time.sleep(_retry_after(response))
                continue
            if response.status_code >= 400:
                self._failed(method, path, response)
            try:
                return response.json()
            except ValueError:
                fail(self._not_the_service(method, path, "the answer is not JSON"), EXIT_FAILED)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or fails

    def _failed(self, method: str, path: str, response: Any) -> None:
        try:
            problem = response.json()
            detail = problem.get("detail") or problem
        except ValueError:  # not the service's problem document: an HTML page, say, on one line
            detail = " ".join(response.text.split())[:300] or response.reason_phrase
        status = response.status_code
        # A refusal of what was asked (auth, validation, rights) is the user's to fix: exit 2.
        fail(f"{method} {self.shown}{path}: {status} {detail}", 2 if status < 500 else EXIT_FAILED)


def _retry_after(response: Any) -> float:
    try:
        return min(30.0, max(0.1, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0
