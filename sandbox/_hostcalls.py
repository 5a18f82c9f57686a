"""The host-call vocabulary between the tenant SDK (inside the guest) and the host.

The guest SDK turns every ``step.*`` and ``env.*`` operation into one ``HostBridge.call(name, args)``.
All arguments and results are JSON. The sandbox itself only transports calls, counts them against
``Limits.host_calls`` and caps their size; the dispatcher gives them meaning. Every check
(grants, tenant identity, quotas) lives on the host side: a guest can call any name with any args.

Step operations (``time`` in every answer is the journal's boundary time in epoch milliseconds; the
SDK's deterministic clock reads it outside step callbacks):

``step.do``           ``{"name", "config": {"retries": {"limit", "delay", "backoff"}, "timeout"}}``
    -> ``{"action": "cached", "result": R, "time": T}``     memoized: return R, do not run the callback
    -> ``{"action": "run", "count": n, "attempt": a, "config": C, "time": T}``  run the callback now
    -> ``{"action": "suspend"}``                             a retry delay is pending: stop the run
``step.commit``       ``{"name", "count", "result": R}`` -> ``{"time": T}``  (durable before it returns)
``step.fail``         ``{"name", "count", "error": {"name", "message"}, "non_retryable": bool}``
    -> ``{"action": "retry", "attempt": a, "time": T}``       run the callback again now
    -> ``{"action": "failed", "error": {"name", "message"}, "time": T}``  raise from ``step.do``
    -> ``{"action": "suspend"}``
``step.sleep``        ``{"name", "duration"}``  /  ``step.sleep_until`` ``{"name", "until"}`` (epoch ms or ISO)
    -> ``{"action": "continue", "time": T}`` | ``{"action": "suspend"}``
``step.wait_for_event`` ``{"name", "type", "timeout"}``
    -> ``{"action": "event", "event": {"payload", "timestamp", "type"}, "time": T}``
    -> ``{"action": "timeout", "error": {"name", "message"}, "time": T}``  raise a catchable error
    -> ``{"action": "suspend"}``

Suspension: when an answer says ``suspend`` the SDK raises an internal signal that is not an
``Exception`` subclass, so ordinary ``except Exception`` does not swallow it. The host is
authoritative anyway: once it has answered ``suspend`` it answers ``suspend`` to every later step
call of that invocation and records the invocation as suspended whatever the guest returns.

Bindings and logs: ``env.bindings`` (no args) answers the sorted names of the granted bindings, so
``env`` can show only those. ``env.<binding>.<method>`` with the method's keyword arguments as a JSON object
(e.g. ``env.kv.get`` ``{"key": "a"}``), or ``{"args": [...], "kwargs": {...}}`` when the tenant
passes positional arguments; a callable binding (``env.fetch(url)``) is the host call
``env.<binding>`` with the same argument shapes; and ``log`` ``{"level", "message"}``. An ungranted binding is
refused by the host with a ``HostCallError`` naming the binding and the policy that grants it.
Errors from the host arrive in the guest as an exception whose class name is the error's
``type_name``.
"""

from __future__ import annotations

from typing import Final

STEP_DO: Final = "step.do"
STEP_COMMIT: Final = "step.commit"
STEP_FAIL: Final = "step.fail"
STEP_SLEEP: Final = "step.sleep"
STEP_SLEEP_UNTIL: Final = "step.sleep_until"
STEP_WAIT_FOR_EVENT: Final = "step.wait_for_event"
LOG: Final = "log"
ENV_PREFIX: Final = "env."
ENV_BINDINGS: Final = "env.bindings"

STEP_CALLS: Final = frozenset(
    {STEP_DO, STEP_COMMIT, STEP_FAIL, STEP_SLEEP, STEP_SLEEP_UNTIL, STEP_WAIT_FOR_EVENT}
)
