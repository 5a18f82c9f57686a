import sandbox


def test_public_exports_are_pinned() -> None:
    assert set(sandbox.__all__) == {
        "DEFAULT_LIMITS",
        "JSON",
        "Bundle",
        "HostBridge",
        "HostCallError",
        "InvokeResult",
        "LimitExceededError",
        "LimitName",
        "Limits",
        "LoadError",
        "LoopBridge",
        "Sandbox",
        "SandboxBackend",
        "SandboxClosedError",
        "SandboxCrashError",
        "SandboxError",
        "TENANT_BACKENDS",
        "TenantError",
        "create_backend",
    }


def test_limits_must_be_finite_and_positive() -> None:
    import math

    import pytest

    for bad in (0, -1, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="finite positive"):
            sandbox.Limits(cpu_seconds=bad)
    assert sandbox.Limits().override(host_calls=5).host_calls == 5


def test_unknown_backend_is_a_clear_error() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown sandbox backend 'nope'; choose one of"):
        sandbox.create_backend("nope")
