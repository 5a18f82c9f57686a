"""The engine's public surface, and its independence from the other packages."""

import ast
from pathlib import Path

import engine

ENGINE_DIR = Path(engine.__file__).parent


def test_exports_are_pinned() -> None:
    assert sorted(engine.__all__) == sorted(
        [
            "FINISHED",
            "Clock",
            "Complete",
            "CreateRequest",
            "Engine",
            "EngineConfig",
            "EngineError",
            "EngineStore",
            "EngineValidationError",
            "ErrorInfo",
            "EventTimeoutError",
            "Executor",
            "Failed",
            "FunctionExecutor",
            "Instance",
            "InstanceExistsError",
            "InstanceNotFoundError",
            "InstanceStatus",
            "InvalidTransitionError",
            "Journal",
            "ManualClock",
            "NonDeterminismError",
            "NonRetryableError",
            "Outcome",
            "Page",
            "PayloadTooLargeError",
            "PostgresStore",
            "RestartFrom",
            "RetryConfig",
            "RunAborted",
            "RunContext",
            "SqliteStore",
            "StepCached",
            "StepConfig",
            "StepDecision",
            "StepFailedError",
            "StepFailure",
            "StepRun",
            "Status",
            "Suspend",
            "Suspended",
            "SystemClock",
            "WorkflowFunction",
            "iso_ms",
            "parse_duration",
            "validate_id",
        ]
    )
    for name in engine.__all__:
        assert hasattr(engine, name), name


def test_engine_imports_nothing_from_the_other_packages() -> None:
    forbidden = {"artifacts", "sandbox", "dispatcher"}
    for path in ENGINE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not forbidden & set(names), f"{path.name} imports {names}"


def test_engine_has_no_notion_of_a_tenant() -> None:
    for path in ENGINE_DIR.glob("*.py"):
        text = path.read_text().lower().replace("tenantflow", "")
        assert "tenant" not in text, f"{path.name} mentions tenants"


def test_suspension_signals_are_not_exceptions() -> None:
    assert not issubclass(engine.Suspend, Exception)
    assert not issubclass(engine.RunAborted, Exception)
