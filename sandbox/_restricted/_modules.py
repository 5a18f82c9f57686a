"""Imports for tenant code: an allowlist of proxies, and the bundle's own modules.

Design note. A real module object is a path to the host even without underscores
(``json.codecs.sys``, ``re.enum.sys``, ``statistics.sys``), so tenant code never receives one. Each
allowlisted module is represented by a ``ModuleProxy`` that exposes only the names declared in
``ALLOWLIST`` (in the style of AccessControl's ``ModuleSecurityInfo``). Proxies are created per
tenant load (never shared between tenants) and are read-only. Names whose value is shared mutable
state (``hashlib.algorithms_available``, ``urllib.parse.uses_relative``, ``decimal.DefaultContext``,
``typing.overload``'s process-wide registry,
``textwrap.TextWrapper``'s class-level dict) are deliberately not declared, and so are wrappers
that call ``str.format`` on tenant text out of the guards' sight (``collections.UserString``). Per-tenant state
(``random``, ``time``, ``uuid.uuid4``, ``tenantflow``) comes from providers given by the worker.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

_MATH = (
    "acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e erf erfc exp "
    "exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf isclose isfinite isinf isnan "
    "isqrt lcm ldexp lgamma log log10 log1p log2 modf nan nextafter perm pi pow prod radians remainder "
    "sin sinh sqrt tan tanh tau trunc ulp"
)

ALLOWLIST: dict[str, str] = {
    "json": "dumps loads JSONDecodeError JSONEncoder JSONDecoder",
    "re": "compile search match fullmatch split findall finditer sub subn escape error Pattern Match "
    "RegexFlag A ASCII I IGNORECASE M MULTILINE S DOTALL X VERBOSE U UNICODE NOFLAG",
    "math": _MATH,
    "datetime": "date datetime time timedelta timezone tzinfo MINYEAR MAXYEAR UTC",
    "decimal": "Decimal Context localcontext getcontext setcontext DecimalException Clamped "
    "InvalidOperation DivisionByZero Inexact Rounded Subnormal Overflow Underflow FloatOperation "
    "ROUND_DOWN ROUND_HALF_UP ROUND_HALF_EVEN ROUND_CEILING ROUND_FLOOR ROUND_UP ROUND_HALF_DOWN "
    "ROUND_05UP MAX_PREC MAX_EMAX MIN_EMIN MIN_ETINY",
    "itertools": "accumulate chain combinations combinations_with_replacement compress count cycle "
    "dropwhile filterfalse groupby islice pairwise permutations product repeat starmap takewhile tee "
    "zip_longest",
    "collections": "deque Counter OrderedDict defaultdict ChainMap namedtuple UserDict UserList",
    "functools": "reduce partial lru_cache cache cmp_to_key total_ordering wraps cached_property "
    "singledispatch",
    "string": "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits octdigits punctuation "
    "printable whitespace capwords Template",
    "base64": "b64encode b64decode urlsafe_b64encode urlsafe_b64decode standard_b64encode "
    "standard_b64decode b32encode b32decode b32hexencode b32hexdecode b16encode b16decode b85encode "
    "b85decode a85encode a85decode encodebytes decodebytes",
    "hashlib": "md5 sha1 sha224 sha256 sha384 sha512 sha3_224 sha3_256 sha3_384 sha3_512 shake_128 "
    "shake_256 blake2b blake2s new pbkdf2_hmac",
    "uuid": "UUID uuid3 uuid4 uuid5 NAMESPACE_DNS NAMESPACE_URL NAMESPACE_OID NAMESPACE_X500",
    "statistics": "mean fmean geometric_mean harmonic_mean median median_low median_high median_grouped "
    "mode multimode pstdev pvariance stdev variance quantiles correlation covariance linear_regression "
    "NormalDist StatisticsError",
    "textwrap": "wrap fill shorten dedent indent",
    "urllib.parse": "quote quote_plus quote_from_bytes unquote unquote_plus unquote_to_bytes urlencode "
    "urlparse urlunparse urlsplit urlunsplit urljoin urldefrag parse_qs parse_qsl ParseResult "
    "SplitResult DefragResult",
    "zlib": "compress decompress compressobj decompressobj crc32 adler32 error DEFLATED MAX_WBITS "
    "Z_BEST_COMPRESSION Z_BEST_SPEED Z_DEFAULT_COMPRESSION Z_NO_COMPRESSION",
    "dataclasses": "dataclass field fields asdict astuple replace is_dataclass FrozenInstanceError "
    "KW_ONLY MISSING InitVar",
    "enum": "Enum IntEnum StrEnum Flag IntFlag auto unique",
    "typing": "Any Optional Union List Dict Tuple Set FrozenSet Callable Iterable Iterator Sequence "
    "Mapping MutableMapping MutableSequence Generator TypedDict NamedTuple Literal TypeVar Generic "
    "Protocol cast Final ClassVar TYPE_CHECKING Annotated NoReturn",
    "__future__": "annotations",
}
"""Module -> the only names a tenant may read from it."""

PACKAGES = {"urllib": ("parse",)}
"""Allowlisted parent packages: ``import urllib.parse`` binds a proxy of ``urllib`` with ``parse``."""

Provider = Callable[[], Mapping[str, Any]]
"""Builds the members of a per-tenant module (``random``, ``time``, ``tenantflow``, ...)."""


class ModuleProxy:
    """What ``import json`` gives tenant code: a read-only view of declared names."""

    __slots__ = ("__members", "__name")
    _tf_opaque = True

    def __init__(self, name: str, members: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_ModuleProxy__name", name)
        object.__setattr__(self, "_ModuleProxy__members", dict(members))

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.__members[attr]
        except KeyError:
            raise AttributeError(f"module {self.__name!r} has no attribute {attr!r} in the sandbox") from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"module {self.__name!r} is read-only in the sandbox")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"module {self.__name!r} is read-only in the sandbox")

    def __repr__(self) -> str:
        return f"<module {self.__name!r} (sandbox)>"


class TenantModule(ModuleProxy):
    """A module of the tenant's own bundle, exposing its public globals as they are now."""

    __slots__ = ("__globals",)

    def __init__(self, name: str, namespace: dict[str, Any]) -> None:
        super().__init__(name, {})
        object.__setattr__(self, "_TenantModule__globals", namespace)

    def __getattr__(self, attr: str) -> Any:
        if not attr.startswith("_"):
            try:
                return self.__globals[attr]
            except KeyError:
                pass
        raise AttributeError(f"module {self.__globals.get('__name__')!r} has no attribute {attr!r}")


def _safe_wraps(wrapped: Any) -> Any:
    """``functools.wraps`` without ``assigned``/``updated``: with those, trusted code copies any
    attribute by name (``updated=("__globals__",)`` merges a platform module's globals, real modules
    included, into the tenant's namespace)."""
    return functools.wraps(wrapped)


OVERRIDES: dict[str, dict[str, Any]] = {"functools": {"wraps": _safe_wraps}}
"""Declared names whose real value is unsafe with some arguments, replaced by a safe wrapper."""


def stdlib_members(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    members = {name: getattr(module, name) for name in ALLOWLIST[module_name].split()}
    members.update(OVERRIDES.get(module_name, {}))
    return members


def preload() -> None:
    """Import every allowlisted module up front (workers do this before lowering RLIMIT_NOFILE)."""
    for name in ALLOWLIST:
        stdlib_members(name)


def available_modules(providers: Mapping[str, Provider]) -> list[str]:
    return sorted({*ALLOWLIST, *providers} - {"__future__"})


class Importer:
    """The ``__import__`` of one tenant load: allowlist proxies, providers, bundle modules."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        load_tenant_module: Callable[[str], TenantModule | None],
    ) -> None:
        self._providers = providers
        self._load_tenant_module = load_tenant_module
        self._proxies: dict[str, ModuleProxy] = {}

    def _proxy(self, name: str) -> ModuleProxy | None:
        proxy = self._proxies.get(name)
        if proxy is not None:
            return proxy
        if name in self._providers:
            proxy = ModuleProxy(name, self._providers[name]())
        elif name in ALLOWLIST:
            proxy = ModuleProxy(name, stdlib_members(name))
        elif name in PACKAGES:
            children = {child: self._proxy(f"{name}.{child}") for child in PACKAGES[name]}
            proxy = ModuleProxy(name, children)
        else:
            return None
        self._proxies[name] = proxy
        return proxy

    def _resolve(self, name: str) -> ModuleProxy | None:
        if name != "tenantflow":
            module = self._load_tenant_module(name)
            if module is not None:
                return module
        return self._proxy(name)

    def __call__(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if not isinstance(name, str) or not isinstance(level, int):
            raise ImportError("module names must be strings")
        if level:
            return self._relative(name, globals, fromlist, level)
        target = self._resolve(name)
        if target is None:
            allowed = ", ".join(available_modules(self._providers))
            raise ImportError(
                f"module {name!r} is not available in the sandbox; "
                f"use a module of your bundle or one of: {allowed}"
            )
        if fromlist:
            self._submodules(name, target, fromlist)
            return target
        if "." not in name:
            return target
        top = self._resolve(name.split(".", 1)[0])
        assert top is not None  # a dotted name that resolved always has a resolvable parent
        return top

    def _relative(self, name: str, globals: Any, fromlist: Any, level: int) -> Any:
        """``from . import x`` / ``from .m import x`` inside the bundle's own packages."""
        package = globals.get("__package__") if isinstance(globals, dict) else None
        if not isinstance(package, str) or not package:
            raise ImportError("attempted relative import with no known parent package")
        parts = package.split(".")
        if level - 1 >= len(parts):
            raise ImportError("attempted relative import beyond the bundle's top-level package")
        base = ".".join(parts[: len(parts) - (level - 1)])
        full = f"{base}.{name}" if name else base
        target = self._load_tenant_module(full)
        if target is None:
            raise ImportError(f"no module named {full!r} in the bundle")
        self._submodules(full, target, fromlist)
        return target

    def _submodules(self, name: str, target: ModuleProxy, fromlist: Any) -> None:
        """Load bundle submodules named in ``from package import submodule``."""
        if not isinstance(target, TenantModule):
            return
        for item in fromlist or ():
            if isinstance(item, str) and item != "*":
                self._load_tenant_module(f"{name}.{item}")
