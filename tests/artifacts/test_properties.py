"""Property tests: valid bundles round-trip exactly; arbitrary bytes only ever fail validation."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifacts import BundleValidationError, SqliteArtifactStore, UploadResult
from tests.artifacts.helpers import MAIN, make_zip, manifest, tgz_of

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, bytes]:
    out = {
        "tenantflow.toml": manifest(draw(st.sampled_from(["orders", "a", "x_1", "Flow-2"]))),
        "main.py": MAIN,
    }
    taken = {p.casefold() for p in out}
    dirs: set[str] = set()
    for _ in range(draw(st.integers(0, 8))):
        parts = draw(st.lists(NAME, min_size=1, max_size=3))
        suffix = draw(st.sampled_from([".py", ".txt", ".md", ".json"]))
        path = "/".join(parts) + suffix
        parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if path.casefold() in taken or path in dirs or parents & {p.casefold() for p in taken}:
            continue
        if suffix == ".py":
            data = f"VALUE = {draw(TEXT)!r}\n".encode()
        elif suffix == ".json":
            data = json.dumps(draw(st.dictionaries(NAME, st.integers() | TEXT, max_size=3))).encode()
        else:
            data = draw(TEXT).encode()
        out[path] = data
        taken.add(path.casefold())
        dirs |= parents
    return out


@contextmanager
def open_store() -> Iterator[tuple[asyncio.Runner, SqliteArtifactStore]]:
    with tempfile.TemporaryDirectory() as tmp, asyncio.Runner() as runner:
        store = runner.run(SqliteArtifactStore.open(Path(tmp) / "a.db"))
        try:
            yield runner, store
        finally:
            runner.run(store.aclose())


def test_valid_bundles_round_trip() -> None:
    with open_store() as (runner, store):

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(content=bundles(), fmt=st.sampled_from(["b.zip", "b.tar.gz"]))
        def check(content: dict[str, bytes], fmt: str) -> None:
            archive = make_zip(content) if fmt == "b.zip" else tgz_of(content)
            result: UploadResult = runner.run(store.upload("ns", archive, filename=fmt, uploader="prop"))
            version = result.version
            bundle = runner.run(store.read_bundle(version.digest))
            assert dict(bundle.files) == content
            assert version.file_count == len(content)
            assert version.size == sum(map(len, content.values()))
            # the other format of the same files is the same version
            other = tgz_of(content) if fmt == "b.zip" else make_zip(content)
            again = runner.run(
                store.upload("ns", other, filename="c.tgz" if fmt == "b.zip" else "c.zip", uploader="prop")
            )
            assert not again.created and again.version.digest == version.digest

        check()


def test_arbitrary_and_mutated_uploads_only_fail_validation() -> None:
    valid_zip = make_zip({"tenantflow.toml": manifest(), "main.py": MAIN, "lib.py": b"X = 1\n" * 20})
    valid_tgz = tgz_of({"tenantflow.toml": manifest(), "main.py": MAIN, "lib.py": b"X = 1\n" * 20})

    with open_store() as (runner, store):

        @settings(max_examples=150, deadline=None)
        @given(
            base=st.sampled_from(
                [("b.zip", valid_zip), ("b.tgz", valid_tgz), ("b.py", MAIN), ("b.zip", b"")]
            ),
            flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
            cut=st.none() | st.integers(0, 10_000),
            noise=st.binary(max_size=300),
            use_noise=st.booleans(),
        )
        def check(
            base: tuple[str, bytes],
            flips: list[tuple[int, int]],
            cut: int | None,
            noise: bytes,
            use_noise: bool,
        ) -> None:
            filename, data = base
            raw = bytearray(noise if use_noise else data)
            for pos, mask in flips:
                if raw:
                    raw[pos % len(raw)] ^= mask
            if cut is not None:
                del raw[cut:]
            try:
                result = runner.run(store.upload("ns", bytes(raw), filename=filename, uploader="fuzz"))
            except BundleValidationError as error:
                assert error.problems and all(p.message for p in error.problems)
            else:
                bundle = runner.run(store.read_bundle(result.version.digest))
                assert bundle.entry in bundle.files

        check()
