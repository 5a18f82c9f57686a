"""The public surface of ``artifacts`` is deliberate: pinned here."""

from __future__ import annotations

import dataclasses

import artifacts


def test_public_exports_are_pinned() -> None:
    assert set(artifacts.__all__) == {
        "MANIFEST_PATH",
        "AliasConflictError",
        "AliasEvent",
        "AliasNotFoundError",
        "AliasRecord",
        "AliasRollbackError",
        "ArtifactError",
        "ArtifactStore",
        "BundleFiles",
        "BundleValidationError",
        "CorruptBlobError",
        "GcResult",
        "InUseHook",
        "InvalidNameError",
        "Manifest",
        "PostgresArtifactStore",
        "Problem",
        "SchemaVersionError",
        "SqliteArtifactStore",
        "StoreClosedError",
        "StoreConfig",
        "UploadResult",
        "ValidationLimits",
        "Version",
        "VersionInUseError",
        "VersionNotFoundError",
        "WorkflowInfo",
    }
    for name in artifacts.__all__:
        assert hasattr(artifacts, name), name


def test_errors_share_one_root_and_end_in_error() -> None:
    errors = [getattr(artifacts, n) for n in artifacts.__all__ if n.endswith("Error")]
    assert len(errors) == 11
    for cls in errors:
        assert issubclass(cls, artifacts.ArtifactError), cls


def test_records_are_frozen_and_every_field_is_documented() -> None:
    import inspect

    for name in (
        "Version",
        "UploadResult",
        "BundleFiles",
        "AliasRecord",
        "AliasEvent",
        "GcResult",
        "WorkflowInfo",
        "Manifest",
        "Problem",
        "ValidationLimits",
        "StoreConfig",
    ):
        cls = getattr(artifacts, name)
        params = cls.__dataclass_params__
        assert params.frozen, name
        source = inspect.getsource(cls)
        for field in dataclasses.fields(cls):
            # a docstring line directly under each field declaration
            lines = source.splitlines()
            index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{field.name}:"))
            assert lines[index + 1].strip().startswith('"""'), f"{name}.{field.name} has no docstring"


def test_validation_error_lists_every_problem() -> None:
    problems = [
        artifacts.Problem("main.py", 3, 7, "syntax error: invalid syntax"),
        artifacts.Problem(None, None, None, "missing manifest"),
        artifacts.Problem("a.txt", 2, None, "bad"),
    ]
    error = artifacts.BundleValidationError(problems)
    assert error.problems == tuple(problems)
    assert str(error).splitlines() == [
        "bundle rejected (3 problems); fix these and upload again:",
        "  - main.py:3:7: syntax error: invalid syntax",
        "  - missing manifest",
        "  - a.txt:2: bad",
    ]
