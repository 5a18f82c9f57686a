"""Each binding through the real stack (engine, artifacts, wasm and restricted sandboxes)."""

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import OPERATOR
from engine import Status

from .conftest import deploy, finish, open_platform

USES_EVERYTHING = """
from tenantflow import env

def run(event, step):
    def work():
        env.kv.put("greeting", {"text": "hello"})
        env.kv.put(key="other", value=2)
        env.db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, total INTEGER)")
        env.db.execute("INSERT INTO orders (total) VALUES (?)", [42])
        rows = env.db.execute("SELECT total FROM orders")["rows"]
        page = env.fetch(event["payload"]["url"])
        return {
            "kv": env.kv.get("greeting"),
            "keys": env.kv.list(prefix="")["keys"],
            "rows": rows,
            "secret": env.secrets.get("API_KEY") == "hunter2",
            "fetched": [page["status"], page["body"]],
        }
    return step.do("work", work)
"""

PROBES = """
from tenantflow import BindingNotGranted, EventTimeoutError, env

def run(event, step):
    results = {"has_kv": hasattr(env, "kv"), "has_db": hasattr(env, "db")}
    try:
        step.wait_for_event("never", "nothing", timeout=1)
    except EventTimeoutError:
        results["timeout_class"] = "EventTimeoutError"
    try:
        env.kv
    except BindingNotGranted:
        results["not_granted_class"] = "BindingNotGranted"
    for name, call in [
        ("kv", lambda: env.kv.get("x")),
        ("db", lambda: env.db.execute("SELECT 1")),
        ("fetch", lambda: env.fetch("http://127.0.0.1:1/")),
        ("secrets", lambda: env.secrets.get("API_KEY")),
    ]:
        try:
            call()
            results[name] = "allowed"
        except Exception as exc:
            results[name] = str(exc)  # portable: the restricted backend forbids dunder attributes
    return results
"""


@pytest.fixture
def local_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"from the local server"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("backend", ["wasm", "restricted"])
async def test_granted_bindings_work_and_ungranted_are_refused(
    tmp_path: Path, backend: str, local_server: str
) -> None:
    platform = await open_platform(tmp_path / "data")
    try:
        await deploy(
            platform, "full", USES_EVERYTHING, backend=backend, bindings=["kv", "db", "fetch", "secrets"],
            fetch_allowlist=[local_server], secrets={"API_KEY": "hunter2"},
        )  # fmt: skip
        instance = await platform.create_instance(
            OPERATOR, "full", "flow", {"url": f"http://{local_server}/"}
        )
        done = await finish(platform, "full", instance.id)
        assert done.status == Status.COMPLETE, done.error
        assert done.output == {
            "kv": {"text": "hello"},
            "keys": ["greeting", "other"],
            "rows": [[42]],
            "secret": True,
            "fetched": [200, "from the local server"],
        }
        await deploy(platform, "bare", PROBES, backend=backend)
        probe = await platform.create_instance(OPERATOR, "bare", "flow")
        results = (await finish(platform, "bare", probe.id)).output
        for name in ("kv", "db", "fetch", "secrets"):
            assert results[name].startswith(f"binding {name!r} is not granted to this tenant"), results
        assert results["has_kv"] is False and results["has_db"] is False
        assert results["timeout_class"] == "EventTimeoutError"
        assert results["not_granted_class"] == "BindingNotGranted"
        # The tenant with grants still cannot reach another tenant's data or a non-allowlisted host.
        await deploy(platform, "full", PROBES.replace("127.0.0.1:1", "127.0.0.1:9"), backend=backend)
        other = await platform.create_instance(OPERATOR, "full", "flow")
        results = (await finish(platform, "full", other.id)).output
        assert results["kv"] == "allowed" and results["secrets"] == "allowed"
        assert results["has_kv"] is True and results["has_db"] is True
        assert "not_granted_class" not in results
        assert "not on this tenant's fetch allowlist" in results["fetch"] or "refused" in results["fetch"], (
            results
        )
    finally:
        await platform.aclose()
