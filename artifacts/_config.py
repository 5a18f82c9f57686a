"""Configuration: upload validation caps and store options. Every cap is finite."""

from __future__ import annotations

from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB

DEFAULT_EXTENSIONS: frozenset[str] = frozenset({".py", ".json", ".toml", ".txt", ".md"})


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """Caps enforced while an upload is read. Archives are checked while streaming, never after extracting."""

    max_total_bytes: int = 5 * MiB
    """Sum of the uncompressed sizes of all files in the bundle."""
    max_file_bytes: int = 2 * MiB
    """Uncompressed size of any one file."""
    max_files: int = 500
    """Number of files (directory entries are counted separately, against the same number)."""
    max_archive_bytes: int = 5 * MiB
    """Size of the uploaded archive itself (compressed)."""
    max_ratio: float = 100.0
    """Largest allowed uncompressed:compressed ratio, for one file and for the whole archive."""
    ratio_floor_bytes: int = 64 * KiB
    """The ratio cap only applies once this many uncompressed bytes were seen (tiny files compress well)."""
    max_path_length: int = 255
    """Length of a bundle-relative path, in characters."""
    max_problems: int = 100
    """Problems reported in one error; the rest are summarised in a final line."""
    allowed_extensions: frozenset[str] = field(default=DEFAULT_EXTENSIONS)
    """File name suffixes accepted in a bundle (lower case, with the dot)."""

    def __post_init__(self) -> None:
        for name in (
            "max_total_bytes",
            "max_file_bytes",
            "max_files",
            "max_archive_bytes",
            "max_ratio",
            "ratio_floor_bytes",
            "max_path_length",
            "max_problems",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not value > 0
                or value == float("inf")
            ):
                raise ValueError(f"ValidationLimits.{name} must be a finite positive number, got {value!r}")
        if ".py" not in self.allowed_extensions:
            raise ValueError("ValidationLimits.allowed_extensions must include '.py'")
        for ext in self.allowed_extensions:
            if not ext.startswith(".") or ext != ext.lower() or len(ext) < 2:
                raise ValueError(f"ValidationLimits.allowed_extensions: {ext!r} must look like '.txt'")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Options shared by every store implementation."""

    limits: ValidationLimits = field(default_factory=ValidationLimits)
    """Caps applied to every upload."""
    busy_timeout_seconds: float = 10.0
    """How long a writer waits for another writer (another store object or process) before failing:
    SQLite's busy timeout, PostgreSQL's ``lock_timeout``."""
    max_derived_bytes: int = 64 * MiB
    """Largest derived form (e.g. compiled guest bytecode) the store accepts."""
    memory_cache_bytes: int = 64 * MiB
    """Verified bundles (``read_bundle``) and derived forms (``get_derived``) kept in memory, least
    recently used first out, bounded by their total bytes. Both are immutable per key (a bundle is
    named by its digest), so a second cold load of a version reads and verifies nothing. 0 disables."""
    resolve_cache_entries: int = 10_000
    """Resolved versions (``resolve``/``get_version``) kept in memory per store object, SQLite only
    (checked against the file's ``PRAGMA data_version`` on every call; see ``_sqlite.py``). Roughly
    1-2 KiB each. 0: every resolve is an indexed read."""

    def __post_init__(self) -> None:
        if not self.busy_timeout_seconds > 0 or self.busy_timeout_seconds == float("inf"):
            raise ValueError("StoreConfig.busy_timeout_seconds must be a finite positive number")
        if self.max_derived_bytes <= 0:
            raise ValueError("StoreConfig.max_derived_bytes must be positive")
        for name in ("memory_cache_bytes", "resolve_cache_entries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"StoreConfig.{name} must be an integer >= 0 (0 disables), got {value!r}")
