"""A small synchronous client of the tenantflow HTTP API, for the CLI.

Every failure becomes a ``CliError`` whose message tells the user what happened and what to do;
the CLI prints it and exits 1 (never a traceback).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8787"


class CliError(Exception):
    """A failure to show the user as one clear message (exit status 1)."""


class Client:
    """Talks to ``url`` with ``token``; ``tenant`` is the account for tenant-scoped commands."""

    def __init__(
        self, url: str | None, token: str | None, tenant: str | None, *, timeout: float = 30
    ) -> None:
        self.url = (url or os.environ.get("TENANTFLOW_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("TENANTFLOW_TOKEN") or ""
        self._tenant = tenant or os.environ.get("TENANTFLOW_TENANT") or None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``result`` of a v4 response (or ``(result, result_info)`` with ``info=True``)."""
        want_info = kwargs.pop("info", False)
        if not self.token:
            raise CliError("no token: set TENANTFLOW_TOKEN (or pass --token); `tenantflow serve` prints one")
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CliError(f"no tenantflow server at {self.url}; start one with `tenantflow serve`") from None
        except httpx.TimeoutException:
            raise CliError(f"the tenantflow server at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot talk to {self.url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise CliError(
                f"{self.url} answered {response.status_code} without a tenantflow response; is it a tenantflow server?"
            ) from None
        if not isinstance(body, dict) or not body.get("success"):
            errors = body.get("errors") if isinstance(body, dict) else None
            messages = [str(e.get("message")) for e in errors or [] if isinstance(e, dict)] or [
                response.reason_phrase
            ]
            hint = _hint(response.status_code)
            text = "\n  ".join(messages)
            raise CliError(f"{text}{hint}")
        if want_info:
            return body.get("result"), body.get("result_info") or {}
        return body.get("result")

    def tenant(self) -> str:
        """The tenant to act on: ``--tenant``, ``TENANTFLOW_TENANT``, or the token's own tenant."""
        if self._tenant:
            return self._tenant
        who = self.request("GET", "/tenantflow/v1/whoami")
        if who.get("tenant"):
            self._tenant = str(who["tenant"])
            return self._tenant
        raise CliError("this is an operator token: choose a tenant with --tenant ID (or TENANTFLOW_TENANT)")


def _hint(status: int) -> str:
    if status == 401:
        return "\n  (check TENANTFLOW_TOKEN: the server does not know this token)"
    if status == 413:
        return "\n  (the request is larger than the server accepts)"
    return ""
