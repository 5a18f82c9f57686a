"""Aliases: moves on upload, explicit moves, compare-and-set, history, rollback, deletion."""

from __future__ import annotations

import pytest

from artifacts import (
    AliasConflictError,
    AliasNotFoundError,
    AliasRollbackError,
    ArtifactStore,
    VersionNotFoundError,
)
from tests.artifacts.helpers import NS, files, make_zip


async def upload(store: ArtifactStore, n: int, **kwargs: object) -> int:
    data = make_zip(files(v_py=f"N = {n}\n".encode()))
    result = await store.upload(NS, data, filename="b.zip", uploader="ci", **kwargs)  # type: ignore[arg-type]
    return result.version.number


async def test_latest_moves_on_upload_unless_disabled(store: ArtifactStore) -> None:
    await upload(store, 1)
    await upload(store, 2)
    assert (await store.resolve(NS, "orders", "latest")).number == 2
    await upload(store, 3, move_latest=False)
    assert (await store.resolve(NS, "orders", "latest")).number == 2
    await upload(store, 4, move_latest=False, aliases=["canary"])
    assert (await store.resolve(NS, "orders", "canary")).number == 4
    assert (await store.resolve(NS, "orders", "latest")).number == 2


async def test_reupload_moves_requested_aliases_to_the_existing_version(store: ArtifactStore) -> None:
    await upload(store, 1)
    await upload(store, 2)
    assert await upload(store, 1) == 1  # same content: version 1 again, and latest follows it
    latest = await store.get_alias(NS, "orders", "latest")
    assert latest is not None and latest.number == 1
    assert [e.number for e in await store.alias_history(NS, "orders", "latest")] == [1, 2, 1]


async def test_set_alias_history_and_rollback(store: ArtifactStore) -> None:
    for n in (1, 2, 3):
        await upload(store, n)
    v1 = await store.resolve(NS, "orders", 1)
    first = await store.set_alias(NS, "orders", "production", 1, actor="alice")
    assert (first.number, first.digest, first.generation, first.updated_by) == (1, v1.digest, 1, "alice")
    await store.set_alias(NS, "orders", "production", "3", actor="bob")
    moved = await store.set_alias(
        NS, "orders", "production", (await store.resolve(NS, "orders", 2)).digest, actor="carol"
    )
    assert (moved.number, moved.generation) == (2, 3)
    # setting it where it already is changes nothing
    assert (await store.set_alias(NS, "orders", "production", 2, actor="dave")).generation == 3

    back = await store.rollback_alias(NS, "orders", "production", actor="oncall")
    assert (back.number, back.generation, back.updated_by) == (3, 4, "oncall")
    assert (await store.resolve(NS, "orders", "production")).number == 3
    history = await store.alias_history(NS, "orders", "production")
    assert [(e.generation, e.number, e.previous, e.actor, e.reason) for e in history] == [
        (4, 3, 2, "oncall", "rollback"),
        (3, 2, 3, "carol", "set"),
        (2, 3, 1, "bob", "set"),
        (1, 1, None, "alice", "set"),
    ]
    # a second rollback undoes the first
    assert (await store.rollback_alias(NS, "orders", "production", actor="oncall")).number == 2
    names = [a.alias for a in await store.list_aliases(NS, "orders")]
    assert names == ["latest", "production"]


async def test_rollback_errors(store: ArtifactStore) -> None:
    await upload(store, 1)
    with pytest.raises(AliasNotFoundError, match="alias 'production' of workflow 'orders'"):
        await store.rollback_alias(NS, "orders", "production", actor="x")
    with pytest.raises(AliasRollbackError, match="it has not moved since it was created"):
        await store.rollback_alias(NS, "orders", "latest", actor="x")
    await upload(store, 2)
    await store.set_alias(NS, "orders", "latest", 2, actor="x")
    await store.delete_version(NS, "orders", 1, in_use=None)
    with pytest.raises(AliasRollbackError, match="its previous target, version 1, was deleted"):
        await store.rollback_alias(NS, "orders", "latest", actor="x")


async def test_compare_and_set(store: ArtifactStore) -> None:
    await upload(store, 1)
    await upload(store, 2)
    created = await store.set_alias(NS, "orders", "production", 1, actor="a", expected_generation=0)
    with pytest.raises(AliasConflictError, match="is at generation 1, not the expected 0") as info:
        await store.set_alias(NS, "orders", "production", 2, actor="b", expected_generation=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    moved = await store.set_alias(
        NS, "orders", "production", 2, actor="a", expected_generation=created.generation
    )
    assert moved.generation == 2
    with pytest.raises(AliasConflictError):
        await store.rollback_alias(NS, "orders", "production", actor="a", expected_generation=1)
    assert (await store.resolve(NS, "orders", "production")).number == 2


async def test_alias_to_missing_version_and_bad_names(store: ArtifactStore) -> None:
    await upload(store, 1)
    with pytest.raises(VersionNotFoundError, match="no version 7 of workflow 'orders'"):
        await store.set_alias(NS, "orders", "production", 7, actor="a")
    assert await store.get_alias(NS, "orders", "production") is None
    from artifacts import InvalidNameError

    for bad in ("1", "sha256:x", "a b", "x" * 65, ""):
        with pytest.raises(InvalidNameError, match="invalid alias"):
            await store.set_alias(NS, "orders", bad, 1, actor="a")


async def test_delete_alias_keeps_history_and_recreation_continues_generations(
    store: ArtifactStore,
) -> None:
    await upload(store, 1)
    await store.set_alias(NS, "orders", "production", 1, actor="a")
    await store.delete_alias(NS, "orders", "production", actor="b")
    assert await store.get_alias(NS, "orders", "production") is None
    with pytest.raises(AliasNotFoundError):
        await store.delete_alias(NS, "orders", "production", actor="b")
    again = await store.set_alias(NS, "orders", "production", 1, actor="c")
    assert again.generation == 3
    history = await store.alias_history(NS, "orders", "production")
    assert [(e.number, e.previous, e.reason) for e in history] == [
        (1, None, "set"),
        (None, 1, "delete"),
        (1, None, "set"),
    ]
