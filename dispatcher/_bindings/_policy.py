"""``BindingPolicy``: what one tenant's bindings may do, and its fetch allowlist entries."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KNOWN_BINDINGS = frozenset({"kv", "db", "fetch", "secrets"})
"""Bindings a policy may grant."""
MiB = 1024 * 1024
MIN_STORAGE_QUOTA_BYTES = 32 * 1024
"""Smallest storage quota: room for the schema pages of an empty database."""

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?", re.ASCII)


def normalize_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form without a trailing dot; IP addresses in canonical form."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    return host


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One parsed fetch allowlist entry."""

    host: str
    """Normalized host; for a wildcard entry, the suffix after ``*.``."""
    port: int | None
    """The only port allowed, or None for any port."""
    wildcard: bool
    """``*.example.com``: subdomains of ``example.com`` only, never ``example.com`` itself."""

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """Parse ``host``, ``host:port``, ``*.domain[:port]``, ``[v6]:port``; raise ``ValueError``."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"fetch allowlist entry {text!r} must be a non-empty host name")
        raw = text.strip().lower()
        if "/" in raw or "@" in raw:
            raise ValueError(f"fetch allowlist entry {text!r} must be a host[:port], not a URL")
        wildcard = raw.startswith("*.")
        if wildcard:
            raw = raw[2:]
        port: int | None = None
        if raw.startswith("["):
            host, _, rest = raw[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"fetch allowlist entry {text!r} is malformed")
                port = cls._port(rest[1:], text)
        elif raw.count(":") == 1:
            host, _, port_text = raw.partition(":")
            port = cls._port(port_text, text)
        else:
            host = raw
        try:
            host = normalize_host(host)
        except UnicodeError:
            raise ValueError(f"fetch allowlist entry {text!r} is not a valid host name") from None
        is_ip = _is_ip(host)
        if is_ip and wildcard:
            raise ValueError(f"fetch allowlist entry {text!r}: a wildcard needs a domain, not an address")
        if not is_ip and not all(_LABEL.fullmatch(label) for label in host.split(".")):
            raise ValueError(f"fetch allowlist entry {text!r} is not a valid host name")
        return cls(host, port, wildcard)

    @staticmethod
    def _port(text: str, entry: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError(f"fetch allowlist entry {entry!r} has an invalid port")
        return int(text)

    def matches(self, host: str, port: int) -> bool:
        """Whether a normalized ``host`` and ``port`` fall under this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def matches_host(self, host: str) -> bool:
        return host.endswith("." + self.host) if self.wildcard else host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = "*." if self.wildcard else ""
        return f"{prefix}{host}" + (f":{self.port}" if self.port is not None else "")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BindingPolicy:
    """What one tenant's bindings may do. Built by the dispatcher from the tenant policy.

    ``repr`` never shows secret values. Invalid values raise ``ValueError`` at construction.
    """

    granted: frozenset[str]
    """Granted bindings, a subset of ``kv``, ``db``, ``fetch``, ``secrets``."""
    fetch_allowlist: tuple[str, ...] = ()
    """Hosts ``env.fetch`` may reach: ``api.example.com``, ``*.example.com`` (subdomains only),
    ``127.0.0.1:8080``, ``localhost:8080``. An entry without a port allows any port. Loopback,
    private and other non-public addresses are refused unless an entry names the host literally."""
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Name -> value for ``env.secrets``; stored read-only, never shown in ``repr`` or errors."""
    storage_quota_bytes: int = 10 * MiB
    """Size cap of the tenant's SQLite database (kv and db share it); with the shared PostgreSQL kv,
    the sum of its entries' sizes (key + value + ``ENTRY_OVERHEAD_BYTES``) across every machine."""
    fetch_timeout_seconds: float = 10.0
    """Wall-clock budget of one ``env.fetch`` call, redirects included."""
    fetch_max_response_bytes: int = 1 * MiB
    """Largest response body ``env.fetch`` reads."""
    fetch_max_request_bytes: int = 1 * MiB
    """Largest request body ``env.fetch`` sends."""
    fetch_max_redirects: int = 5
    """Redirects followed by one ``env.fetch`` call (each hop is checked again)."""
    db_timeout_seconds: float = 5.0
    """Wall-clock budget of one ``env.db``/``env.kv`` call; a longer statement is interrupted."""
    db_max_rows: int = 10_000
    """Rows one ``env.db`` statement may return."""
    db_max_result_bytes: int = 4 * MiB
    """Approximate size of the rows one ``env.db`` call may return."""
    allow_entries: tuple[AllowEntry, ...] = field(init=False, repr=False, compare=False)
    """``fetch_allowlist``, parsed."""

    def __post_init__(self) -> None:
        granted = frozenset(self.granted)
        unknown = granted - KNOWN_BINDINGS
        if unknown:
            raise ValueError(f"unknown bindings {sorted(unknown)}; known: {sorted(KNOWN_BINDINGS)}")
        object.__setattr__(self, "granted", granted)
        if isinstance(self.fetch_allowlist, str):
            raise ValueError("fetch_allowlist must be a sequence of host entries, not one string")
        object.__setattr__(self, "fetch_allowlist", tuple(self.fetch_allowlist))
        object.__setattr__(self, "allow_entries", tuple(AllowEntry.parse(e) for e in self.fetch_allowlist))
        secrets = dict(self.secrets)
        for name, value in secrets.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError("secrets must map str names to str values")
        object.__setattr__(self, "secrets", MappingProxyType(secrets))
        if self.storage_quota_bytes < MIN_STORAGE_QUOTA_BYTES:
            raise ValueError(f"storage_quota_bytes must be at least {MIN_STORAGE_QUOTA_BYTES}")
        for name in (
            "fetch_max_response_bytes",
            "fetch_max_request_bytes",
            "db_max_rows",
            "db_max_result_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.fetch_max_redirects < 0:
            raise ValueError("fetch_max_redirects must be 0 or more")
        for name in ("fetch_timeout_seconds", "db_timeout_seconds"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds above 0")


PolicyGetter = Callable[[], BindingPolicy]
"""Returns the tenant's current policy (it may change between calls)."""
