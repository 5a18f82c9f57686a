"""env.fetch against a real HTTP server on 127.0.0.1 (the only network that exists in tests)."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

import dispatcher._bindings._fetch as fetch_module
from dispatcher._bindings import TenantBindings

from .conftest import LocalServer, MakeBindings, refusal


def fetch(env: TenantBindings, url: str, **kwargs: Any) -> Any:
    return env.call("env.fetch", {"url": url, **kwargs})


def test_allowed_when_listed_literally(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    result = fetch(env, server.url("/hello"))
    assert result["status"] == 200
    assert result["body"] == "hello"
    assert result["headers"]["x-test"] == "yes"
    assert result["url"] == server.url("/hello")
    assert "body_base64" not in result


def test_env_fetch_request_alias_and_positional_form(
    make_bindings: MakeBindings, server: LocalServer
) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    assert env.call("env.fetch.request", {"url": server.url("/hello")})["body"] == "hello"
    assert env.call("env.fetch", {"args": [server.url("/hello")]})["body"] == "hello"


def test_method_headers_body(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    result = fetch(
        env,
        server.url("/echo?q=1"),
        method="post",
        headers={"Content-Type": "application/json", "X-Token": "t"},
        body=json.dumps({"a": "é"}),
    )
    echoed = json.loads(result["body"])
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo?q=1"
    assert echoed["headers"]["x-token"] == "t"
    assert echoed["headers"]["host"] == server.entry
    assert echoed["headers"]["user-agent"].startswith("tenantflow-fetch")
    assert json.loads(echoed["body"]) == {"a": "é"}


def test_head_and_binary_bodies(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    head = fetch(env, server.url("/hello"), method="HEAD")
    assert (head["status"], head["body"]) == (200, "")
    binary = fetch(env, server.url("/binary"))
    assert binary["body_base64"] == "//4Ab2s="
    assert binary["body"].endswith("ok")
    assert fetch(env, server.url("/missing"))["status"] == 404


def test_refused_when_not_listed(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=())
    error = refusal(env, "env.fetch", {"url": server.url("/hello")})
    assert error.type_name == "FetchDenied"
    assert "host '127.0.0.1' is not on this tenant's fetch allowlist" in error.message


def test_refused_on_another_port(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=("127.0.0.1:1",))
    error = refusal(env, "env.fetch", {"url": server.url("/hello")})
    assert error.type_name == "FetchDenied"
    assert f"port {server.port} of host '127.0.0.1'" in error.message


def test_refused_for_a_non_allowlisted_host(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry, "api.example.com"))
    for url in ["http://evil.com/", "http://api.example.com.evil.com/", "http://example.com/"]:
        error = refusal(env, "env.fetch", {"url": url})
        assert error.type_name == "FetchDenied" and "not on this tenant's fetch allowlist" in error.message


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1:70/"],
)
def test_only_http_and_https(make_bindings: MakeBindings, url: str) -> None:
    env = make_bindings(fetch_allowlist=("127.0.0.1",))
    error = refusal(env, "env.fetch", {"url": url})
    assert error.type_name == "FetchDenied" and "http and https only" in error.message


def test_redirects_within_the_allowlist_are_followed(
    make_bindings: MakeBindings, server: LocalServer
) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    result = fetch(env, server.url("/redirect?to=/hello"))
    assert (result["status"], result["body"], result["url"]) == (200, "hello", server.url("/hello"))
    # 303 turns a POST into a GET without the body.
    result = fetch(env, server.url("/redirect?status=303&to=/echo"), method="POST", body="x")
    assert json.loads(result["body"])["method"] == "GET"
    # 307 keeps the method and the body.
    result = fetch(env, server.url("/redirect?status=307&to=/echo"), method="POST", body="x")
    assert json.loads(result["body"])["body"] == "x"


def test_redirect_to_a_non_allowed_server_is_refused(
    make_bindings: MakeBindings, server: LocalServer, other_server: LocalServer
) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    target = other_server.url("/hello")
    error = refusal(env, "env.fetch", {"url": server.url(f"/redirect?to={target}")})
    assert error.type_name == "FetchDenied"
    assert f"redirect to '{target}' refused" in error.message
    assert "not on this tenant's fetch allowlist" in error.message
    for scheme_target in ["file:///etc/passwd", "http://evil.com/"]:
        error = refusal(env, "env.fetch", {"url": server.url(f"/redirect?to={scheme_target}")})
        assert error.type_name == "FetchDenied" and "redirect to" in error.message


def test_credentials_are_dropped_on_cross_origin_redirect(
    make_bindings: MakeBindings, server: LocalServer, other_server: LocalServer
) -> None:
    env = make_bindings(fetch_allowlist=(server.entry, other_server.entry))
    target = other_server.url("/echo")
    result = fetch(
        env, server.url(f"/redirect?to={target}"), headers={"Authorization": "Bearer t", "X-A": "1"}
    )
    headers = json.loads(result["body"])["headers"]
    assert "authorization" not in headers and headers["x-a"] == "1"


def test_too_many_redirects(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,), fetch_max_redirects=2)
    loop = "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/hello"
    error = refusal(env, "env.fetch", {"url": server.url(loop)})
    assert error.type_name == "FetchError" and "followed 2 redirects" in error.message


def test_response_size_cap(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,), fetch_max_response_bytes=100_000)
    assert len(fetch(env, server.url("/big?n=100000"))["body"]) == 100_000
    error = refusal(env, "env.fetch", {"url": server.url("/big?n=100001")})
    assert error.type_name == "ResponseTooLarge" and "100000 bytes" in error.message
    # Without a Content-Length the cap still holds while streaming.
    error = refusal(env, "env.fetch", {"url": server.url("/stream?chunks=100")})
    assert error.type_name == "ResponseTooLarge"


def test_request_body_cap(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,), fetch_max_request_bytes=10)
    error = refusal(env, "env.fetch", {"url": server.url("/echo"), "method": "POST", "body": "x" * 11})
    assert error.type_name == "ValueError" and "fetch_max_request_bytes" in error.message


def test_timeout(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,), fetch_timeout_seconds=0.3)
    started = time.monotonic()
    error = refusal(env, "env.fetch", {"url": server.url("/slow?s=2")})
    assert error.type_name == "TimeoutError"
    assert time.monotonic() - started < 1.5


def test_connection_refused(make_bindings: MakeBindings, server: LocalServer) -> None:
    port = server.port
    server.httpd.shutdown()
    server.httpd.server_close()
    env = make_bindings(fetch_allowlist=(f"127.0.0.1:{port}",))
    assert refusal(env, "env.fetch", {"url": f"http://127.0.0.1:{port}/"}).type_name == "ConnectionError"


def test_localhost_refused_unless_listed(make_bindings: MakeBindings, server: LocalServer) -> None:
    url = f"http://localhost:{server.port}/hello"
    listed_ip = make_bindings(fetch_allowlist=(server.entry,))
    error = refusal(listed_ip, "env.fetch", {"url": url})
    assert error.type_name == "FetchDenied" and "host 'localhost'" in error.message
    listed_name = make_bindings(fetch_allowlist=(f"localhost:{server.port}",))
    assert fetch(listed_name, url)["body"] == "hello"


def test_wildcard_name_resolving_to_loopback_is_refused(
    make_bindings: MakeBindings, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str] = []

    def fake_resolve(host: str, port: int) -> list[Any]:
        resolved.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch_module, "resolve_host", fake_resolve)
    env = make_bindings(fetch_allowlist=("*.example.com",))
    error = refusal(env, "env.fetch", {"url": f"http://api.example.com:{server.port}/hello"})
    assert error.type_name == "FetchDenied"
    assert "'api.example.com' resolves to 127.0.0.1, which is a loopback address" in error.message
    assert "list it explicitly" in error.message
    assert resolved == ["api.example.com"]
    # Listing that host literally is the operator's explicit consent; the connection goes to the
    # checked address (pinned), with the name in the Host header.
    env.update_policy(env.policy.__class__(granted=env.policy.granted, fetch_allowlist=("api.example.com",)))
    echoed = json.loads(fetch(env, f"http://api.example.com:{server.port}/echo")["body"])
    assert echoed["headers"]["host"] == f"api.example.com:{server.port}"


def test_any_bad_address_among_several_refuses(
    make_bindings: MakeBindings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fetch_module,
        "resolve_host",
        lambda host, port: [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")],
    )
    env = make_bindings(fetch_allowlist=("*.example.com",))
    error = refusal(env, "env.fetch", {"url": "https://www.example.com/"})
    assert error.type_name == "FetchDenied" and "10.0.0.5, which is a private address" in error.message


def test_wildcard_matches_subdomains_only(make_bindings: MakeBindings) -> None:
    env = make_bindings(fetch_allowlist=("*.example.com",))
    error = refusal(env, "env.fetch", {"url": "http://example.com/"})
    assert error.type_name == "FetchDenied" and "not on this tenant's fetch allowlist" in error.message


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "non-public"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_address_classes(address: str, label: str) -> None:
    problem = fetch_module.address_problem(ipaddress.ip_address(address))
    assert problem is not None and label in problem


def test_public_addresses_pass() -> None:
    for address in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]:
        assert fetch_module.address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("kwargs", "type_name"),
    [
        ({"url": "not a url"}, "ValueError"),
        ({"url": "/relative"}, "ValueError"),
        ({"url": "http://user:pw@127.0.0.1/"}, "ValueError"),
        ({"url": "http://127.0.0.1/", "method": "TRACE"}, "ValueError"),
        ({"url": "http://127.0.0.1/", "headers": {"Host": "other"}}, "ValueError"),
        ({"url": "http://127.0.0.1/", "headers": {"X": "a\r\nInjected: 1"}}, "ValueError"),
        ({"url": "http://127.0.0.1/", "headers": ["X"]}, "TypeError"),
        ({"url": "http://127.0.0.1/", "body": {"a": 1}}, "TypeError"),
        ({"url": "http://127.0.0.1/", "body": "x"}, "ValueError"),
        ({"url": 5}, "TypeError"),
    ],
)
def test_argument_checks(make_bindings: MakeBindings, kwargs: dict[str, Any], type_name: str) -> None:
    env = make_bindings(fetch_allowlist=("127.0.0.1",))
    assert refusal(env, "env.fetch", kwargs).type_name == type_name


def test_concurrent_fetches(make_bindings: MakeBindings, server: LocalServer) -> None:
    import threading

    env = make_bindings(fetch_allowlist=(server.entry,))
    bodies: list[str] = []

    def worker() -> None:
        for _ in range(5):
            bodies.append(fetch(env, server.url("/hello"))["body"])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bodies == ["hello"] * 30


def test_close_then_fetch(make_bindings: MakeBindings, server: LocalServer) -> None:
    env = make_bindings(fetch_allowlist=(server.entry,))
    fetch(env, server.url("/hello"))
    env.close()
    assert refusal(env, "env.fetch", {"url": server.url("/hello")}).type_name == "RuntimeError"
