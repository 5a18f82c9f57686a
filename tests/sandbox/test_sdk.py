"""The tenant SDK as tenant code sees it, identical in the wasm and the in-process backends."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import LimitExceededError, LoadError, TenantError

from .helpers import START_MS, FakeJournal, bundle, invoke, run_body


async def test_call_form_runs_the_callback_once_and_memoizes(load: Any) -> None:
    sb = await load(
        run_body(
            """
            a = step.do("first", lambda: {"n": event["payload"] * 2})
            b = step.do("second", lambda: [a["n"], "x", 1.5, True, None])
            return {"a": a, "b": b}
            """
        )
    )
    journal = FakeJournal()
    first = await invoke(sb, journal, 21)
    assert first.output == {"a": {"n": 42}, "b": [42, "x", 1.5, True, None]}
    assert [name for name, _ in journal.calls] == ["step.do", "step.commit", "step.do", "step.commit"]
    # A replay answers from the journal: the callbacks do not run again.
    journal.calls.clear()
    again = await invoke(sb, journal, 21)
    assert again.output == first.output
    assert [name for name, _ in journal.calls] == ["step.do", "step.do"]
    assert again.host_calls == 2


async def test_decorator_forms_and_step_context(load: Any) -> None:
    sb = await load(
        run_body(
            """
            @step.do("named", retries={"limit": 2, "delay": 10, "backoff": "constant"}, timeout=5000)
            def named(ctx):
                return ctx

            @step.do
            def bare():
                return "bare"

            @step.do()
            def empty_call(ctx):
                return ctx["step"]

            return {"named": named(), "bare": bare(), "empty": empty_call(), "again": empty_call()}
            """
        )
    )
    out = (await invoke(sb, FakeJournal())).output
    assert out["named"] == {
        "step": {"name": "named", "count": 1},
        "attempt": 1,
        "config": {"retries": {"limit": 2, "delay": 10, "backoff": "constant"}, "timeout": 5000},
    }
    assert out["bare"] == "bare"
    assert out["empty"] == {"name": "empty_call", "count": 1}
    assert out["again"] == {"name": "empty_call", "count": 2}


async def test_retries_then_success_and_non_retryable(load: Any) -> None:
    sb = await load(
        run_body(
            """
            from tenantflow import NonRetryableError

            def flaky(ctx):
                if ctx["attempt"] < 3:
                    raise ValueError(f"attempt {ctx['attempt']}")
                return ctx["attempt"]

            ok = step.do("flaky", flaky, retries={"limit": 5})

            def fatal():
                raise NonRetryableError("card declined")

            try:
                step.do("fatal", fatal, retries={"limit": 5})
            except NonRetryableError as exc:
                caught = str(exc)
            return [ok, caught]
            """
        )
    )
    journal = FakeJournal()
    assert (await invoke(sb, journal)).output == [3, "card declined"]
    fails = [args for name, args in journal.calls if name == "step.fail"]
    assert [f["error"] for f in fails[:2]] == [
        {"name": "ValueError", "message": "attempt 1"},
        {"name": "ValueError", "message": "attempt 2"},
    ]
    assert fails[-1]["non_retryable"] is True


async def test_exhausted_retries_raise_the_steps_error(load: Any) -> None:
    sb = await load(run_body("step.do('boom', lambda: 1 / 0, retries={'limit': 1})"))
    with pytest.raises(TenantError) as info:
        await invoke(sb, FakeJournal())
    assert info.value.type_name == "ZeroDivisionError"
    assert 'File "main.py", line 2, in run' in info.value.traceback


async def test_multi_file_bundles_import_each_other(load: Any) -> None:
    sb = await load(
        bundle(
            """
            import helpers
            from pkg import util
            from pkg.util import double

            def run(event, step):
                return [helpers.greet(event["payload"]), util.double(2), double(3), helpers.NAME]
            """,
            helpers="NAME = 'helpers'\ndef greet(who):\n    return f'hello {who}'\n",
            files={
                "pkg/__init__.py": "",
                "pkg/util.py": "from . import consts\ndef double(x):\n    return x * consts.TWO\n",
                "pkg/consts.py": "TWO = 2\n",
                "README.md": "data files are not modules",
            },
        )
    )
    assert (await invoke(sb, FakeJournal(), "ada")).output == ["hello ada", 4, 6, "helpers"]


async def test_env_shows_only_the_granted_bindings(load: Any) -> None:
    sb = await load(
        run_body(
            """
            from tenantflow import BindingNotGranted, env
            try:
                env.db.execute("SELECT 1")
                refused = "no"
            except BindingNotGranted as exc:
                refused = str(exc)
            return [hasattr(env, "kv"), hasattr(env, "db"), refused, env.kv.get("a")]
            """
        )
    )
    journal = FakeJournal(bindings={"kv.get": lambda **kw: "value"})
    journal.granted = {"kv"}
    out = (await invoke(sb, journal)).output
    assert out[:2] == [True, False]
    assert out[2].startswith("binding 'db' is not granted to this tenant") and "granted: kv" in out[2]
    assert out[3] == "value"
    assert [name for name, _ in journal.calls].count("env.bindings") == 1  # asked once per invocation


async def test_env_bindings_are_host_calls_checked_on_the_host(load: Any) -> None:
    sb = await load(
        run_body(
            """
            from tenantflow import env
            value = env.kv.get(key="a")
            try:
                env.secrets.get(name="db")
            except PermissionError as exc:
                refused = str(exc)
            positional = env.kv.get("k2", default=0)
            called = env.fetch("https://example.test", method="POST")
            return [value, refused, positional, called]
            """
        )
    )
    journal = FakeJournal(
        bindings={
            "kv.get": lambda **kw: {"got": kw},
            "fetch.": lambda **kw: {"fetched": kw},
        }
    )
    out = (await invoke(sb, journal)).output
    assert out[0] == {"got": {"key": "a"}}
    assert "not granted" in out[1]
    assert out[2] == {"got": {"args": ["k2"], "kwargs": {"default": 0}}}
    assert out[3] == {"fetched": {"args": ["https://example.test"], "kwargs": {"method": "POST"}}}
    assert [name for name, _ in journal.calls if name.startswith("env.") and name != "env.bindings"] == [
        "env.kv.get",
        "env.secrets.get",
        "env.kv.get",
        "env.fetch",
    ]


async def test_log_and_print_are_captured(load: Any) -> None:
    sb = await load(
        run_body("import tenantflow\ntenantflow.log('hello', level='warn')\nprint('out', 1)\nreturn 0")
    )
    journal = FakeJournal()
    result = await invoke(sb, journal)
    assert result.stdout == "out 1\n"
    assert journal.logs == [{"level": "warn", "message": "hello"}]


async def test_output_is_truncated_with_a_marker(load: Any) -> None:
    sb = await load(run_body("for i in range(1000):\n    print('x' * 99)\nreturn 'done'"), output_bytes=1000)
    result = await invoke(sb, FakeJournal())
    assert result.output == "done"
    assert result.output_truncated
    assert result.stdout.startswith("x" * 99)
    assert "output truncated at 1000 bytes" in result.stdout
    assert len(result.stdout) < 1100


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("type('D', (dict,), {})(a=1)", "dict subclass"),
        ("(i for i in range(3))", "generator"),
        ("lambda: 1", "function"),
        ("(1, 2)", "tuple"),
        ("{1: 'a'}", "keys must be str"),
        ("float('nan')", "not a JSON number"),
        ("{1, 2}", "set"),
        ("b'bytes'", "bytes"),
    ],
)
async def test_step_results_must_be_exact_json(load: Any, expr: str, message: str) -> None:
    sb = await load(run_body(f"return step.do('bad', lambda: {expr})"))
    journal = FakeJournal()
    with pytest.raises(TenantError) as info:
        await invoke(sb, journal)
    assert message in info.value.message
    assert not [name for name, _ in journal.calls if name == "step.commit"]


async def test_run_output_must_be_exact_json(load: Any) -> None:
    sb = await load(run_body("class S(str):\n    pass\nreturn {'a': [S('x')]}"))
    with pytest.raises(TenantError, match="str subclass"):
        await invoke(sb, FakeJournal())


async def test_oversized_results_hit_the_result_limit(load: Any) -> None:
    sb = await load(run_body("return step.do('big', lambda: 'x' * 5000)"), result_bytes=4096)
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal())
    assert info.value.limit == "result_size"
    sb2 = await load(run_body("return ['y' * 100] * 100"), result_bytes=4096)
    with pytest.raises(LimitExceededError, match="result_size"):
        await invoke(sb2, FakeJournal())


async def test_sleep_suspends_and_the_replay_continues(load: Any) -> None:
    sb = await load(
        run_body(
            """
            a = step.do("before", lambda: 1)
            try:
                step.sleep("nap", "1 minute")
            except Exception:
                return "swallowed"
            return [a, step.do("after", lambda: 2)]
            """
        )
    )
    journal = FakeJournal()
    first = await invoke(sb, journal)
    assert first.suspended and first.output is None
    second = await invoke(sb, journal)
    assert second.output == [1, 2] and not second.suspended


async def test_the_host_is_authoritative_about_suspension(load: Any) -> None:
    sb = await load(
        run_body(
            """
            try:
                step.sleep("nap", 1000)
            except BaseException:
                pass
            return step.do("after", lambda: "ran anyway")
            """
        )
    )
    journal = FakeJournal()
    result = await invoke(sb, journal)
    assert result.suspended and result.output is None
    assert not [name for name, _ in journal.calls if name == "step.commit"]


async def test_wait_for_event_delivers_or_times_out(load: Any) -> None:
    sb = await load(
        run_body(
            """
            got = step.wait_for_event("approval", "approved", timeout="1 hour")
            try:
                step.wait_for_event("never", type="other", timeout=0)
            except TimeoutError as exc:
                timed_out = str(exc)
            return [got["payload"], got["type"], timed_out]
            """
        )
    )
    journal = FakeJournal()
    assert (await invoke(sb, journal)).suspended
    journal.events["approved"] = [{"by": "ops"}]
    assert (await invoke(sb, journal)).output == [{"by": "ops"}, "approved", "no event"]


async def test_steps_cannot_nest_inside_step_callbacks(load: Any) -> None:
    sb = await load(run_body("return step.do('outer', lambda: step.do('inner', lambda: 1))"))
    with pytest.raises(TenantError, match="inside a step callback"):
        await invoke(sb, FakeJournal())


async def test_tenant_errors_carry_type_message_and_tenant_frames_only(load: Any) -> None:
    sb = await load(
        bundle(
            "import helpers\ndef run(event, step):\n    return helpers.fail()\n",
            helpers="class PaymentDeclined(Exception):\n    pass\ndef fail():\n    raise PaymentDeclined('no funds')\n",
        )
    )
    with pytest.raises(TenantError) as info:
        await invoke(sb, FakeJournal())
    error = info.value
    assert (error.type_name, error.message) == ("PaymentDeclined", "no funds")
    assert 'File "main.py", line 3, in run' in error.traceback
    assert 'File "helpers.py", line 4, in fail' in error.traceback
    for leak in ("/work", "site-packages", "_tenantflow", "sandbox/", ".venv"):
        assert leak not in error.traceback


@pytest.mark.parametrize(
    ("files", "file", "line", "message"),
    [
        ({"main.py": b"def run(event, step):\n    return (\n"}, "main.py", 2, "SyntaxError"),
        ({"main.py": b"x = 1\nraise ValueError('at import')\n"}, "main.py", 2, "ValueError: at import"),
        ({"main.py": b"import helpers\n", "helpers.py": b"1/0\n"}, "helpers.py", 1, "ZeroDivisionError"),
        ({"main.py": b"import not_there\n"}, "main.py", 1, "not_there"),
        ({"main.py": b"def go(event, step):\n    pass\n"}, "main.py", None, "must define run(event, step)"),
        ({"other.py": b"x = 1\n"}, "main.py", None, "entry module"),
        ({"main.py": b"\xff\xfe"}, "main.py", None, "UTF-8"),
    ],
)
async def test_load_errors_point_at_the_tenants_file_and_line(
    backend: Any, files: dict[str, bytes], file: str, line: int | None, message: str
) -> None:
    from sandbox import Bundle, Limits

    with pytest.raises(LoadError) as info:
        await backend.load(Bundle("sha256:bad", files), limits=Limits())
    assert info.value.file == file
    assert info.value.line == line
    assert message in str(info.value)


async def test_prepare_then_load_with_the_derived_form(backend: Any) -> None:
    from sandbox import Limits

    b = run_body("return 'prepared'")
    derived = await backend.prepare(b)
    assert isinstance(derived, bytes)
    sb = await backend.load(b, limits=Limits(), derived=derived)
    assert (await invoke(sb, FakeJournal())).output == "prepared"
    # A derived form from another backend version is ignored (recompiled), never trusted.
    stale = await backend.load(b, limits=Limits(), derived=b"something else")
    assert (await invoke(stale, FakeJournal())).output == "prepared"
    await sb.aclose()
    await stale.aclose()


async def test_host_call_limit(load: Any) -> None:
    sb = await load(
        run_body("for i in range(100):\n    step.do(f's{i}', lambda: i)\nreturn 'done'"), host_calls=50
    )
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal())
    assert info.value.limit == "host_calls"


async def test_host_call_limit_cannot_be_swallowed(load: Any) -> None:
    sb = await load(
        run_body(
            """
            for i in range(100):
                try:
                    step.do(f"s{i}", lambda: i)
                except BaseException:
                    pass
            return "done"
            """
        ),
        host_calls=10,
    )
    with pytest.raises(LimitExceededError, match="host_calls"):
        await invoke(sb, FakeJournal())


async def test_replay_is_deterministic_in_the_body(load: Any) -> None:
    """time.time(), random.random(), uuid4 and set order read in the body survive a sleep-and-replay."""
    sb = await load(
        run_body(
            """
            import random, time, uuid

            def observe():
                return {
                    "time": time.time(),
                    "random": random.random(),
                    "uuid": str(uuid.uuid4()),
                    "set": list({"alpha", "beta", "gamma", "delta", "epsilon"}),
                }

            start = observe()
            first = step.do("first", lambda: "done")
            after_step = observe()
            recorded = step.do("record", lambda: {"start": start, "after_step": after_step})
            inside = step.do("inside", lambda: time.time())
            step.sleep("nap", 1000)
            return {"recorded": recorded, "replayed": {"start": start, "after_step": after_step},
                    "inside": inside}
            """
        )
    )
    journal = FakeJournal()
    assert (await invoke(sb, journal)).suspended
    out = (await invoke(sb, journal)).output
    assert out["recorded"] == out["replayed"]
    start, after = out["replayed"]["start"], out["replayed"]["after_step"]
    assert start["time"] == START_MS / 1000  # the clock starts at the event timestamp
    assert after["time"] == journal.times[("first", 1)] / 1000  # and advances at step boundaries
    assert start["random"] != after["random"]  # seeded per journal position
    assert out["inside"] > 1.7e9 and out["inside"] != after["time"]  # real inside callbacks


async def test_other_instances_get_other_random_sequences(load: Any) -> None:
    sb = await load(run_body("import random\nreturn random.random()"))
    journal = FakeJournal()
    a = (await sb.invoke(journal.event(instance="wf-a"), journal)).output
    b = (await sb.invoke(journal.event(instance="wf-b"), journal)).output
    again = (await sb.invoke(journal.event(instance="wf-a"), journal)).output
    assert a == again and a != b


async def test_sandbox_is_reusable_and_aclose_is_idempotent(load: Any) -> None:
    from sandbox import SandboxClosedError

    sb = await load(run_body("return event['payload']"))
    for i in range(5):
        assert (await invoke(sb, FakeJournal(), i)).output == i
    assert sb.alive
    await sb.aclose()
    await sb.aclose()
    assert not sb.alive
    with pytest.raises(SandboxClosedError):
        await invoke(sb, FakeJournal())


async def test_a_crashing_bridge_is_a_sandbox_crash_not_a_tenant_error(load: Any) -> None:
    from sandbox import SandboxCrashError

    class Broken(FakeJournal):
        def call(self, name: str, args: Any) -> Any:
            raise RuntimeError("host bug with /secret/host/path")

    sb = await load(run_body("try:\n    step.do('a', lambda: 1)\nexcept BaseException:\n    pass\nreturn 1"))
    with pytest.raises(SandboxCrashError) as info:
        await invoke(sb, Broken())
    assert "/secret" not in str(info.value)


async def test_only_a_required_parameter_receives_the_step_context(load: Any) -> None:
    sb = await load(
        run_body(
            """
            out = [step.do(f"loop{i}", lambda i=i: i) for i in range(2)]
            out.append(step.do("ctx", lambda ctx: ctx["step"]["name"]))
            out.append(step.do("star", lambda *a: len(a)))
            return out
            """
        )
    )
    assert (await invoke(sb, FakeJournal())).output == [0, 1, "ctx", 1]


async def test_sandboxes_are_async_context_managers(backend: Any) -> None:
    from sandbox import Limits

    async with await backend.load(run_body("return 'ctx'"), limits=Limits()) as sb:
        assert (await invoke(sb, FakeJournal())).output == "ctx"
    assert not sb.alive


async def test_an_oversized_host_call_is_a_limit_and_the_sandbox_survives(load: Any) -> None:
    sb = await load(
        run_body("if event['payload'] == 'big':\n    step.do('x' * 3_000_000, lambda: 1)\nreturn 'ok'")
    )
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal(), "big")
    assert info.value.limit == "result_size"
    if not sb.alive:  # a backend may discard the sandbox after a limit; a fresh one must work
        sb = await load(run_body("return 'ok'"))
    assert (await invoke(sb, FakeJournal(), "small")).output == "ok"
