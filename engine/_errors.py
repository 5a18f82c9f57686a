"""Errors of the durable execution engine.

    EngineError                         root of everything the engine raises to its callers
    ├── EngineValidationError           bad input: ids, names, durations, sizes, batch size
    │   └── PayloadTooLargeError        params, step result, event payload or output over its cap
    ├── InstanceNotFoundError           no instance with that id in that namespace
    ├── InstanceExistsError             an instance id is already taken in that namespace
    ├── InvalidTransitionError          pause/resume/terminate/send_event not possible in this status
    └── NonDeterminismError             a replay reached a different step than the journal holds

Raised *into* workflow code (ordinary exceptions a workflow may catch):

    NonRetryableError                   raise it in a step to stop retries at once
    StepFailedError                     a step exhausted its retries (carries the last error)
    EventTimeoutError                   wait_for_event timed out

Control-flow signals (``BaseException``, so ``except Exception`` in workflow code never swallows them):

    Suspend                             the run must stop here: a timer, event or retry delay is pending
    RunAborted                          the instance was terminated, restarted, paused or deleted mid-run
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises to its callers."""


class EngineValidationError(EngineError, ValueError):
    """The input is invalid; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PayloadTooLargeError(EngineValidationError):
    """A payload exceeds its size cap."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(field, f"is {size} bytes as JSON, over the limit of {limit} bytes; send less data")
        self.size = size
        self.limit = limit


class InstanceNotFoundError(EngineError, LookupError):
    """No instance with that id exists in that namespace."""

    def __init__(self, namespace: str, instance_id: str) -> None:
        super().__init__(f"instance {instance_id!r} not found")
        self.namespace = namespace
        self.instance_id = instance_id


class InstanceExistsError(EngineError):
    """The instance id is already used in that namespace."""

    def __init__(self, namespace: str, instance_id: str) -> None:
        super().__init__(f"instance {instance_id!r} already exists; choose another id or omit it for a UUID")
        self.namespace = namespace
        self.instance_id = instance_id


class InvalidTransitionError(EngineError):
    """The requested lifecycle operation is not possible in the instance's current status."""

    def __init__(self, instance_id: str, operation: str, status: str) -> None:
        super().__init__(f"cannot {operation} instance {instance_id!r}: it is {status}")
        self.instance_id = instance_id
        self.operation = operation
        self.status = status


class NonDeterminismError(EngineError):
    """The workflow reached a different step on replay than the one recorded at that position."""

    def __init__(self, instance_id: str, position: int, recorded: str, attempted: str) -> None:
        super().__init__(
            f"non-deterministic workflow in instance {instance_id!r}: step #{position + 1} was recorded as "
            f"{recorded} but this run reached {attempted}. A workflow must take the same steps in the same "
            "order on every replay: move nondeterministic code (time, randomness, I/O) into a step, "
            "or restart the instance."
        )
        self.instance_id = instance_id
        self.position = position
        self.recorded = recorded
        self.attempted = attempted


class NonRetryableError(Exception):
    """Raise inside a step to fail it at once, without further retries."""


class StepFailedError(Exception):
    """A step failed for good (retries exhausted or NonRetryableError). A workflow may catch it."""

    def __init__(self, step: str, error_name: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.error_name = error_name
        self.message = message


class EventTimeoutError(Exception):
    """``wait_for_event`` timed out before an event of that type arrived. A workflow may catch it."""

    def __init__(self, step: str, event_type: str) -> None:
        super().__init__(f"step {step!r} timed out waiting for an event of type {event_type!r}")
        self.step = step
        self.event_type = event_type


class Suspend(BaseException):
    """The run must stop: the engine will wake the instance later. Never catch it in workflow code."""


class RunAborted(BaseException):
    """The instance was terminated, restarted, paused or deleted while this run was in flight."""
