"""Every client command, human and --json output, and clear errors."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from .conftest import Cli, cli_env

EXAMPLES = Path(__file__).resolve().parents[3] / "tenants_example"


def _tenant(cli: Cli, tenant: str = "shop", *extra: str) -> str:
    run = cli("tenants", "create", tenant, "--backend", "restricted", *extra, "--json")
    assert run.code == 0, run.err
    token: str = run.json()["token"]
    return token


def _wait(
    cli: Cli, token: str, workflow: str, instance: str, status: str, timeout: float = 20
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, object] = cli(
            "instances", "describe", workflow, instance, "--json", token=token
        ).json()
        if record["status"] == status or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    run = Cli(url, cli_env(url))("tenants", "list")
    assert run.code == 1
    assert f"no tenantflow server at {url}; start one with `tenantflow serve`" in run.err


def test_missing_and_wrong_tokens(cli: Cli) -> None:
    run = cli("tenants", "list", token=None)
    assert run.code == 1 and "TENANTFLOW_TOKEN" in run.err
    run = cli("tenants", "list", token="tf_wrong")
    assert run.code == 1 and "unknown or revoked token" in run.err


def test_tenants_create_list_policy(cli: Cli) -> None:
    run = cli("tenants", "create", "shop", "--backend", "restricted")
    assert run.code == 0, run.err
    assert "Created tenant shop" in run.out and "tf_" in run.out
    run = cli("tenants", "list")
    assert run.code == 0 and "shop" in run.out and "restricted" in run.out and "┌" in run.out
    assert [t["id"] for t in cli("tenants", "list", "--json").json()] == ["shop"]
    run = cli("tenants", "policy", "shop", "--set", '{"creation_rate": 7, "bindings": ["kv"]}')
    assert run.code == 0 and "creation_rate" in run.out
    policy = cli("tenants", "policy", "shop", "--json").json()
    assert policy["creation_rate"] == 7 and policy["bindings"] == ["kv"]
    run = cli("tenants", "policy", "shop", "--set", "{oops")
    assert run.code == 1 and "--set is not valid JSON" in run.err
    run = cli("tenants", "policy", "shop", "--set", '{"backend": "vm"}')
    assert run.code == 1 and "policy.backend" in run.err
    run = cli("tenants", "create", "shop")
    assert run.code == 1 and "already exists" in run.err
    assert cli("tenants", "suspend", "shop").code == 0
    assert cli("tenants", "list", "--json").json()[0]["status"] == "suspended"
    assert cli("tenants", "activate", "shop").code == 0


def test_tokens(cli: Cli) -> None:
    token = _tenant(cli)
    run = cli("tokens", "create", "--label", "ci", "--json", token=token)
    assert run.code == 0 and run.json()["token"].startswith("tf_")
    listed = cli("tokens", "list", "--json", token=token).json()
    assert len(listed) == 2
    assert cli("tokens", "revoke", run.json()["id"], token=token).code == 0
    assert cli("tokens", "list", "--json", token=token).json()[1]["revoked"] is True
    assert len(cli("tokens", "list", "--operator", "--json").json()) == 1


def test_deploy_versions_aliases(cli: Cli) -> None:
    token = _tenant(cli)
    run = cli("deploy", str(EXAMPLES / "order_processing"), "--tenant", "shop", "--alias", "production")
    assert run.code == 0, run.err
    assert "Deployed orders version 1" in run.out
    again = cli("deploy", str(EXAMPLES / "order_processing"), "--tenant", "shop")
    assert "Unchanged" in again.out
    single = cli("deploy", str(EXAMPLES / "order_processing" / "main.py"), "--workflow", "orders", "--json",
                 token=token)  # fmt: skip
    assert single.code == 0 and single.json()["version"]["number"] == 2
    run = cli("versions", "orders", token=token)
    assert run.code == 0 and "production" in run.out and "latest" in run.out
    assert [v["number"] for v in cli("versions", "orders", "--json", token=token).json()] == [2, 1]
    assert "orders" in cli("workflows", token=token).out
    run = cli("aliases", "set", "orders", "production", "2", token=token)
    assert run.code == 0 and "production → version 2" in run.out
    listed = cli("aliases", "list", "orders", "--json", token=token).json()
    assert {a["alias"]: a["version"] for a in listed} == {"latest": 2, "production": 2}
    run = cli("aliases", "rollback", "orders", "production", token=token)
    assert run.code == 0 and "version 1" in run.out
    run = cli("aliases", "history", "orders", "production", token=token)
    assert run.code == 0 and "rollback" in run.out
    run = cli("deploy", "/nonexistent/bundle", token=token)
    assert run.code == 1 and "does not exist" in run.err
    broken = Path(cli.env.get("TMPDIR", "/tmp")) / f"broken-{time.monotonic_ns()}.py"
    broken.write_text("def run(event, step:\n")
    try:
        run = cli("deploy", str(broken), "--workflow", "broken", token=token)
        assert run.code == 1 and "syntax error" in run.err
    finally:
        broken.unlink()


def test_operator_token_needs_a_tenant(cli: Cli) -> None:
    _tenant(cli)
    run = cli("versions", "orders")
    assert run.code == 1 and "--tenant ID" in run.err


def test_trigger_describe_events_and_control(cli: Cli) -> None:
    token = _tenant(cli)
    assert cli("deploy", str(EXAMPLES / "expense_approval"), token=token).code == 0
    run = cli("trigger", "expense-approval", '{"expense_id": "E1", "amount": 10, "submitter": "ada"}', "--id", "E1",
              token=token)  # fmt: skip
    assert run.code == 0, run.err
    assert "instance E1" in run.out
    record = _wait(cli, token, "expense-approval", "E1", "waiting")
    assert record["status"] == "waiting"
    run = cli("instances", "describe", "expense-approval", "E1", token=token)
    assert run.code == 0
    assert "⏳ Waiting" in run.out and "request approval" in run.out and "waitForEvent" in run.out
    run = cli("instances", "list", "expense-approval", token=token)
    assert run.code == 0 and "E1" in run.out
    listed = cli("instances", "list", "expense-approval", "--json", token=token).json()
    assert [i["id"] for i in listed["instances"]] == ["E1"]
    run = cli("instances", "send-event", "expense-approval", "E1", "decision", '{"approved": true, "by": "grace"}',
              token=token)  # fmt: skip
    assert run.code == 0 and "Sent 'decision'" in run.out
    record = _wait(cli, token, "expense-approval", "E1", "complete")
    assert record["output"]["status"] == "approved"  # type: ignore[index]
    run = cli("instances", "describe", "expense-approval", "E1", token=token)
    assert "✅ Completed" in run.out and "schedule payout" in run.out

    assert cli("trigger", "expense-approval", '{"expense_id": "E2", "amount": 5, "submitter": "x"}', "--id", "E2",
               token=token).code == 0  # fmt: skip
    _wait(cli, token, "expense-approval", "E2", "waiting")
    run = cli("instances", "pause", "expense-approval", "E2", token=token)
    assert run.code == 0 and "Paused" in run.out
    run = cli("instances", "resume", "expense-approval", "E2", "--json", token=token)
    assert run.code == 0 and run.json()["status"] in ("queued", "running", "waiting")
    _wait(cli, token, "expense-approval", "E2", "waiting")
    run = cli("instances", "restart", "expense-approval", "E2", "--from", "request approval", token=token)
    assert run.code == 0, run.err
    _wait(cli, token, "expense-approval", "E2", "waiting")
    run = cli("instances", "terminate", "expense-approval", "E2", token=token)
    assert run.code == 0 and "Terminated" in run.out
    run = cli("instances", "describe", "expense-approval", "E2", token=token)
    assert "🚫 Terminated" in run.out
    run = cli("instances", "pause", "expense-approval", "E2", token=token)
    assert run.code == 1 and "✘" in run.err


def test_trigger_errors(cli: Cli) -> None:
    token = _tenant(cli)
    run = cli("trigger", "nope", token=token)
    assert run.code == 1 and "workflow 'nope' has no version" in run.err
    run = cli("trigger", "nope", "{bad", token=token)
    assert run.code == 1 and "PARAMS_JSON is not valid JSON" in run.err
    run = cli("instances", "describe", "nope", "x", token=token)
    assert run.code == 1 and "not found" in run.err


def test_migrate(cli: Cli) -> None:
    token = _tenant(cli)
    cli("deploy", str(EXAMPLES / "expense_approval"), token=token)
    cli(
        "trigger",
        "expense-approval",
        '{"expense_id": "M", "amount": 1, "submitter": "x"}',
        "--id",
        "M",
        token=token,
    )
    _wait(cli, token, "expense-approval", "M", "waiting")
    cli(
        "deploy",
        str(EXAMPLES / "expense_approval" / "main.py"),
        "--workflow",
        "expense-approval",
        token=token,
    )
    run = cli("migrate", "expense-approval", "2", "M", "--tenant", "shop")
    assert run.code == 0, run.err
    assert "Migrated 1 instance" in run.out
    denied = cli("migrate", "expense-approval", "1", "M", token=token)
    assert denied.code == 1 and "operator" in denied.err
