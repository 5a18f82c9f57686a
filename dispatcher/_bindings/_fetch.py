"""``env.fetch``: outbound HTTP for tenant code, only to hosts on the tenant's allowlist.

Every hop (the first request and each redirect, followed by hand) is checked before anything is
sent: scheme http/https; host (and port, when the entry names one) on the allowlist, where
``*.example.com`` matches subdomains only; then DNS is resolved here and the request is refused if
ANY resolved address is loopback, private, link-local, multicast, reserved, unspecified or otherwise
not global (IPv4-mapped, 6to4 and NAT64 forms are unwrapped), unless an allowlist entry names the
host literally (``127.0.0.1:8080``, ``localhost:8080``, ``db.internal``): an operator who lists a
host explicitly means it.

Design note: DNS rebinding. Checking a name and then letting the HTTP client resolve it again
would leave a window in which a hostile DNS server answers "public" to the check and "127.0.0.1"
to the connection. So the connection is *pinned* to the checked address: the request URL carries
the IP, the ``Host`` header carries the name, and for https the ``sni_hostname`` request extension
(httpcore) makes TLS send that name and verify the certificate against it. Keep-alive is off
(``max_keepalive_connections=0``), so a connection opened (and certificate-checked) for one name is
never reused for another name that happens to share the address. Remaining caveat: resolution
uses the blocking ``socket.getaddrinfo``, which the fetch timeout does not bound.

The transport is httpx's plain ``HTTPTransport``: no cookie jar (nothing carries over between
calls), no environment proxies, no automatic redirects or decompression. Response bodies are read
raw and capped while streaming; a compressed body comes back as sent, with its ``content-encoding``.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from sandbox import JSON, HostCallError

from ._args import Param, Signature, want_str
from ._errors import FETCH_DENIED, FETCH_ERROR, RESPONSE_TOO_LARGE, echo, refuse
from ._policy import BindingPolicy, PolicyGetter, normalize_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNATURE = Signature(
    "env.fetch", (Param("url"), Param("method", "GET"), Param("headers", {}), Param("body", None))
)
SIGNATURES = {"request": SIGNATURE}
"""``env.fetch(...)`` arrives as ``env.fetch`` or ``env.fetch.request``; both map to ``request``."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_URL_CHARS = 8192
MAX_HEADERS = 100
USER_AGENT = "tenantflow-fetch/0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    }
)
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, IPv4 first (the order connections are tried in)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return sorted(found, key=lambda ip: ip.version)


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched without an explicit allowlist entry, or None if it is public."""
    candidates: list[IPAddress] = []
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address embedded in an IPv6 one says most about where the packet goes.
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    candidates.append(ip)
    for candidate in candidates:
        for test, label in (
            ("is_loopback", "a loopback address"),
            ("is_unspecified", "an unspecified address"),
            ("is_link_local", "a link-local address"),
            ("is_multicast", "a multicast address"),
            ("is_reserved", "a reserved address"),
            ("is_private", "a private address"),
        ):
            if getattr(candidate, test):
                return label
        if not candidate.is_global:
            return "a non-public address"
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


class FetchBinding:
    """The host side of ``env.fetch``. Thread-safe; ``close()`` is idempotent."""

    signatures = SIGNATURES

    def __init__(self, policy: PolicyGetter) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._transport: httpx.HTTPTransport | None = None
        self._closed = False

    def invoke(self, method: str, args: dict[str, Any]) -> JSON:
        return self.fetch(**args)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def fetch(self, url: object, method: object, headers: object, body: object) -> JSON:
        policy = self._policy()
        deadline = time.monotonic() + policy.fetch_timeout_seconds
        current = _parse_url(url)
        verb = _method(method)
        sent_headers = _headers(headers)
        content = _body(body, verb, policy)
        redirects = 0
        while True:
            try:
                target = self._check(current, policy)
            except HostCallError as exc:
                if redirects and exc.type_name == FETCH_DENIED:
                    raise refuse(
                        FETCH_DENIED, f"redirect to {echo(str(current))} refused: {exc.message}"
                    ) from None
                raise
            response = self._send(target, verb, sent_headers, content, deadline)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location is not None:
                    redirects += 1
                    if redirects > policy.fetch_max_redirects:
                        raise refuse(
                            FETCH_ERROR,
                            f"env.fetch followed {policy.fetch_max_redirects} redirects (fetch_max_redirects) "
                            f"and {echo(str(current))} redirects again; request the final URL directly",
                        )
                    following = _follow(current, location)
                    if response.status_code == 303 or (response.status_code in (301, 302) and verb == "POST"):
                        verb = "GET" if verb != "HEAD" else verb
                        content = None
                        sent_headers = {k: v for k, v in sent_headers.items() if k.lower() != "content-type"}
                    if _origin(following) != _origin(current):
                        sent_headers = {
                            k: v for k, v in sent_headers.items() if k.lower() not in _CREDENTIAL_HEADERS
                        }
                    current = following
                    continue
                data = b"" if verb == "HEAD" else _read(response, target, deadline, policy)
                return _result(response, data, current)
            finally:
                response.close()

    # ----------------------------------------------------------------------- checks

    def _check(self, url: httpx.URL, policy: BindingPolicy) -> _Target:
        if url.scheme not in ("http", "https"):
            raise refuse(
                FETCH_DENIED,
                f"scheme {echo(url.scheme)} is not allowed; env.fetch speaks http and https only",
            )
        try:
            host = normalize_host(url.raw_host.decode("ascii"))
        except UnicodeError:
            raise refuse("ValueError", f"env.fetch: {echo(str(url))} has an invalid host") from None
        if not host:
            raise refuse("ValueError", f"env.fetch: {echo(str(url))} has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        entries = [e for e in policy.allow_entries if e.matches(host, port)]
        if not entries:
            if any(e.matches_host(host) for e in policy.allow_entries):
                raise refuse(
                    FETCH_DENIED,
                    f"port {port} of host {echo(host)} is not on this tenant's fetch allowlist; "
                    "an operator can add it in the tenant policy (fetch_allowlist)",
                )
            raise refuse(
                FETCH_DENIED,
                f"host {echo(host)} is not on this tenant's fetch allowlist; an operator can add it "
                "in the tenant policy (fetch_allowlist)",
            )
        literal = any(not e.wildcard and e.host == host for e in entries)
        addresses: tuple[IPAddress, ...]
        try:
            addresses = (ipaddress.ip_address(host),)
        except ValueError:
            addresses = tuple(self._resolve(host, port))
        if not addresses:
            raise refuse("ConnectionError", f"env.fetch: {echo(host)} resolves to no address")
        if not literal:
            for ip in addresses:
                problem = address_problem(ip)
                if problem is not None:
                    named = f"{ip}" if str(ip) == host else f"{echo(host)} resolves to {ip}, which"
                    raise refuse(
                        FETCH_DENIED,
                        f"{named} is {problem}; list it explicitly in the fetch allowlist "
                        f"(e.g. '{host}:{port}') to allow it",
                    )
        return _Target(url, host, port, addresses)

    @staticmethod
    def _resolve(host: str, port: int) -> list[IPAddress]:
        try:
            return resolve_host(host, port)
        except (OSError, UnicodeError) as exc:
            raise refuse("ConnectionError", f"env.fetch: cannot resolve {echo(host)} ({exc})") from None

    # ----------------------------------------------------------------------- wire

    def _transport_(self) -> httpx.HTTPTransport:
        with self._lock:
            if self._closed:
                raise refuse("RuntimeError", "env.fetch is closed; the invocation is ending")
            if self._transport is None:
                self._transport = httpx.HTTPTransport(
                    retries=0, limits=httpx.Limits(max_connections=20, max_keepalive_connections=0)
                )
            return self._transport

    def _send(
        self, target: _Target, method: str, headers: dict[str, str], content: bytes | None, deadline: float
    ) -> httpx.Response:
        transport = self._transport_()
        host_header = target.url.netloc.decode("ascii")
        if target.url.userinfo:
            host_header = host_header.rpartition("@")[2]
        extensions: dict[str, Any] = {}
        if target.url.scheme == "https" and target.host != str(target.addresses[0]):
            extensions["sni_hostname"] = target.host
        last: Exception | None = None
        for ip in target.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            request = httpx.Request(
                method,
                target.url.copy_with(host=str(ip)),
                headers={"User-Agent": USER_AGENT, **headers, "Host": host_header},
                content=content,
                extensions={**extensions, "timeout": httpx.Timeout(remaining).as_dict()},
            )
            try:
                return transport.handle_request(request)
            except httpx.ConnectTimeout as exc:
                last = exc
            except httpx.ConnectError as exc:
                last = exc
            except httpx.TimeoutException as exc:
                raise _timeout(target) from exc
            except httpx.HTTPError as exc:
                raise refuse(FETCH_ERROR, f"env.fetch to {echo(target.host)} failed: {exc}") from None
        if last is None or isinstance(last, httpx.ConnectTimeout):
            raise _timeout(target)
        raise refuse(
            "ConnectionError", f"env.fetch could not connect to {echo(target.host)}: {last}"
        ) from None


def _read(response: httpx.Response, target: _Target, deadline: float, policy: BindingPolicy) -> bytes:
    cap = policy.fetch_max_response_bytes
    too_large = refuse(
        RESPONSE_TOO_LARGE,
        f"the response from {echo(target.host)} is larger than {cap} bytes (fetch_max_response_bytes); "
        "request less (a range, a page), or ask an operator to raise the cap",
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > cap:
                raise too_large
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _timeout(target)
    except httpx.TimeoutException:
        raise _timeout(target) from None
    except httpx.HTTPError as exc:
        raise refuse(FETCH_ERROR, f"reading the response from {echo(target.host)} failed: {exc}") from None
    return b"".join(chunks)


def _result(response: httpx.Response, data: bytes, url: httpx.URL) -> JSON:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    result: dict[str, JSON] = {"status": response.status_code, "headers": headers, "url": str(url)}
    try:
        result["body"] = data.decode("utf-8")
    except UnicodeDecodeError:
        result["body"] = data.decode("utf-8", "replace")
        result["body_base64"] = base64.b64encode(data).decode("ascii")
    return result


def _timeout(target: _Target) -> HostCallError:
    return refuse("TimeoutError", f"env.fetch to {echo(target.host)} did not finish within its timeout")


# --------------------------------------------------------------------------- argument checks


def _parse_url(url: object) -> httpx.URL:
    text = want_str(url, "env.fetch: url", max_chars=MAX_URL_CHARS)
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise refuse("ValueError", f"env.fetch: {echo(text)} is not a valid URL ({exc})") from None
    if parsed.scheme and parsed.scheme not in ("http", "https"):
        raise refuse(
            FETCH_DENIED, f"scheme {echo(parsed.scheme)} is not allowed; env.fetch speaks http and https only"
        )
    if not parsed.is_absolute_url:
        raise refuse("ValueError", f"env.fetch: {echo(text)} must be an absolute http(s) URL")
    if parsed.userinfo:
        raise refuse(
            "ValueError", "env.fetch: credentials in the URL are not sent; use an Authorization header"
        )
    return parsed


def _follow(current: httpx.URL, location: str) -> httpx.URL:
    try:
        following = current.join(location)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise refuse(FETCH_ERROR, f"the redirect from {echo(str(current))} has an invalid Location") from None
    if following.userinfo:
        raise refuse(FETCH_DENIED, "redirect refused: the Location carries credentials")
    return following


def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port


def _method(method: object) -> str:
    text = want_str(method, "env.fetch: method", max_chars=16).upper()
    if text not in METHODS:
        raise refuse(
            "ValueError", f"env.fetch: method {echo(method)} is not one of {', '.join(sorted(METHODS))}"
        )
    return text


def _headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise refuse("TypeError", "env.fetch: headers must be an object of str names to str values")
    if len(headers) > MAX_HEADERS:
        raise refuse("ValueError", f"env.fetch: at most {MAX_HEADERS} headers")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise refuse("ValueError", f"env.fetch: {echo(name)} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise refuse("ValueError", f"env.fetch: the {name} header is set by env.fetch itself; remove it")
        if not isinstance(value, str):
            raise refuse("TypeError", f"env.fetch: the value of header {name} must be a str")
        if any(c in value for c in "\r\n\0") or (not value.isascii() and not _latin1(value)):
            raise refuse("ValueError", f"env.fetch: the value of header {name} has forbidden characters")
        out[name] = value
    return out


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _body(body: object, method: str, policy: BindingPolicy) -> bytes | None:
    if body is None:
        return None
    if not isinstance(body, str):
        raise refuse("TypeError", "env.fetch: body must be a str or None (encode JSON with json.dumps)")
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse("ValueError", "env.fetch: body is not valid Unicode") from None
    if len(data) > policy.fetch_max_request_bytes:
        raise refuse(
            "ValueError",
            f"env.fetch: body is {len(data)} bytes; the limit is {policy.fetch_max_request_bytes} "
            "(fetch_max_request_bytes)",
        )
    if method in ("GET", "HEAD"):
        raise refuse("ValueError", f"env.fetch: a {method} request cannot have a body")
    return data
