"""Content addressing and reference parsing.

Blob digest: ``sha256`` of the file's bytes, as 64 lower-case hex digits.

Version (bundle) digest: ``"sha256:" + sha256(encoding).hexdigest()`` where ``encoding`` is

    b"tenantflow-bundle-v1\\n"
    + for each file, in ascending order of its path's UTF-8 bytes:
          path (UTF-8) + b"\\0" + blob hex digest (ASCII) + b"\\n"

Paths never contain NUL or newlines (validation rejects control characters), so the encoding is
unambiguous; the version tag lets a future encoding coexist. Only paths and contents count:
archive format, timestamps, permissions and member order do not change the digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._errors import InvalidNameError

_TAG = b"tenantflow-bundle-v1\n"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ALIAS_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_]*$")
ALIAS_MAX = 64
NAMESPACE_MAX = 256
LABEL_MAX = 128


def blob_digest(data: bytes) -> str:
    """Hex sha256 of one file's bytes."""
    return hashlib.sha256(data).hexdigest()


def bundle_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """The version digest of (path, blob hex digest) pairs, in the canonical encoding above."""
    h = hashlib.sha256(_TAG)
    for path, blob in sorted(pairs, key=lambda pair: pair[0].encode("utf-8")):
        h.update(path.encode("utf-8") + b"\0" + blob.encode("ascii") + b"\n")
    return "sha256:" + h.hexdigest()


def digest_files(files: Mapping[str, bytes]) -> tuple[str, dict[str, str]]:
    """(version digest, path -> blob digest) of a bundle's files."""
    blobs = {path: blob_digest(data) for path, data in files.items()}
    return bundle_digest(blobs.items()), blobs


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed version reference: exactly one of the fields is set."""

    number: int | None = None
    digest: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return str(self.number) if self.number is not None else (self.digest or repr(self.alias))


def parse_ref(ref: int | str) -> Ref:
    """A version number (int or digits), a digest (``sha256:<hex>``) or an alias name."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        if ref < 1:
            raise InvalidNameError("version number", ref, "version numbers start at 1")
        return Ref(number=ref)
    if not isinstance(ref, str):
        raise InvalidNameError("ref", ref, "use an alias name, a version number or 'sha256:<hex>'")
    if ref.isascii() and ref.isdigit():
        return parse_ref(int(ref))
    if ref.startswith("sha256:"):
        if not DIGEST_RE.match(ref):
            raise InvalidNameError(
                "digest", ref, "a digest is 'sha256:' followed by 64 lower-case hex digits"
            )
        return Ref(digest=ref)
    check_alias(ref)
    return Ref(alias=ref)


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InvalidNameError("digest", digest, "a digest is 'sha256:' followed by 64 lower-case hex digits")
    return digest


def check_alias(alias: object) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or len(alias) > ALIAS_MAX:
        raise InvalidNameError(
            "alias",
            alias,
            f"an alias must match ^[a-zA-Z_][a-zA-Z0-9-_]*$ and have at most {ALIAS_MAX} characters",
        )
    return alias


def check_namespace(namespace: object) -> str:
    """Namespaces are opaque to this package; only their shape is checked."""
    if (
        not isinstance(namespace, str)
        or not namespace
        or len(namespace) > NAMESPACE_MAX
        or not namespace.isprintable()
    ):
        raise InvalidNameError(
            "namespace", namespace, f"a namespace is 1 to {NAMESPACE_MAX} printable characters"
        )
    return namespace


def check_label(kind: str, value: object) -> str:
    """Uploader, actor, backend name, backend version: short printable strings."""
    if not isinstance(value, str) or not value or len(value) > LABEL_MAX or not value.isprintable():
        raise InvalidNameError(kind, value, f"expected 1 to {LABEL_MAX} printable characters")
    return value
