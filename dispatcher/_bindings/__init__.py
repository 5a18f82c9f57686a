"""The tenant bindings, host side: ``env.kv``, ``env.db``, ``env.fetch``, ``env.secrets``.

The dispatcher builds one ``TenantBindings`` per tenant from its policy (``BindingPolicy``) and
routes the guest's ``env.*`` host calls to ``TenantBindings.call``. Every check lives here; the
guest SDK only forwards names and JSON arguments. Refusals raise ``sandbox.HostCallError`` whose
``type_name`` is what the tenant's code catches (``BindingNotGranted``, ``FetchDenied``,
``QuotaExceeded``, ``KeyError``, ``TypeError``, ``ValueError``, ``TimeoutError``, ...).

Where tenant state lives: on the embedded (SQLite) platform ``env.kv`` and ``env.db`` share one
SQLite file per tenant under the data directory. On a scale-out (PostgreSQL) platform ``env.kv``
is one table every machine shares (``_kv_pg.py``), and ``env.db`` is refused, even where a policy
grants it, because its SQLite file would stay on one machine (``DB_ON_POSTGRES``).
"""

from ._policy import KNOWN_BINDINGS, BindingPolicy
from ._tenant import DB_ON_POSTGRES, TenantBindings

__all__ = ["DB_ON_POSTGRES", "KNOWN_BINDINGS", "BindingPolicy", "TenantBindings"]
