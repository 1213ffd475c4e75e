"""The objects one simulator instance holds (responses, files, batches): bounded, in memory, and its own.

Azure keeps a stored response, a file or a batch in the one resource that
created it; a second simulator does not know the id. That is the property a
gateway's affinity has to respect, so each simulator has its own stores and
nothing is shared between instances.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def new_id(prefix: str, length: int = 32) -> str:
    """An id in the style of the service: `resp_…`, `file-…`, `batch_…`."""
    hexes = (uuid.uuid4().hex + uuid.uuid4().hex)[:length]
    return prefix + hexes


class Store(Generic[T]):
    """Objects by id, oldest first; past `size` the oldest is forgotten, as a bound on a long-running simulator."""

    __slots__ = ("_items", "_size")

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, T] = OrderedDict()
        self._size = size

    def put(self, key: str, item: T) -> T:
        self._items[key] = item
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return item

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def pop(self, key: str) -> T | None:
        return self._items.pop(key, None)

    def values(self) -> list[T]:
        """Oldest first."""
        return list(self._items.values())

    def clear(self) -> None:
        self._items.clear()
