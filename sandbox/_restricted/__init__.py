"""The ``restricted`` sandbox backend: RestrictedPython-compiled tenant code in rlimited workers.

Lighter than ``wasm`` and weaker: the policy (``_policy.py``, ``_modules.py``) narrows what tenant
code can reach, and worker processes with rlimits, an empty environment and a parent-side
wall-clock kill (``_worker.py``, ``_pool.py``) bound what it can consume. The tenant SDK is the
shared one (``sandbox/_guest``), wired in by ``_runtime.py``.

What tenant code cannot do here (RestrictedPython's rules and this policy), beyond the wasm backend:

* names and attributes starting with ``_`` (so no ``super().__init__()``, no dunder methods other
  than ``__init__``, ``__eq__``/``__ne__``/``__lt__``/``__le__``/``__gt__``/``__ge__``,
  ``__contains__``); ``nonlocal``; ``async``; ``except*``; ``eval``/``exec``;
* ``str.format``/``format_map`` and ``string.Formatter`` (use f-strings or ``%``);
* ``type``, ``object``, ``id``, ``hash``, ``vars``, ``dir``, ``globals``, ``open``, ``input``;
* attribute or item assignment on objects other than dicts, lists and instances of the tenant's
  own classes (for example ``decimal.getcontext().prec = 5``: use ``decimal.localcontext(prec=5)``);
* modules outside the allowlist of ``_modules.py`` and the bundle's own modules; only declared
  names of each module;
* ``range`` of more than 10 million items.

Limits: CPU (``ITIMER_PROF`` per invocation, ``RLIMIT_CPU`` as the kernel's backstop), memory
(``RLIMIT_AS``; any ``MemoryError``, even a caught one, ends the worker and is reported as the
memory limit), recursion (a ``RecursionError``, even a caught one, is the recursion limit), wall
clock (the parent kills the worker's process group), output, result size and host calls (the
shared SDK and the parent). None of them can be caught by tenant code.
"""

from ._backend import RestrictedBackend, RestrictedSandbox
from ._pool import PoolBusyError, PoolConfig

__all__ = ["PoolBusyError", "PoolConfig", "RestrictedBackend", "RestrictedSandbox"]
