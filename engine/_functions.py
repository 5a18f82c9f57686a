"""An executor that runs plain in-process Python functions as workflows (tests, benchmarks, embedding)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._engine import RunContext
from ._journal import Journal
from ._model import Complete, ErrorInfo, Failed, Outcome

WorkflowFunction = Callable[[Any, Journal], Awaitable[Any]]
"""``async def workflow(params, step) -> output``; ``step`` is the run's ``Journal``."""


class FunctionExecutor:
    """Maps workflow names to ``async def workflow(params, step)`` functions."""

    def __init__(self, workflows: Mapping[str, WorkflowFunction] | None = None) -> None:
        self.workflows: dict[str, WorkflowFunction] = dict(workflows or {})

    def register(self, name: str, fn: WorkflowFunction) -> WorkflowFunction:
        self.workflows[name] = fn
        return fn

    async def execute(self, run: RunContext) -> Outcome:
        fn = self.workflows.get(run.instance.workflow)
        if fn is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            return Failed(
                ErrorInfo("UnknownWorkflowError", f"no workflow {run.instance.workflow!r}; known: {known}")
            )
        return Complete(await fn(run.instance.params, run.journal))
