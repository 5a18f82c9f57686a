"""``/metrics`` in the Prometheus text format, and instance counts by status.

Counters come from the platform (``Platform.metrics()``, the executor's dispatch histogram) and
instance counts from the engine's store, so they work with every engine store.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from .._platform import Platform

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STATUSES = ("queued", "running", "paused", "errored", "terminated", "complete", "waiting", "waitingForPause")


class HttpMetrics:
    """Request counts and a latency histogram per (method, route, status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], list[float]] = defaultdict(
            lambda: [0.0] * (len(BUCKETS) + 2)
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            cells = self._counts[(method, route, status)]
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    cells[index] += 1
            cells[-2] += 1  # count (the +Inf bucket)
            cells[-1] += seconds

    def render(self) -> list[str]:
        lines = [
            "# HELP tenantflow_http_request_duration_seconds API request latency.",
            "# TYPE tenantflow_http_request_duration_seconds histogram",
        ]
        with self._lock:
            items = sorted(self._counts.items())
            for (method, route, status), cells in items:
                labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
                for index, bound in enumerate(BUCKETS):
                    lines.append(
                        f'tenantflow_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cells[index]:g}'
                    )
                lines.append(
                    f'tenantflow_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cells[-2]:g}'
                )
                lines.append(f"tenantflow_http_request_duration_seconds_count{{{labels}}} {cells[-2]:g}")
                lines.append(f"tenantflow_http_request_duration_seconds_sum{{{labels}}} {cells[-1]:.6f}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def instance_counts(
    platform: Platform, tenant: str | None = None, workflow: str | None = None
) -> dict[str, int]:
    """Instances by status (for an already authorized tenant and workflow, or all of them)."""
    return await platform.engine.count(tenant, workflow=workflow)


async def render(platform: Platform, http: HttpMetrics) -> str:
    data = platform.metrics()
    cache = data["cache"]
    executor = platform.executor
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float, labels: str = "") -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value:g}")

    dispatch = executor.dispatch
    lines.append(
        "# HELP tenantflow_dispatch_duration_seconds Engine wake-up to sandbox result, cold loads included."
    )
    lines.append("# TYPE tenantflow_dispatch_duration_seconds histogram")
    for bound, count in dispatch.cumulative():
        lines.append(f'tenantflow_dispatch_duration_seconds_bucket{{le="{bound}"}} {count}')
    lines.append(f"tenantflow_dispatch_duration_seconds_sum {dispatch.total:g}")
    lines.append(f"tenantflow_dispatch_duration_seconds_count {dispatch.count}")
    metric(
        "tenantflow_runs_started_total", "counter", "Instance runs the engine started.", data["runs_started"]
    )
    metric("tenantflow_cold_starts_total", "counter", "Sandboxes loaded (cold starts).", cache["cold_starts"])
    metric("tenantflow_cold_start_seconds_total", "counter", "Time spent loading sandboxes.",
           cache["cold_start_seconds"])  # fmt: skip
    metric("tenantflow_cache_hits_total", "counter", "Invocations served by a warm sandbox.", cache["hits"])
    metric("tenantflow_cache_misses_total", "counter", "Invocations that loaded a sandbox.", cache["misses"])
    metric("tenantflow_cache_evictions_total", "counter", "Warm cache entries evicted.", cache["evictions"])
    metric("tenantflow_cache_entries", "gauge", "Warm cache entries (tenant versions).", cache["entries"])
    metric("tenantflow_cache_sandboxes", "gauge", "Sandboxes held by the warm cache.", cache["sandboxes"])
    metric(
        "tenantflow_steps_committed_total", "counter", "Step results committed by this process.",
        data["steps_committed"],
    )  # fmt: skip
    affinity = data["affinity"]
    metric("tenantflow_claims_total", "counter", "Instances this process's engine claimed to run.",
           affinity["claims"])  # fmt: skip
    metric("tenantflow_claims_preferred_total", "counter",
           "Claims of instances whose tenant version this worker held warm (affinity).",
           affinity["claims_preferred"])  # fmt: skip
    if cache["hit_rate"] is not None:
        metric(
            "tenantflow_warm_hit_ratio",
            "gauge",
            "Cache hits / (hits + misses) since start.",
            cache["hit_rate"],
        )
    if affinity["preferred_rate"] is not None:
        metric("tenantflow_claims_preferred_ratio", "gauge", "claims_preferred / claims since start.",
               affinity["preferred_rate"])  # fmt: skip
    disk = data.get("artifact_cache")
    if disk is not None:
        for field, help_text in (("hits", "Artifacts read from the local disk cache."),
                                 ("misses", "Artifacts fetched from the database."),
                                 ("corrupt", "Local cache files that failed verification and were refetched.")):  # fmt: skip
            metric(f"tenantflow_artifact_cache_{field}_total", "counter", help_text, disk[field])
        metric(
            "tenantflow_artifact_cache_bytes", "gauge", "Bytes in the local artifact cache.", disk["bytes"]
        )
    counts = await instance_counts(platform)
    lines.append("# HELP tenantflow_instances Instances by status.")
    lines.append("# TYPE tenantflow_instances gauge")
    for status in _STATUSES:
        lines.append(f'tenantflow_instances{{status="{status}"}} {counts.get(status, 0)}')
    lines.extend(http.render())
    return "\n".join(lines) + "\n"
