"""Real hostile archives, built here, each rejected through the SQLite store with a precise message."""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from artifacts import SqliteArtifactStore
from tests.artifacts.helpers import (
    MAIN,
    NS,
    MiB,
    files,
    make_tgz,
    make_zip,
    manifest,
    messages,
    patch_zip_sizes,
    rejected,
    tar_file,
    tar_special,
    tgz_of,
)


@pytest.fixture
def store(sqlite_store: SqliteArtifactStore) -> SqliteArtifactStore:
    """Validation never reaches storage: these tests run on SQLite only."""
    return sqlite_store


async def assert_nothing_stored(store: SqliteArtifactStore) -> None:
    assert await store.list_workflows(NS) == []


async def test_zip_bomb_small_file_huge_uncompressed_size(store: SqliteArtifactStore) -> None:
    bomb = make_zip({**files(), "bomb.txt": b"\0" * (20 * MiB)})
    assert len(bomb) < 100_000  # a small upload...
    error = await rejected(store, bomb, filename="bundle.zip")
    # ...refused from the central directory, before a single byte is inflated
    declared = 20 * MiB + sum(len(d) for d in files().values())
    assert messages(error) == [
        f"archive declares {declared:,} bytes uncompressed; at most 5,242,880 allowed (limit max_total_bytes)"
    ]
    await assert_nothing_stored(store)


async def test_zip_entry_over_ratio_is_refused(store: SqliteArtifactStore) -> None:
    error = await rejected(store, make_zip({**files(), "zeros.txt": b"\0" * MiB}), filename="b.zip")
    assert len(error.problems) == 1
    assert error.problems[0].message.startswith("archive expands ")
    assert error.problems[0].message.endswith(":1; at most 100:1 allowed (possible zip bomb)")


async def test_zip_that_understates_its_size_is_refused_not_truncated(store: SqliteArtifactStore) -> None:
    honest = make_zip({**files(), "data.txt": b"x" * 3000 + bytes(range(256)) * 40})
    lying = patch_zip_sizes(honest, "data.txt", 1000)
    error = await rejected(store, lying, filename="b.zip")
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.path == "data.txt"
    assert problem.message.startswith("corrupt or unsupported zip entry (Bad CRC-32")


async def test_gzip_bomb_stops_while_streaming(store: SqliteArtifactStore) -> None:
    bomb = make_tgz([tar_file("tenantflow.toml", manifest()), tar_file("bomb.txt", b"\0" * (20 * MiB))])
    assert len(bomb) < 100_000
    error = await rejected(store, bomb, filename="bundle.tar.gz")
    assert messages(error) == [
        "bomb.txt: declared uncompressed size 20,971,520 bytes exceeds the per-file limit of 2,097,152 bytes",
        "archive expands more than 100:1 while decompressing (possible gzip bomb); stopped reading",
    ]


async def test_tar_with_parent_directory_path(store: SqliteArtifactStore) -> None:
    error = await rejected(store, tgz_of({**files(), "../evil.py": b"x = 1\n"}), filename="b.tgz")
    assert messages(error) == ["../evil.py: path contains '..'; paths must stay inside the bundle"]


async def test_tar_with_absolute_path(store: SqliteArtifactStore) -> None:
    error = await rejected(store, tgz_of({**files(), "/etc/cron.d/evil.py": b"x = 1\n"}), filename="b.tgz")
    assert messages(error) == [
        "/etc/cron.d/evil.py: absolute path; paths must be relative to the bundle root"
    ]


async def test_tar_with_symlink_and_hard_link(store: SqliteArtifactStore) -> None:
    members = [tar_file(name, data) for name, data in files().items()]
    members.append(tar_special("passwd.txt", tarfile.SYMTYPE, "/etc/passwd"))
    members.append(tar_special("again.py", tarfile.LNKTYPE, "main.py"))
    error = await rejected(store, make_tgz(members), filename="b.tar.gz")
    assert messages(error) == [
        "passwd.txt: symbolic link to '/etc/passwd'; bundles may only contain regular files",
        "again.py: hard link to 'main.py'; bundles may only contain regular files",
    ]


async def test_tar_with_device_file(store: SqliteArtifactStore) -> None:
    members = [tar_file(name, data) for name, data in files().items()]
    members.append(tar_special("disk.txt", tarfile.BLKTYPE))
    error = await rejected(store, make_tgz(members), filename="b.tgz")
    assert messages(error) == ["disk.txt: device file; bundles may only contain regular files"]


async def test_zip_with_symlink(store: SqliteArtifactStore) -> None:
    raw = make_zip(files())
    import io

    buf = io.BytesIO(raw)
    with zipfile.ZipFile(buf, "a") as zf:
        link = zipfile.ZipInfo("secrets.txt")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/shadow")
    error = await rejected(store, buf.getvalue(), filename="b.zip")
    assert messages(error) == [
        "secrets.txt: symbolic link; bundles may only contain regular files (copy the target in instead)"
    ]


async def test_directory_with_symlink_and_hard_link(store: SqliteArtifactStore, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    for name, data in files().items():
        (root / name).write_bytes(data)
    (root / "secret.txt").symlink_to("/etc/passwd")
    outside = tmp_path / "outside.py"
    outside.write_bytes(b"x = 1\n")
    os.link(outside, root / "linked.py")
    error = await rejected(store, root)
    assert messages(error) == [
        "linked.py: hard link (2 names for one file); copy the file instead",
        "secret.txt: symbolic link; bundles may only contain regular files (copy the target in instead)",
    ]


async def test_ten_thousand_tiny_files_zip(store: SqliteArtifactStore) -> None:
    many = {**files(), **{f"f{i}.txt": b"x" for i in range(10_000)}}
    error = await rejected(store, make_zip(many, compression=zipfile.ZIP_STORED), filename="b.zip")
    assert messages(error) == ["archive has 10,002 files; at most 500 allowed (limit max_files)"]


async def test_ten_thousand_tiny_files_tar_stops_at_the_cap(store: SqliteArtifactStore) -> None:
    many = {**files(), **{f"f{i}.txt": b"x" for i in range(10_000)}}
    error = await rejected(store, tgz_of(many), filename="b.tgz")
    # The 501st member ends the read: the other 9,501 are never looked at.
    assert messages(error) == ["more than 500 files (limit max_files=500); stopped reading at 'f498.txt'"]


async def test_non_utf8_source(store: SqliteArtifactStore) -> None:
    main = b"def run(event, step):\n    return '\xff'\n"
    error = await rejected(store, make_zip(files() | {"main.py": main}), filename="b.zip")
    assert messages(error) == [
        "main.py:2:13: not valid UTF-8: byte 0xff at byte offset 34; save the file as UTF-8"
    ]


async def test_nul_in_file_name(store: SqliteArtifactStore) -> None:
    raw = make_zip({**files(), "evilX.py": b"x = 1\n"})
    assert raw.count(b"evilX.py") == 2  # local header and central directory
    hostile = raw.replace(b"evilX.py", b"evil\0.py")
    error = await rejected(store, hostile, filename="b.zip")
    assert messages(error) == ["evil\\x00.py: file name contains a NUL character; rename it"]


async def test_control_character_in_file_name(store: SqliteArtifactStore) -> None:
    error = await rejected(store, tgz_of({**files(), "a\x1b[2J.py": b""}), filename="b.tgz")
    assert messages(error) == ["a\\x1b[2J.py: file name contains control characters; rename it"]


async def test_syntax_error_reports_file_line_column(store: SqliteArtifactStore) -> None:
    broken = b"def helper():\n    total = 1\n    return total +* 2\n"
    error = await rejected(store, make_zip({**files(), "lib/helper.py": broken}), filename="b.zip")
    assert messages(error) == ["lib/helper.py:3:19: syntax error: invalid syntax"]
    problem = error.problems[0]
    assert (problem.path, problem.line, problem.column) == ("lib/helper.py", 3, 19)
    assert "lib/helper.py:3:19: syntax error" in str(error)


async def test_missing_run(store: SqliteArtifactStore) -> None:
    main = b"def handler(event, step):\n    return 1\n\nclass X:\n    def run(self, event, step): ...\n"
    error = await rejected(store, tgz_of(files() | {"main.py": main}), filename="b.tgz")
    assert messages(error) == [
        "main.py: entry module does not define a top-level function run(event, step); add one"
    ]


async def test_every_problem_is_listed_in_one_error(store: SqliteArtifactStore) -> None:
    hostile = {
        "tenantflow.toml": manifest(extra="retries = 3\n"),
        "main.py": MAIN,
        "../up.py": b"",
        "tool.exe": b"MZ",
        "bad.py": b"def f(:\n",
        "Main.py": MAIN,
    }
    error = await rejected(store, make_zip(hostile), filename="b.zip")
    assert messages(error) == [
        "../up.py: path contains '..'; paths must stay inside the bundle",
        "tool.exe: file type '.exe' is not allowed; allowed: .json, .md, .py, .toml, .txt",
        "Main.py: path collides with 'main.py' on case-insensitive file systems",
        "tenantflow.toml: unknown key 'retries'; known keys are workflow, entry, description, bindings, limits",
        "bad.py:1:7: syntax error: invalid syntax",
    ]
    text = str(error)
    assert text.startswith("bundle rejected (5 problems); fix these and upload again:\n")
    assert all(f"  - {m}" in text for m in messages(error))


async def test_zip_needing_an_unsupported_version_is_a_validation_error(store: SqliteArtifactStore) -> None:
    # Found by the property test: zipfile raises NotImplementedError for "version needed" > 6.3.
    archive = bytearray(make_zip(files()))
    central = archive.index(b"PK\x01\x02")
    archive[central + 6 : central + 8] = (84).to_bytes(2, "little")  # version needed to extract: 8.4
    error = await rejected(store, bytes(archive), filename="bundle.zip")
    assert messages(error) == [
        "not a readable zip archive (zip file version 8.4); upload a .zip, .tar.gz or directory"
    ]
    await assert_nothing_stored(store)
