"""Every read verifies digests: corrupted content is reported and never returned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from artifacts import ArtifactStore, CorruptBlobError, SqliteArtifactStore, StoreConfig, VersionNotFoundError
from tests.artifacts.conftest import RawSql
from tests.artifacts.helpers import NS, files, make_zip

PAYLOAD = b"MARKER = 'tenantflow-corruption-test-0123456789'\n"


async def test_flipped_byte_in_the_sqlite_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    data = make_zip(files(lib_py=PAYLOAD))
    async with await SqliteArtifactStore.open(path) as store:
        digest = (await store.upload(NS, data, filename="b.zip", uploader="u")).version.digest
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0

    raw = bytearray(path.read_bytes())
    assert raw.count(PAYLOAD) == 1  # stored once, uncompressed, in the main database file
    raw[raw.index(PAYLOAD) + 10] ^= 0x01  # bit rot: 'tenantflow' -> 'tenantflnw'
    path.write_bytes(bytes(raw))

    async with await SqliteArtifactStore.open(path) as store:
        version = await store.resolve(NS, "orders", "latest")  # metadata is intact
        assert version.digest == digest
        with pytest.raises(CorruptBlobError) as info:
            await store.read_bundle(digest)
        error = info.value
        assert (error.digest, error.path) == (digest, "lib.py")
        assert error.expected != error.actual
        assert f"stored content of 'lib.py' in {digest} is corrupt" in str(error)
        assert "tenantflnw" not in str(error)  # the content itself is never handed out

        # Uploading the same bundle again rewrites the damaged blob.
        again = await store.upload(NS, data, filename="b.zip", uploader="u")
        assert not again.created
        assert (await store.read_bundle(digest)).files["lib.py"] == PAYLOAD


async def test_tampered_blob_row_and_file_list(store: ArtifactStore, raw_sql: RawSql) -> None:
    data = make_zip(files(lib_py=PAYLOAD))
    digest = (await store.upload(NS, data, filename="b.zip", uploader="u")).version.digest
    await raw_sql("UPDATE blobs SET data = ? WHERE data = ?", (b"import os\n", PAYLOAD))
    with pytest.raises(CorruptBlobError, match=r"'lib\.py'"):
        await store.read_bundle(digest)
    await raw_sql("UPDATE blobs SET data = ? WHERE data = ?", (PAYLOAD, b"import os\n"))
    await raw_sql("UPDATE bundle_files SET path = 'evil.py' WHERE path = 'lib.py'", ())
    with pytest.raises(CorruptBlobError, match=r"'\(file list\)'"):
        await store.read_bundle(digest)
    await raw_sql("UPDATE bundle_files SET path = 'lib.py' WHERE path = 'evil.py'", ())
    await raw_sql("UPDATE blobs SET data = ? WHERE data = ?", (b"import os\n", PAYLOAD))
    # a re-upload of the same content rewrites the damaged blob
    assert not (await store.upload(NS, data, filename="b.zip", uploader="u")).created
    assert (await store.read_bundle(digest)).files["lib.py"] == PAYLOAD


async def test_derived_forms_are_keyed_verified_and_never_uploaded(
    store: ArtifactStore, raw_sql: RawSql
) -> None:
    digest = (await store.upload(NS, make_zip(files()), filename="b.zip", uploader="u")).version.digest
    assert await store.get_derived(digest, "wasm", "1") is None
    await store.put_derived(digest, "wasm", "1", b"\x00compiled-v1")
    await store.put_derived(digest, "wasm", "2", b"\x00compiled-v2")
    await store.put_derived(digest, "restricted", "1", b"rp")
    assert await store.get_derived(digest, "wasm", "1") == b"\x00compiled-v1"
    assert await store.get_derived(digest, "wasm", "2") == b"\x00compiled-v2"
    await store.put_derived(digest, "wasm", "1", b"\x00recompiled")  # replaced, not duplicated
    assert await store.get_derived(digest, "wasm", "1") == b"\x00recompiled"

    await raw_sql("UPDATE derived SET data = ? WHERE backend = 'restricted'", (b"rq",))
    with pytest.raises(CorruptBlobError) as info:
        await store.get_derived(digest, "restricted", "1")
    assert (info.value.digest, info.value.path) == (digest, "derived:restricted/1")

    unknown = "sha256:" + "0" * 64
    with pytest.raises(VersionNotFoundError, match="no bundle with digest"):
        await store.put_derived(unknown, "wasm", "1", b"x")
    # uploads never carry derived forms: a bundle's files are only its validated sources
    assert set((await store.read_bundle(digest)).files) == {"main.py", "tenantflow.toml"}


async def test_missing_blob_row_is_reported(sqlite_store: SqliteArtifactStore, tmp_path: Path) -> None:
    digest = (
        await sqlite_store.upload(NS, make_zip(files(lib_py=PAYLOAD)), filename="b.zip", uploader="u")
    ).version.digest
    db = sqlite3.connect(tmp_path / "artifacts.db")  # foreign keys are off on this connection
    try:
        with db:
            db.execute("DELETE FROM blobs WHERE data = ?", (PAYLOAD,))
    finally:
        db.close()
    with pytest.raises(CorruptBlobError, match=r"read nothing \(blob missing\)"):
        await sqlite_store.read_bundle(digest)


async def test_derived_size_is_capped(tmp_path: Path) -> None:
    async with await SqliteArtifactStore.open(tmp_path / "a.db", StoreConfig(max_derived_bytes=10)) as store:
        digest = (await store.upload(NS, make_zip(files()), filename="b.zip", uploader="u")).version.digest
        with pytest.raises(ValueError, match="at most 10"):
            await store.put_derived(digest, "wasm", "1", b"x" * 11)
