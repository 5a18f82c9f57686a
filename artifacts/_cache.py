"""A bounded least-recently-used map: the store's in-memory caches.

Each entry has a cost (its size in bytes for bundles and derived forms, 1 for a resolved version);
the sum of costs never exceeds ``capacity``. An entry costing more than the whole capacity is not
kept at all, and capacity 0 keeps nothing. Not thread-safe: callers hold their own lock or stay on
one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """Least-recently-used map bounded by the total cost of its entries."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("LRU capacity must be >= 0")
        self.capacity = capacity
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._cost = 0

    @property
    def cost(self) -> int:
        """Sum of the costs of the entries held now (never above ``capacity``)."""
        return self._cost

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        """The value for ``key`` (marked most recently used), or None."""
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, cost: int = 1) -> None:
        """Insert or replace; evicts least recently used entries until the bound holds."""
        self.discard(key)
        if cost > self.capacity:
            return
        self._items[key] = (value, cost)
        self._cost += cost
        while self._cost > self.capacity:
            _, (_, dropped) = self._items.popitem(last=False)
            self._cost -= dropped

    def discard(self, key: K) -> None:
        """Forget ``key`` if present."""
        found = self._items.pop(key, None)
        if found is not None:
            self._cost -= found[1]

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self._cost = 0
