"""The error vocabulary of the bindings, as the guest sees it.

Every refusal leaves ``TenantBindings.call`` as ``sandbox.HostCallError``; its ``type_name`` is the
class name of the exception the tenant's code receives. Builtin names (``TypeError``,
``ValueError``, ``KeyError``, ``TimeoutError``, ``ConnectionError``, ``PermissionError``,
``AttributeError``, ``RuntimeError``) surface as those builtins in the guest, so tenant code can
catch them naturally; the others become tenantflow exception classes of that name.
"""

from __future__ import annotations

from sandbox import HostCallError

NOT_GRANTED = "BindingNotGranted"
"""The tenant policy does not grant the binding."""
FETCH_DENIED = "FetchDenied"
"""``env.fetch`` refused the URL or a redirect (allowlist, scheme, address range)."""
FETCH_ERROR = "FetchError"
"""``env.fetch`` failed on the wire (protocol error, too many redirects)."""
RESPONSE_TOO_LARGE = "ResponseTooLarge"
"""A fetched response, or a ``env.db`` result, is larger than its cap."""
QUOTA_EXCEEDED = "QuotaExceeded"
"""The tenant's database reached ``storage_quota_bytes``."""

MAX_ECHO_CHARS = 80
"""Tenant-supplied names are echoed in messages up to this length."""


def refuse(type_name: str, message: str) -> HostCallError:
    """The exception that makes the guest's call fail with ``type_name``."""
    return HostCallError(message, type_name=type_name)


def echo(value: object) -> str:
    """``repr`` of a tenant-supplied name, cut short so messages stay readable."""
    text = repr(value)
    if len(text) > MAX_ECHO_CHARS:
        text = text[: MAX_ECHO_CHARS - 3] + "..."
    return text
