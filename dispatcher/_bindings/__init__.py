"""The tenant bindings, host side: ``env.kv``, ``env.db``, ``env.fetch``, ``env.secrets``.

The dispatcher builds one ``TenantBindings`` per tenant from its policy (``BindingPolicy``) and
routes the guest's ``env.*`` host calls to ``TenantBindings.call``. Every check lives here; the
guest SDK only forwards names and JSON arguments. Refusals raise ``sandbox.HostCallError`` whose
``type_name`` is what the tenant's code catches (``BindingNotGranted``, ``FetchDenied``,
``QuotaExceeded``, ``KeyError``, ``TypeError``, ``ValueError``, ``TimeoutError``, ...).
"""

from ._policy import KNOWN_BINDINGS, BindingPolicy
from ._tenant import TenantBindings

__all__ = ["KNOWN_BINDINGS", "BindingPolicy", "TenantBindings"]
