"""The platform: tenants, tokens, code, instances, each operation authorized for the caller.

``Platform`` is the composition root. It opens the engine store, the artifact store and the control
store under one data directory, registers ``TenantExecutor`` as the engine's executor, and offers
every operation the HTTP API and CLI need. Every method takes the caller's ``Principal``: an
operator may act on any tenant; a tenant token only on its own tenant, and anything outside it
looks exactly like something that does not exist (``NotFoundError``).

Data directory layout: ``engine.db``, ``artifacts.db``, ``control.db``, ``tenants/<id>.sqlite3``.

Scale-out (``db="postgresql://..."``): every store lives in PostgreSQL, each in its own schema under
one prefix (``<schema>_engine``, ``<schema>_artifacts``, ``<schema>_control``), shared by any number
of API and worker processes on any number of machines. ``data_dir`` then only holds this process's
caches: ``artifact-cache/`` (bundles and derived forms fetched by digest, verified on every read).
Tenant state that must survive a machine is in the database too: ``env.kv`` entries (one table,
quota counted across every machine) and the creation-rate buckets (one row per tenant, so N API
processes do not allow N times ``creation_rate``). ``env.db`` is refused there: it keeps a SQLite
file per machine (see ``dispatcher._bindings.DB_ON_POSTGRES``). ``worker=False`` opens an API-only platform: it creates,
controls and observes instances, and never runs one. Each instance carries the affinity label
``tenant@digest``; a worker prefers to claim instances of the versions its warm cache holds.
Tenants and policies are re-read from the control store every ``tenant_refresh_seconds``, so a
policy changed through one process reaches the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from artifacts import (
    AliasRecord,
    ArtifactError,
    ArtifactStore,
    PostgresArtifactStore,
    SqliteArtifactStore,
    UploadResult,
    Version,
    VersionNotFoundError,
)
from engine import (
    CreateRequest,
    Engine,
    EngineConfig,
    EngineStore,
    EngineValidationError,
    Instance,
    InstanceExistsError,
    InstanceNotFoundError,
    InvalidTransitionError,
    PostgresStore,
    RestartFrom,
    SqliteStore,
    Status,
)
from sandbox import Bundle, SandboxBackend, create_backend

from ._bridge import Bindings
from ._cache import CacheKey, Prepared, WarmCache
from ._control import ControlStore, SqliteControlStore, TokenInfo
from ._control_pg import PostgresControlStore, check_schema_name, import_asyncpg
from ._disk_cache import DiskArtifactCache
from ._envelope import Route, body_of, unwrap, wrap
from ._errors import (
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    TenantSuspendedError,
)
from ._executor import TenantExecutor
from ._logs import InstanceLogs
from ._policy import Tenant, TenantPolicy, validate_tenant_id

if TYPE_CHECKING:
    from ._bindings._kv_pg import PostgresKVBackend

log = logging.getLogger(__name__)
_LIVE = ("queued", "running", "waiting", "waitingForPause")
MiB = 1024 * 1024
# The engine's multi-worker API (issue 8: ``CreateRequest.affinity``, ``Engine(preferred_affinity=,
# worker=)``) is landing in parallel; until it has, affinity is not recorded and API-only refuses.


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an operator (``tenant is None``) or one tenant."""

    tenant: str | None
    token_id: str = ""

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


OPERATOR = Principal(None, "internal")
"""The platform itself (CLI in-process use, the demo, tests)."""


class _RateLimiter:
    """A token bucket per tenant in this process: ``rate`` per second, bursts up to one second's
    worth. The embedded platform has one process; a PostgreSQL platform uses ``_SharedRateLimiter``."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, tenant: str, rate: float, count: int = 1) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < count:
            raise RateLimitedError(tenant, rate, (count - tokens) / rate)
        self._buckets[tenant] = (tokens - count, now)


class _SharedRateLimiter:
    """The same bucket, one row per tenant in the database, so the rate holds across every API
    process on every machine (N processes do not allow N times the rate)."""

    def __init__(self, control: PostgresControlStore) -> None:
        self._control = control

    async def take(self, tenant: str, rate: float, count: int = 1) -> None:
        retry_after = await self._control.take_creation_tokens(tenant, rate, count)
        if retry_after is not None:
            raise RateLimitedError(tenant, rate, retry_after)


class Platform:
    """See the module docstring. Create with ``await Platform.open(data_dir)``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        engine_store: EngineStore,
        engine_config: EngineConfig,
        backends: dict[str, SandboxBackend],
        control: ControlStore,
        artifacts: ArtifactStore,
        cache_options: Mapping[str, Any],
        disk_cache: DiskArtifactCache | None = None,
        shared_kv: PostgresKVBackend | None = None,
        worker: bool = True,
        tenant_refresh_seconds: float | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.control = control
        self.artifacts = artifacts
        self.disk_cache = disk_cache
        """Local copies of artifacts fetched from a shared store (None with SQLite)."""
        self.worker = worker
        """Whether this platform's engine claims and runs instances (False: API only)."""
        self._tenant_refresh_seconds = tenant_refresh_seconds
        self.backends = backends  # may be _LazyBackends: keep the object, not a copy
        self.logs = InstanceLogs()
        self._tenants: dict[str, Tenant] = {}
        self._bindings: dict[str, Bindings] = {}
        self.shared_kv = shared_kv
        """``env.kv`` in the shared database (None with SQLite: a file per tenant in ``data_dir``)."""
        self._rates: _RateLimiter | _SharedRateLimiter = (
            _SharedRateLimiter(control) if isinstance(control, PostgresControlStore) else _RateLimiter()
        )
        self.cache = WarmCache(self.backends, self._prepare, **cache_options)
        self.executor = TenantExecutor(
            tenant=self._tenant, bindings=self._bindings_for, cache=self.cache, logs=self.logs
        )
        self.engine = Engine(
            engine_store,
            self.executor,
            config=engine_config,
            key_limit=self._concurrency_limit,
            preferred_affinity=self.warm_affinity,
            worker=worker,
        )
        self._background: set[asyncio.Task[None]] = set()
        """Precompilations started by deploy (cancelled by aclose)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._started = False

    @classmethod
    async def open(
        cls,
        data_dir: str | Path,
        *,
        db: str | None = None,
        schema: str = "tenantflow",
        worker: bool = True,
        engine_config: EngineConfig | None = None,
        backends: Mapping[str, SandboxBackend] | None = None,
        cache_options: Mapping[str, Any] | None = None,
        artifact_cache_bytes: int = 1024 * MiB,
        tenant_refresh_seconds: float = 5.0,
        start: bool = True,
    ) -> Platform:
        """Open (creating on first use) a platform in ``data_dir``, or on the PostgreSQL ``db``.

        ``backends`` defaults to the real ``wasm`` and ``restricted`` backends, created lazily on
        first use by a tenant that needs them. With ``db`` (``postgresql://...``) every store is in
        that database under the schema prefix ``schema``, and ``data_dir`` holds local caches only
        (at most ``artifact_cache_bytes`` of artifacts). ``worker=False``: API only, runs nothing.
        A database that cannot be reached or used raises ``DatabaseUnavailableError``.
        """
        directory = Path(data_dir)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        config = engine_config or EngineConfig()
        disk_cache: DiskArtifactCache | None = None
        shared_kv: PostgresKVBackend | None = None
        refresh: float | None = None
        if db is None:
            control: ControlStore = await SqliteControlStore.open(directory / "control.db")
            artifacts: ArtifactStore = await SqliteArtifactStore.open(directory / "artifacts.db")
            engine_store: EngineStore = SqliteStore(directory / "engine.db", config)
        else:
            control, artifacts, engine_store, shared_kv = await _open_postgres(db, schema, config)
            disk_cache = await DiskArtifactCache.open(
                directory / "artifact-cache", max_bytes=artifact_cache_bytes
            )
            refresh = tenant_refresh_seconds
        try:
            platform = cls(
                directory,
                engine_store=engine_store,
                engine_config=config,
                backends=dict(backends) if backends is not None else _LazyBackends(),
                control=control,
                artifacts=artifacts,
                cache_options=cache_options or {},
                disk_cache=disk_cache,
                shared_kv=shared_kv,
                worker=worker,
                tenant_refresh_seconds=refresh,
            )
            for tenant in await control.list_tenants():
                platform._tenants[tenant.id] = tenant
        except BaseException:
            closers = [engine_store.aclose(), artifacts.aclose(), control.aclose()]
            if shared_kv is not None:
                closers.append(shared_kv.aclose())
            await _close_all(*closers)
            raise
        if start:
            await platform.start()
        return platform

    async def start(self) -> None:
        self._started = True
        await self.engine.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="tenantflow-cache-sweeper")
        if self._tenant_refresh_seconds is not None:
            self._refresher = asyncio.create_task(
                self._refresh_loop(self._tenant_refresh_seconds), name="tenantflow-tenant-refresh"
            )

    async def aclose(self) -> None:
        for pending in list(self._background):
            pending.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for task in (self._sweeper, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._refresher = None
        if self._started:
            await self.engine.aclose()
        else:  # never started (start=False): the store may still be open (PostgreSQL opens eagerly)
            await self.engine.store.aclose()
        await self.cache.aclose()
        for bindings in self._bindings.values():
            close = getattr(bindings, "close", None)
            if close is not None:
                close()
        self._bindings.clear()
        for backend in self.backends.values():
            await backend.aclose()
        if self.shared_kv is not None:
            await self.shared_kv.aclose()
        await self.artifacts.aclose()
        await self.control.aclose()

    async def __aenter__(self) -> Platform:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- authentication ------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        info = await self.control.authenticate(token)
        if info is None:
            raise AuthenticationError("unknown or revoked token")
        return Principal(info.tenant, info.id)

    async def ensure_operator_token(self, secret: str | None = None) -> str | None:
        """Register ``secret`` as an operator token, or create one if none exists.

        Returns a newly generated secret (to show once), or None when nothing was generated.
        """
        if secret:
            await self.control.import_token(None, secret, "operator (from environment)")
            return None
        if any(t.revoked_at is None for t in await self.control.list_tokens(operators=True)):
            return None
        _, generated = await self.control.create_token(None, "operator (generated)")
        return generated

    # -- tenants -------------------------------------------------------------------------------

    async def create_tenant(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        display_name: str = "",
        policy: Mapping[str, Any] | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant and its first token (the secret is returned once)."""
        _require_operator(principal)
        validate_tenant_id(tenant_id)
        parsed = TenantPolicy.from_json(dict(policy or {}))
        self._check_bindings(parsed, None)
        tenant = await self.control.create_tenant(tenant_id, display_name or tenant_id, parsed)
        self._tenants[tenant.id] = tenant
        _, secret = await self.control.create_token(tenant.id, "created with the tenant")
        return tenant, secret

    async def list_tenants(self, principal: Principal) -> list[Tenant]:
        if principal.is_operator:
            return await self.control.list_tenants()
        return [await self.get_tenant(principal, principal.tenant or "")]

    async def get_tenant(self, principal: Principal, tenant_id: str) -> Tenant:
        self._authorize(principal, tenant_id)
        return await self._tenant(tenant_id)

    async def update_policy(self, principal: Principal, tenant_id: str, changes: Mapping[str, Any]) -> Tenant:
        _require_operator(principal)
        current = await self._tenant(tenant_id)
        policy = TenantPolicy.from_json(dict(changes), base=current.policy)
        self._check_bindings(policy, current.policy)
        tenant = await self.control.update_tenant(tenant_id, policy=policy)
        self._policy_changed(tenant)
        return tenant

    async def set_tenant_status(self, principal: Principal, tenant_id: str, status: str) -> Tenant:
        """Suspend (pausing its live instances) or re-activate (resuming its paused instances)."""
        _require_operator(principal)
        if status not in ("active", "suspended"):
            raise InvalidRequestError("status", f"must be 'active' or 'suspended', got {status!r}")
        await self._tenant(tenant_id)
        tenant = await self.control.update_tenant(tenant_id, status=status)
        self._policy_changed(tenant)
        wanted, operation = (
            (_LIVE, self.engine.pause) if status == "suspended" else (("paused",), self.engine.resume)
        )
        cursor = None
        while True:
            page = await self.engine.list(tenant_id, status=list(wanted), cursor=cursor, limit=500)
            for instance in page.items:
                with contextlib.suppress(InvalidTransitionError, InstanceNotFoundError):
                    await operation(tenant_id, instance.id)
            cursor = page.cursor
            if cursor is None:
                return tenant

    async def create_token(
        self, principal: Principal, tenant_id: str | None, label: str = ""
    ) -> tuple[TokenInfo, str]:
        """A new token for a tenant (operators, or the tenant itself), or an operator token."""
        if tenant_id is None:
            _require_operator(principal)
        else:
            self._authorize(principal, tenant_id)
            await self._tenant(tenant_id)
        return await self.control.create_token(tenant_id, label)

    async def list_tokens(self, principal: Principal, tenant_id: str | None) -> list[TokenInfo]:
        if tenant_id is None:
            _require_operator(principal)
            return await self.control.list_tokens(operators=True)
        self._authorize(principal, tenant_id)
        return await self.control.list_tokens(tenant_id)

    async def revoke_token(self, principal: Principal, token_id: str) -> None:
        await self.control.revoke_token(token_id, tenant=principal.tenant)

    # -- code ----------------------------------------------------------------------------------

    async def deploy(
        self,
        principal: Principal,
        tenant_id: str,
        source: Path | bytes,
        *,
        filename: str | None = None,
        workflow: str | None = None,
        aliases: Sequence[str] = (),
        move_latest: bool = True,
    ) -> UploadResult:
        """Upload a bundle as a new (or the identical existing) version of a tenant's workflow."""
        self._authorize(principal, tenant_id)
        await self._tenant(tenant_id)
        uploader = principal.token_id or ("operator" if principal.is_operator else tenant_id)
        result = await self.artifacts.upload(
            tenant_id, source, uploader=uploader, workflow=workflow, filename=filename,
            move_latest=move_latest, aliases=tuple(aliases),
        )  # fmt: skip
        self._precompile(tenant_id, result.version.digest)
        return result

    def _precompile(self, tenant_id: str, digest: str) -> None:
        """Prepare the tenant backend's derived form of a new version in the background, so that its
        first wake-up only loads it (no compile on the critical path). Failures are only logged: the
        first wake-up prepares it again and reports the error on the instance."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return

        async def prepare() -> None:
            try:
                backend = self.backends[tenant.policy.backend]
                key = CacheKey(tenant_id, digest, backend.name, tenant.policy.sandbox_limits)
                await self._prepare(key, backend)
            except Exception as exc:
                log.info("preparing %s for tenant %s failed (%s); its first wake-up will report it",
                         digest, tenant_id, exc)  # fmt: skip

        task = asyncio.get_running_loop().create_task(prepare(), name=f"tenantflow-precompile-{digest[:19]}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def list_workflows(self, principal: Principal, tenant_id: str) -> list[Any]:
        self._authorize(principal, tenant_id)
        return list(await self.artifacts.list_workflows(tenant_id))

    async def list_versions(self, principal: Principal, tenant_id: str, workflow: str) -> list[Version]:
        self._authorize(principal, tenant_id)
        return list(await self.artifacts.list_versions(tenant_id, workflow))

    async def resolve_version(
        self, principal: Principal, tenant_id: str, workflow: str, ref: str | int
    ) -> Version:
        self._authorize(principal, tenant_id)
        try:
            return await self.artifacts.resolve(tenant_id, workflow, ref)
        except (VersionNotFoundError, ArtifactError) as exc:
            raise NotFoundError(f"workflow {workflow!r} has no version {ref!r}") from exc

    async def set_alias(
        self, principal: Principal, tenant_id: str, workflow: str, alias: str, ref: str | int
    ) -> AliasRecord:
        self._authorize(principal, tenant_id)
        return await self.artifacts.set_alias(tenant_id, workflow, alias, ref, actor=_actor(principal))

    async def list_aliases(self, principal: Principal, tenant_id: str, workflow: str) -> list[AliasRecord]:
        self._authorize(principal, tenant_id)
        return list(await self.artifacts.list_aliases(tenant_id, workflow))

    async def alias_history(
        self, principal: Principal, tenant_id: str, workflow: str, alias: str
    ) -> list[Any]:
        self._authorize(principal, tenant_id)
        return list(await self.artifacts.alias_history(tenant_id, workflow, alias))

    async def rollback_alias(
        self, principal: Principal, tenant_id: str, workflow: str, alias: str
    ) -> AliasRecord:
        self._authorize(principal, tenant_id)
        return await self.artifacts.rollback_alias(tenant_id, workflow, alias, actor=_actor(principal))

    # -- instances -----------------------------------------------------------------------------

    async def create_instance(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str,
        params: Any = None,
        *,
        instance_id: str | None = None,
        version: str | int = "latest",
    ) -> Instance:
        return (
            await self.create_instances(
                principal, tenant_id, workflow, [(instance_id, params)], version=version
            )
        )[0]

    async def create_instances(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str,
        items: Sequence[tuple[str | None, Any]],
        *,
        version: str | int = "latest",
    ) -> list[Instance]:
        """Create instances pinned to the version ``version`` resolves to now (all or nothing)."""
        self._authorize(principal, tenant_id)
        tenant = await self._tenant(tenant_id)
        if tenant.status != "active":
            raise TenantSuspendedError(f"tenant {tenant_id!r} is suspended; new instances are refused")
        resolved = await self.resolve_version(principal, tenant_id, workflow, version)
        route = Route(tenant_id, workflow, resolved.digest)
        await self._rates.take(tenant_id, tenant.policy.creation_rate, len(items))
        requests = [
            CreateRequest(
                workflow,
                wrap(route, params),
                id=instance_id,
                concurrency_key=tenant_id,
                retention_ms=tenant.policy.retention_seconds * 1000,
                affinity=affinity_tag(tenant_id, resolved.digest),
            )
            for instance_id, params in items
        ]
        try:
            return await self.engine.create_batch(tenant_id, requests)
        except InstanceExistsError as exc:
            raise ConflictError(str(exc)) from None
        except EngineValidationError as exc:
            raise InvalidRequestError(exc.field, exc.message) from None

    async def get_instance(
        self, principal: Principal, tenant_id: str, workflow: str, instance_id: str
    ) -> Instance:
        """The instance with its params and output unwrapped (bodies only)."""
        instance = await self._instance(principal, tenant_id, workflow, instance_id)
        return _public(instance)

    async def describe_instance(
        self, principal: Principal, tenant_id: str, workflow: str, instance_id: str
    ) -> dict[str, Any]:
        """The Cloudflare-shaped record with ``steps[]`` (bodies only), plus the pinned version and logs."""
        instance = await self._instance(principal, tenant_id, workflow, instance_id)
        record = await self.engine.describe(tenant_id, instance_id, payload=body_of)
        record["versionId"] = _route_of(instance).version
        record["logs"] = self.logs.get((tenant_id, instance_id))
        return record

    async def list_instances(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str | None,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        created_after: int | None = None,
        created_before: int | None = None,
        descending: bool = False,
    ) -> tuple[list[Instance], str | None]:
        self._authorize(principal, tenant_id)
        try:
            page = await self.engine.list(
                tenant_id, workflow=workflow, status=status, cursor=cursor, limit=limit,
                created_after=created_after, created_before=created_before, descending=descending,
            )  # fmt: skip
        except EngineValidationError as exc:
            raise InvalidRequestError(exc.field, exc.message) from None
        return [_public(i) for i in page.items], page.cursor

    async def control_instance(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str,
        instance_id: str,
        action: str,
        *,
        from_step: Mapping[str, Any] | None = None,
    ) -> Instance:
        """pause | resume | terminate | restart (optionally ``from_step`` ``{name, count, type}``)."""
        await self._instance(principal, tenant_id, workflow, instance_id)
        try:
            if action == "pause":
                instance = await self.engine.pause(tenant_id, instance_id)
            elif action == "resume":
                if (await self._tenant(tenant_id)).status != "active":
                    raise TenantSuspendedError(
                        f"tenant {tenant_id!r} is suspended; its instances stay paused"
                    )
                instance = await self.engine.resume(tenant_id, instance_id)
            elif action == "terminate":
                instance = await self.engine.terminate(tenant_id, instance_id)
            elif action == "restart":
                instance = await self.engine.restart(tenant_id, instance_id, _restart_from(from_step))
            else:
                raise InvalidRequestError(
                    "status", f"must be pause, resume, terminate or restart, got {action!r}"
                )
        except InvalidTransitionError as exc:
            raise ConflictError(str(exc)) from None
        except EngineValidationError as exc:
            raise InvalidRequestError(exc.field, exc.message) from None
        return _public(instance)

    async def send_event(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str,
        instance_id: str,
        event_type: str,
        payload: Any,
    ) -> int:
        instance = await self._instance(principal, tenant_id, workflow, instance_id)
        try:
            return await self.engine.send_event(
                tenant_id, instance_id, event_type, wrap(_route_of(instance), payload)
            )
        except InvalidTransitionError as exc:
            raise ConflictError(str(exc)) from None
        except EngineValidationError as exc:
            raise InvalidRequestError(exc.field, exc.message) from None

    async def delete_instance(
        self, principal: Principal, tenant_id: str, workflow: str, instance_id: str
    ) -> None:
        await self._instance(principal, tenant_id, workflow, instance_id)
        await self.engine.delete(tenant_id, instance_id)
        self.logs.drop((tenant_id, instance_id))

    async def migrate(
        self,
        principal: Principal,
        tenant_id: str,
        workflow: str,
        instance_ids: Sequence[str],
        version: str | int,
    ) -> list[Instance]:
        """Operator only: re-pin unfinished instances to another version of their workflow."""
        _require_operator(principal)
        target = await self.resolve_version(principal, tenant_id, workflow, version)
        migrated = []
        for instance_id in instance_ids:
            instance = await self._instance(principal, tenant_id, workflow, instance_id)
            route, body = unwrap(instance.params)
            new_route = Route(route.tenant, route.workflow, target.digest)
            try:
                migrated.append(
                    _public(await self.engine.replace_params(tenant_id, instance_id, wrap(new_route, body)))
                )
            except InvalidTransitionError as exc:
                raise ConflictError(str(exc)) from None
        return migrated

    async def version_in_use(self, tenant_id: str, digest: str) -> bool:
        """Whether an unfinished instance of ``tenant_id`` is pinned to ``digest`` (for version deletion)."""
        cursor = None
        while True:
            page = await self.engine.list(tenant_id, status=[*_LIVE, "paused"], cursor=cursor, limit=500)
            if any(_route_of(i).version == digest for i in page.items):
                return True
            cursor = page.cursor
            if cursor is None:
                return False

    async def instance_counts(
        self, principal: Principal, tenant_id: str | None = None, workflow: str | None = None
    ) -> dict[str, int]:
        """Instances by status: of one tenant (and workflow), or of every tenant for an operator."""
        if tenant_id is None:
            _require_operator(principal)
        else:
            self._authorize(principal, tenant_id)
        return await self.engine.count(tenant_id, workflow=workflow)

    def metrics(self) -> dict[str, Any]:
        stats = self.cache.stats
        claims = int(getattr(self.engine, "claims", 0))
        preferred = int(getattr(self.engine, "claims_preferred", 0))
        data: dict[str, Any] = {
            "cache": {
                **stats.to_json(),
                "entries": len(self.cache),
                "sandboxes": self.cache.sandboxes,
                "hit_rate": _ratio(stats.hits, stats.hits + stats.misses),
            },
            "affinity": {
                "claims": claims,
                "claims_preferred": preferred,
                "preferred_rate": _ratio(preferred, claims),
            },
            "invocations": self.executor.invocations,
            "runs_started": self.engine.runs_started,
            "steps_committed": self.engine.steps_committed,
            "worker": self.worker,
        }
        if self.disk_cache is not None:
            data["artifact_cache"] = {
                **self.disk_cache.stats.to_json(),
                "files": len(self.disk_cache),
                "bytes": self.disk_cache.size,
            }
        return data

    def warm_affinity(self) -> set[str]:
        """The affinity labels of the versions the warm cache holds (what this worker prefers)."""
        return {affinity_tag(key.tenant, key.digest) for key in self.cache.warm_keys()}

    # -- internals -----------------------------------------------------------------------------

    def _check_bindings(self, policy: TenantPolicy, before: TenantPolicy | None) -> None:
        """On a PostgreSQL platform, refuse a policy that newly grants ``db`` (see ``DB_ON_POSTGRES``).

        A policy that already granted it (written before, or through an embedded platform) may
        still be changed in other fields; its ``env.db`` calls fail with the same reason."""
        if not isinstance(self.control, PostgresControlStore) or "db" not in policy.bindings:
            return
        if before is None or "db" not in before.bindings or policy.bindings != before.bindings:
            from ._bindings import DB_ON_POSTGRES

            raise InvalidRequestError(
                "policy.bindings", f"cannot grant 'db' here. {DB_ON_POSTGRES}; grant kv instead"
            )

    def _authorize(self, principal: Principal, tenant_id: str) -> None:
        if not principal.is_operator and principal.tenant != tenant_id:
            raise NotFoundError(f"tenant {tenant_id!r} not found")

    async def _tenant(self, tenant_id: str) -> Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = await self.control.get_tenant(tenant_id)
            self._tenants[tenant_id] = tenant
        return tenant

    async def _instance(
        self, principal: Principal, tenant_id: str, workflow: str, instance_id: str
    ) -> Instance:
        self._authorize(principal, tenant_id)
        try:
            instance = await self.engine.get(tenant_id, instance_id)
        except (InstanceNotFoundError, EngineValidationError):
            raise NotFoundError(f"instance {instance_id!r} not found") from None
        if instance.workflow != workflow:
            raise NotFoundError(f"instance {instance_id!r} not found")
        return instance

    def _policy_changed(self, tenant: Tenant) -> None:
        self._tenants[tenant.id] = tenant
        self.cache.invalidate(tenant.id)
        bindings = self._bindings.pop(tenant.id, None)
        close = getattr(bindings, "close", None)
        if close is not None:
            close()

    def _concurrency_limit(self, key: str) -> int:
        tenant = self._tenants.get(key)
        return tenant.policy.max_concurrent_instances if tenant else 1

    def _bindings_for(self, tenant: Tenant) -> Bindings | None:
        policy = tenant.policy
        if not policy.bindings:
            return None
        bindings = self._bindings.get(tenant.id)
        if bindings is None:
            from ._bindings import BindingPolicy, TenantBindings

            bindings = TenantBindings(
                tenant.id,
                BindingPolicy(
                    granted=policy.bindings,
                    fetch_allowlist=policy.fetch_allowlist,
                    secrets=policy.secrets,
                    storage_quota_bytes=policy.storage_quota_bytes,
                    fetch_timeout_seconds=policy.fetch_timeout_seconds,
                    fetch_max_response_bytes=policy.fetch_max_response_bytes,
                ),
                self.data_dir,
                shared_kv=self.shared_kv,
            )
            self._bindings[tenant.id] = bindings
        return bindings

    async def _prepare(self, key: CacheKey, backend: SandboxBackend) -> Prepared:
        store, disk = self.artifacts, self.disk_cache
        if disk is None:
            files = await store.read_bundle(key.digest)
            derived = await store.get_derived(key.digest, backend.name, backend.version)
        else:
            files = await disk.bundle(key.digest, lambda: store.read_bundle(key.digest))
            derived = await disk.derived(
                key.digest, backend.name, backend.version,
                lambda: store.get_derived(key.digest, backend.name, backend.version),
            )  # fmt: skip
        bundle = Bundle(key.digest, dict(files.files), files.manifest.entry)
        if derived is None:
            derived = await backend.prepare(bundle)
            await store.put_derived(key.digest, backend.name, backend.version, derived)
            if disk is not None:
                await disk.put_derived(key.digest, backend.name, backend.version, derived)
        return Prepared(bundle, derived)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.cache.sweep()

    async def _refresh_loop(self, seconds: float) -> None:
        """Pick up tenants and policy changes made through other processes sharing the database."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.refresh_tenants()
            except Exception:
                log.exception("re-reading tenants failed; retrying in %.0f s", seconds)

    async def refresh_tenants(self) -> None:
        """Re-read every tenant from the control store; changed ones drop their warm sandboxes."""
        for tenant in await self.control.list_tenants():
            if self._tenants.get(tenant.id) != tenant:
                self._policy_changed(tenant)


class _LazyBackends(dict[str, SandboxBackend]):
    """The real backends, created on first use (the wasm runner builds itself then)."""

    def __missing__(self, name: str) -> SandboxBackend:
        backend = create_backend(name)
        self[name] = backend
        return backend


def affinity_tag(tenant: str, digest: str) -> str:
    """The affinity label of instances of ``tenant`` pinned to the version ``digest``."""
    return f"{tenant}@{digest}"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return "(an unparsable DSN)"


async def _open_postgres(
    dsn: str, schema: str, config: EngineConfig
) -> tuple[PostgresControlStore, ArtifactStore, EngineStore, PostgresKVBackend]:
    """The three stores in ``dsn`` under the schema prefix ``schema``, migrated and connected, and
    the shared ``env.kv`` (in the control schema, whose migrations create its table)."""
    shown = redact_dsn(dsn)
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise DatabaseUnavailableError(shown, "expected a DSN like postgresql://user@host:5432/dbname")
    check_schema_name(schema)
    if len(schema) > 53:  # room for the longest suffix, "_artifacts"
        raise ValueError(f"PostgreSQL schema prefix {schema!r} is too long: at most 53 characters")
    asyncpg = import_asyncpg()
    opened: list[Any] = []
    try:
        control = await PostgresControlStore.open(dsn, schema=f"{schema}_control")
        opened.append(control)
        artifacts = await PostgresArtifactStore.open(dsn, schema=f"{schema}_artifacts")
        opened.append(artifacts)
        engine_store = PostgresStore(dsn, config, schema=f"{schema}_engine")
        await engine_store.open()  # opened now, so a bad database fails here and clearly
        opened.append(engine_store)
        from ._bindings._kv_pg import PostgresKVBackend

        shared_kv = await PostgresKVBackend.open(dsn, schema=f"{schema}_control")
        opened.append(shared_kv)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        await _close_all(*(store.aclose() for store in reversed(opened)))
        raise DatabaseUnavailableError(shown, str(exc) or type(exc).__name__) from exc
    except BaseException:
        await _close_all(*(store.aclose() for store in reversed(opened)))
        raise
    return control, artifacts, engine_store, shared_kv


async def _close_all(*closers: Any) -> None:
    for closer in closers:
        try:
            await closer
        except Exception:
            log.exception("closing a store failed")


def _require_operator(principal: Principal) -> None:
    if not principal.is_operator:
        raise PermissionDeniedError("this operation needs an operator token")


def _actor(principal: Principal) -> str:
    return principal.token_id or ("operator" if principal.is_operator else str(principal.tenant))


def _route_of(instance: Instance) -> Route:
    return unwrap(instance.params, what="instance params")[0]


def _public(instance: Instance) -> Instance:
    """The instance as clients see it: params and output are bodies, never envelopes."""
    from dataclasses import replace

    return replace(instance, params=body_of(instance.params), output=body_of(instance.output))


def _restart_from(value: Mapping[str, Any] | None) -> RestartFrom | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise InvalidRequestError("from", "must be {name, count?, type?}")
    count = value.get("count", 1)
    step_type = value.get("type", "step")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidRequestError("from.count", f"must be a positive integer, got {count!r}")
    if step_type not in ("step", "sleep", "waitForEvent"):
        raise InvalidRequestError("from.type", f"must be step, sleep or waitForEvent, got {step_type!r}")
    return RestartFrom(value["name"], count, step_type)


def default_data_dir() -> Path:
    return Path(os.environ.get("TENANTFLOW_DATA_DIR", Path.home() / ".local" / "share" / "tenantflow"))


__all__ = ["OPERATOR", "Platform", "Principal", "Status", "default_data_dir"]
