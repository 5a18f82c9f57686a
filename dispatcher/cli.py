"""The ``tenantflow`` command line.

``serve`` runs the API and the engine in one process (``--db postgresql://...`` puts every store in
PostgreSQL, ``--no-worker`` serves the API only); ``worker`` runs instances from that database without
HTTP; ``demo`` runs a self-contained tour; every other command is a client of a running server (``TENANTFLOW_URL``, default ``http://127.0.0.1:8787``,
with ``TENANTFLOW_TOKEN``). ``--json`` on any command prints machine-readable output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import version

from ._cli import _commands as commands
from ._cli._client import Client, CliError

Handler = Callable[[argparse.Namespace, Client], int]
MiB = 1024 * 1024


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--url", help="server URL (default: $TENANTFLOW_URL or http://127.0.0.1:8787)")
    group.add_argument("--token", help="API token (default: $TENANTFLOW_TOKEN)")
    group.add_argument(
        "--tenant", help="tenant to act on with an operator token (default: $TENANTFLOW_TENANT)"
    )
    group.add_argument("--json", action="store_true", help="print JSON instead of human output")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenantflow", description="Durable per-tenant workflows in sandboxes."
    )
    parser.add_argument("--version", action="version", version=f"tenantflow {version('tenantflow')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler | None,
        help_text: str,
    ) -> argparse.ArgumentParser:
        command = parent.add_parser(name, parents=[common], help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    serve = sub.add_parser("serve", help="run the API and the engine in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument(
        "--data-dir", help="where state lives (default: $TENANTFLOW_DATA_DIR or ~/.local/share/tenantflow)"
    )
    serve.add_argument("--max-body-bytes", type=int, default=2 * MiB, help="largest JSON request body")
    serve.add_argument("--max-upload-bytes", type=int, default=6 * MiB, help="largest bundle upload")
    serve.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    _database_options(serve)
    serve.add_argument(
        "--no-worker", action="store_true", help="API only: never run instances (needs --db; run workers)"
    )

    worker = sub.add_parser(
        "worker", help="run instances from a shared PostgreSQL database (no HTTP)",
        description="Claim and run instances from a PostgreSQL database shared with tenantflow serve.",
    )  # fmt: skip
    _database_options(worker)
    worker.add_argument(
        "--data-dir", help="local caches (default: $TENANTFLOW_DATA_DIR or ~/.local/share/tenantflow)"
    )
    worker.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )

    demo = sub.add_parser(
        "demo", help="a zero-configuration tour: three tenants, both backends, live progress"
    )
    demo.add_argument("--data-dir", help="keep the demo's state here (default: a temporary directory)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")

    tenants = add(sub, "tenants", None, "manage tenants (operator)")
    tsub = tenants.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)
    create = add(tsub, "create", commands.tenants_create, "create a tenant and print its token")
    create.add_argument("id")
    create.add_argument("--backend", choices=["wasm", "restricted"])
    create.add_argument("--display-name")
    create.add_argument("--policy", help="policy fields as a JSON object")
    add(tsub, "list", commands.tenants_list, "list tenants")
    policy = add(tsub, "policy", commands.tenants_policy, "show or change a tenant's policy")
    policy.add_argument("id")
    policy.add_argument("--set", metavar="JSON", help="fields to change, e.g. '{\"creation_rate\": 50}'")
    for action in ("suspend", "activate"):
        add(tsub, action, commands.tenants_status, f"{action} a tenant").add_argument("id")

    tokens = add(sub, "tokens", None, "manage API tokens")
    ksub = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    for name, handler in (("create", commands.tokens_create), ("list", commands.tokens_list)):
        token_cmd = add(ksub, name, handler, f"{name} tokens of a tenant (or --operator tokens)")
        token_cmd.add_argument(
            "--operator", action="store_true", help="operator tokens instead of a tenant's"
        )
        if name == "create":
            token_cmd.add_argument("--label")
    add(ksub, "revoke", commands.tokens_revoke, "revoke a token").add_argument("token_id")

    deploy = add(
        sub, "deploy", commands.deploy, "upload a bundle (directory, .zip, .tar.gz or .py) as a new version"
    )
    deploy.add_argument("path")
    deploy.add_argument("--workflow", help="workflow name (default: from tenantflow.toml)")
    deploy.add_argument("--alias", action="append", help="also point this alias at the version (repeatable)")

    add(sub, "workflows", commands.workflows, "list the tenant's workflows")
    add(sub, "versions", commands.versions, "list a workflow's versions").add_argument("workflow")

    aliases = add(sub, "aliases", commands.aliases, "list, set, roll back or show the history of aliases")
    asub = aliases.add_subparsers(dest="aliases_command", metavar="ACTION")
    add(asub, "list", commands.aliases, "list aliases").add_argument("workflow")
    alias_set = add(asub, "set", commands.aliases, "point an alias at a version")
    alias_set.add_argument("workflow")
    alias_set.add_argument("alias")
    alias_set.add_argument("version", help="version number, digest or another alias")
    for name in ("rollback", "history"):
        cmd = add(asub, name, commands.aliases, f"{name} of an alias")
        cmd.add_argument("workflow")
        cmd.add_argument("alias")

    migrate = add(
        sub, "migrate", commands.migrate, "re-pin unfinished instances to another version (operator)"
    )
    migrate.add_argument("workflow")
    migrate.add_argument("version")
    migrate.add_argument("instance_ids", nargs="+", metavar="INSTANCE_ID")

    trigger = add(sub, "trigger", commands.trigger, "create an instance of a workflow")
    trigger.add_argument("workflow")
    trigger.add_argument("params", nargs="?", metavar="PARAMS_JSON")
    trigger.add_argument("--id", help="instance id (default: generated)")

    instances = add(sub, "instances", None, "list, inspect and control instances")
    isub = instances.add_subparsers(dest="instances_command", metavar="ACTION", required=True)
    listing = add(isub, "list", commands.instances_list, "list instances of a workflow")
    listing.add_argument("workflow")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor")
    listing.add_argument("--reverse", action="store_true", help="newest first")
    describe = add(isub, "describe", commands.instances_describe, "an instance with its steps")
    describe.add_argument("workflow")
    describe.add_argument("instance_id")
    event = add(isub, "send-event", commands.instances_send_event, "send an event to an instance")
    event.add_argument("workflow")
    event.add_argument("instance_id")
    event.add_argument("event_type")
    event.add_argument("payload", nargs="?", metavar="PAYLOAD_JSON")
    for action in ("pause", "resume", "terminate", "restart"):
        control = add(isub, action, commands.instances_control, f"{action} an instance")
        control.add_argument("workflow")
        control.add_argument("instance_id")
        if action == "restart":
            control.add_argument("--from", dest="from_step", metavar="STEP", help="restart from this step")
            control.add_argument("--from-count", type=int, default=1)
            control.add_argument("--from-type", default="do", choices=["do", "sleep", "waitForEvent"])
    return parser


def _database_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shared database (scale-out)")
    group.add_argument(
        "--db",
        metavar="DSN",
        help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db (default: $TENANTFLOW_DB)",
    )
    group.add_argument(
        "--schema", default="tenantflow",
        help="schema prefix: stores go in PREFIX_engine, PREFIX_artifacts, PREFIX_control (default: tenantflow)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "serve":
            from ._cli._serve import serve

            return serve(args)
        if args.command == "worker":
            import logging

            from ._cli._worker import worker

            logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                                format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
            return worker(args)
        if args.command == "demo":
            from ._cli._demo import demo

            return demo(args)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.parse_args([args.command, "--help"])
            return 2
        with Client(args.url, args.token, args.tenant) as client:
            return handler(args, client)
    except CliError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
