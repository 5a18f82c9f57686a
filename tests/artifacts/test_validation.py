"""Formats, manifests, entry checks and caps: accepted forms and precise rejections."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifacts import (
    InvalidNameError,
    SqliteArtifactStore,
    StoreConfig,
    ValidationLimits,
)
from tests.artifacts.helpers import MAIN, NS, files, make_zip, manifest, messages, rejected, tgz_of


@pytest.fixture
def store(sqlite_store: SqliteArtifactStore) -> SqliteArtifactStore:
    """Validation never reaches storage: these tests run on SQLite only."""
    return sqlite_store


async def test_every_format_of_the_same_files_is_the_same_version(
    store: SqliteArtifactStore, tmp_path: Path
) -> None:
    content = files(util_py=b"X = 1\n", data_json=b'{"a": 1}')
    root = tmp_path / "dir"
    (root / "lib").mkdir(parents=True)
    for name, data in {**content, "lib/deep.md": b"# notes\n"}.items():
        (root / name).write_bytes(data)
    content["lib/deep.md"] = b"# notes\n"
    (tmp_path / "b.zip").write_bytes(make_zip(content))
    (tmp_path / "b.tar.gz").write_bytes(tgz_of(content))

    first = await store.upload(NS, root, uploader="ops")
    assert first.created and first.version.number == 1
    for source, filename in [
        (tmp_path / "b.zip", None),
        (tmp_path / "b.tar.gz", None),
        (make_zip(content), "upload.zip"),
        (tgz_of(content), "upload.tgz"),
    ]:
        again = await store.upload(NS, source, uploader="ops", filename=filename)
        assert (again.created, again.version.number) == (False, 1)
        assert again.version.digest == first.version.digest
    bundle = await store.read_bundle(first.version.digest)
    assert dict(bundle.files) == content
    assert first.version.file_count == 5
    assert first.version.size == sum(len(d) for d in content.values())


async def test_tar_made_with_dot_prefix_is_accepted(store: SqliteArtifactStore) -> None:
    result = await store.upload(
        NS, tgz_of({f"./{k}": v for k, v in files().items()}), filename="b.tgz", uploader="u"
    )
    bundle = await store.read_bundle(result.version.digest)
    assert set(bundle.files) == {"main.py", "tenantflow.toml"}


async def test_single_py_file_gets_a_synthesized_manifest(store: SqliteArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "greeter.py"
    path.write_bytes(MAIN)
    result = await store.upload(NS, path, uploader="ops")
    assert result.version.workflow == "greeter"
    assert result.version.manifest.entry == "greeter.py"
    bundle = await store.read_bundle(result.version.digest)
    assert bundle.entry == "greeter.py"
    assert bundle.files["tenantflow.toml"] == b'workflow = "greeter"\nentry = "greeter.py"\n'

    named = await store.upload(NS, MAIN, filename="x.py", workflow="billing", uploader="ops")
    assert (named.version.workflow, named.version.number) == ("billing", 1)


async def test_single_py_file_needs_a_valid_workflow_name(store: SqliteArtifactStore) -> None:
    error = await rejected(store, MAIN, filename="my flow.py")
    assert messages(error) == [
        "cannot name the workflow 'my flow' (a workflow name must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ "
        "and have at most 64 characters); pass workflow="
    ]


async def test_manifest_is_validated_with_key_names(store: SqliteArtifactStore) -> None:
    bad = (
        'workflow = "-bad"\nentry = "main.txt"\nbindings = ["http", "http", "Bad"]\n'
        "[limits]\ncpu_seconds = -1\ngpu = 2\n"
    )
    error = await rejected(
        store, make_zip({"tenantflow.toml": bad.encode(), "main.py": MAIN}), filename="b.zip"
    )
    assert messages(error) == [
        "tenantflow.toml: workflow '-bad' is invalid: a workflow name must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ "
        "and have at most 64 characters",
        "tenantflow.toml: entry 'main.txt' must be the path of a .py file in the bundle",
        "tenantflow.toml: binding 'Bad' must match ^[a-z][a-z0-9_]*$ (at most 64 characters)",
        "tenantflow.toml: bindings must not repeat a name",
        "tenantflow.toml: limits.cpu_seconds must be a finite positive number, got -1",
        "tenantflow.toml: unknown key 'limits.gpu'; known limits are cpu_seconds, host_calls, memory_bytes, "
        "output_bytes, result_bytes, wall_seconds",
    ]


async def test_manifest_toml_syntax_error_has_a_position(store: SqliteArtifactStore) -> None:
    error = await rejected(
        store, make_zip({"tenantflow.toml": b'workflow = "a"\nentry = \n', "main.py": MAIN}), filename="b.zip"
    )
    assert messages(error) == ["tenantflow.toml:2:9: invalid TOML: Invalid value"]


async def test_manifest_fields_are_kept(store: SqliteArtifactStore) -> None:
    toml = manifest(
        extra='entry = "app/flow.py"\ndescription = "Orders"\nbindings = ["http"]\n[limits]\ncpu_seconds = 2.5\n'
    )
    result = await store.upload(
        NS, make_zip({"tenantflow.toml": toml, "app/flow.py": MAIN}), filename="b.zip", uploader="u"
    )
    m = (await store.resolve(NS, "orders", "latest")).manifest
    assert m == result.version.manifest
    assert (m.entry, m.description, m.bindings, dict(m.limits)) == (
        "app/flow.py",
        "Orders",
        ("http",),
        {"cpu_seconds": 2.5},
    )


async def test_missing_manifest_and_missing_entry(store: SqliteArtifactStore) -> None:
    error = await rejected(store, make_zip({"main.py": MAIN}), filename="b.zip")
    assert messages(error) == ['missing manifest: add tenantflow.toml at the bundle root (workflow = "name")']
    error = await rejected(
        store, make_zip({"tenantflow.toml": manifest(), "other.py": MAIN}), filename="b.zip"
    )
    assert messages(error) == [
        "main.py: entry module not found in the bundle; add it or set entry in tenantflow.toml"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b"async def run(event, step):\n    pass\n", "main.py:1:1: run must be a plain function"),
        (b"def run(event):\n    pass\n", "main.py:1:1: run must accept exactly two positional arguments"),
        (b"def run(a, b, c):\n    pass\n", "main.py:1:1: run must accept exactly two positional arguments"),
        (
            b"def run(a, b, *, c):\n    pass\n",
            "main.py:1:1: run must accept exactly two positional arguments",
        ),
    ],
)
async def test_run_signature_is_checked(store: SqliteArtifactStore, source: bytes, expected: str) -> None:
    error = await rejected(store, make_zip(files() | {"main.py": source}), filename="b.zip")
    assert len(error.problems) == 1
    assert str(error.problems[0]).startswith(expected)


async def test_run_with_optional_extras_is_accepted(store: SqliteArtifactStore) -> None:
    main = b"def run(event, step, debug=False, *, trace=None):\n    return 1\n"
    assert (
        await store.upload(NS, make_zip(files() | {"main.py": main}), filename="b.zip", uploader="u")
    ).created


async def test_compiler_only_errors_and_json_errors_are_reported(store: SqliteArtifactStore) -> None:
    error = await rejected(
        store,
        make_zip(
            files(lib_py=b"x = 1\nreturn x\n", conf_json=b'{"a": 1,\n "b": }', extra_toml=b"a = 1\nb = = 2\n")
        ),
        filename="b.zip",
    )
    assert messages(error) == [
        "lib.py:2:1: syntax error: 'return' outside function",
        "conf.json:2:7: invalid JSON: Expecting value",
        "extra.toml:2:5: invalid TOML: Invalid value",
    ]


async def test_duplicate_and_file_directory_conflicts(store: SqliteArtifactStore) -> None:
    from tests.artifacts.helpers import make_tgz, tar_file

    members = [tar_file(k, v) for k, v in files().items()]
    members += [
        tar_file("a.py", b""),
        tar_file("a.py", b"x = 2\n"),
        tar_file("b.py", b""),
        tar_file("b.py/c.py", b""),
    ]
    error = await rejected(store, make_tgz(members), filename="b.tgz")
    assert messages(error) == [
        "a.py: duplicate path; each path may appear once",
        "b.py/c.py: 'b.py' is both a file and a directory",
    ]


async def test_caps_are_configurable(tmp_path: Path) -> None:
    limits = ValidationLimits(max_files=3, max_file_bytes=100, max_total_bytes=1000)
    async with await SqliteArtifactStore.open(tmp_path / "a.db", StoreConfig(limits=limits)) as small:
        error = await rejected(small, make_zip(files(big_txt=b"x" * 101)), filename="b.zip")
        assert messages(error) == [
            "big.txt: declared uncompressed size 101 bytes exceeds the per-file limit of 100 bytes"
        ]
        error = await rejected(small, make_zip(files(a_txt=b"", b_txt=b"")), filename="b.zip")
        assert messages(error) == ["archive has 4 files; at most 3 allowed (limit max_files)"]
        error = await rejected(small, tgz_of(files(a_txt=b"", b_txt=b"")), filename="b.tgz")
        assert messages(error) == ["more than 3 files (limit max_files=3); stopped reading at 'b.txt'"]


def test_limits_must_be_finite_and_positive() -> None:
    for bad in (0, -1, float("inf"), True):
        with pytest.raises(ValueError, match="finite positive"):
            ValidationLimits(max_files=bad)
    with pytest.raises(ValueError, match=r"must include '\.py'"):
        ValidationLimits(allowed_extensions=frozenset({".txt"}))


async def test_upload_arguments_are_checked(store: SqliteArtifactStore) -> None:
    with pytest.raises(InvalidNameError, match="invalid namespace ''"):
        await store.upload("", make_zip(files()), filename="b.zip", uploader="u")
    with pytest.raises(InvalidNameError, match="invalid alias '7'"):
        await store.upload(NS, make_zip(files()), filename="b.zip", uploader="u", aliases=["7"])
    with pytest.raises(TypeError, match=r"pathlib\.Path or bytes"):
        await store.upload(NS, "bundle.zip", uploader="u")  # type: ignore[arg-type]
    error = await rejected(store, make_zip(files()), filename="b.rar")
    assert messages(error) == ["unsupported bundle format 'b.rar'; use .zip, .tar.gz, .tgz or .py"]
    error = await rejected(store, make_zip(files()), filename="b.zip", workflow="billing")
    assert messages(error) == [
        "tenantflow.toml: manifest names workflow 'orders' but the upload is for 'billing'"
    ]
    error = await rejected(store, b"garbage", filename="b.zip")
    assert messages(error) == [
        "not a readable zip archive (File is not a zip file); upload a .zip, .tar.gz or directory"
    ]
    error = await rejected(store, b"garbage", filename="b.tgz")
    assert messages(error)[0].startswith("not a valid gzip stream")


async def test_gzip_padding_and_concatenated_members_are_accepted(store: SqliteArtifactStore) -> None:
    import gzip

    tar = gzip.decompress(tgz_of(files()))
    padded = await store.upload(NS, gzip.compress(tar) + b"\0" * 1024, filename="b.tgz", uploader="u")
    split = await store.upload(
        NS, gzip.compress(tar[:700]) + gzip.compress(tar[700:]), filename="b.tgz", uploader="u"
    )
    assert padded.created and not split.created
    assert split.version.digest == padded.version.digest


async def test_pax_header_declaring_gigabytes_is_stopped_by_the_stream_cap(
    store: SqliteArtifactStore,
) -> None:
    import gzip
    import tarfile

    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 0o77777777777  # 8 GiB of "extended header" that tarfile would try to read
    hostile = gzip.compress(header.tobuf(tarfile.USTAR_FORMAT) + b"\0" * (8 * 1024 * 1024))
    error = await rejected(store, hostile, filename="b.tgz")
    assert messages(error) == [
        "archive expands more than 100:1 while decompressing (possible gzip bomb); stopped reading"
    ]
