"""Durable execution: instances, the step journal, timers, events, the scheduler.

Quick tour::

    store = SqliteStore("engine.db")
    executor = FunctionExecutor({"greet": greet})     # or your own Executor
    async with Engine(store, executor) as engine:
        instance = await engine.create("my-namespace", CreateRequest("greet", params={"name": "Ada"}))
        done = await engine.wait("my-namespace", instance.id)

with ``async def greet(params, step): return await step.do("hello", lambda: f"hi {params['name']}")``.
The journal handle (``step``) offers ``do``, ``sleep``, ``sleep_until``, ``wait_for_event``, and the
low-level ``begin_step``/``finish_attempt`` pair for executors whose callbacks run in a sandbox.
"""

from ._clock import Clock, ManualClock, SystemClock
from ._durations import parse_duration
from ._engine import Engine, Executor, RunContext
from ._errors import (
    EngineError,
    EngineValidationError,
    EventTimeoutError,
    InstanceExistsError,
    InstanceNotFoundError,
    InvalidTransitionError,
    NonDeterminismError,
    NonRetryableError,
    PayloadTooLargeError,
    RunAborted,
    StepFailedError,
    Suspend,
)
from ._functions import FunctionExecutor, WorkflowFunction
from ._journal import Journal, StepCached, StepDecision, StepFailure, StepRun
from ._model import (
    FINISHED,
    Complete,
    CreateRequest,
    EngineConfig,
    ErrorInfo,
    Failed,
    Instance,
    InstanceStatus,
    Outcome,
    Page,
    RestartFrom,
    RetryConfig,
    Status,
    StepConfig,
    Suspended,
    iso_ms,
)
from ._postgres import PostgresStore
from ._sqlite import SqliteStore
from ._store import EngineStore
from ._validation import validate_id

__all__ = [
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
    "Status",
    "StepCached",
    "StepConfig",
    "StepDecision",
    "StepFailedError",
    "StepFailure",
    "StepRun",
    "Suspend",
    "Suspended",
    "SystemClock",
    "WorkflowFunction",
    "iso_ms",
    "parse_duration",
    "validate_id",
]
