"""The ``restricted`` sandbox backend: RestrictedPython-compiled tenant code in rlimited workers.

Lighter than ``wasm`` and weaker: the policy (``_policy.py``, ``_modules.py``) narrows what tenant
code can reach, and worker processes with rlimits, an empty environment and a parent-side
wall-clock kill (``_worker.py``, ``_pool.py``) bound what it can consume.
"""

from ._backend import RestrictedBackend, RestrictedSandbox
from ._pool import PoolBusyError, PoolConfig

__all__ = ["PoolBusyError", "PoolConfig", "RestrictedBackend", "RestrictedSandbox"]
