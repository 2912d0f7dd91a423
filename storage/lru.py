"""A thread-safe least-recently-used map bounded by the summed weight of its values (the server's ready answers,
the object-store reads of a DuckDB connection)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MISS = object()  # what `get` returns for a key it does not hold


class LruCache:
    """A thread-safe least-recently-used map bounded by the summed `weigh` of its values."""

    def __init__(self, max_weight: int, weigh: Callable[[Any], int]):
        self.max_weight, self._weigh = max_weight, weigh
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value, or MISS."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return MISS
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        weight = self._weigh(value)
        if weight > self.max_weight:
            return
        with self._lock:
            if (old := self._items.pop(key, None)) is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while self._weight > self.max_weight:
                self._weight -= self._items.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._items)
