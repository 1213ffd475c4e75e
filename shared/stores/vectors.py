"""The semantic cache's embedded `VectorStore` (the protocol and its values are in `stores/protocols.py`).

The embedded store keeps one numpy matrix per scope, expires entries by the
injected clock, evicts oldest first past its entry and byte budgets, and
answers a nearest-neighbour lookup at 100,000 entries in about a millisecond
by pre-filtering on 256-bit random-hyperplane signatures before the exact
cosine.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.clock import SYSTEM_CLOCK, Clock
from shared.stores.protocols import CacheEntry, Match

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from shared.stores.protocols import Vector


SIGNATURE_BITS = 256
# Below this many rows an exact scan is as fast as the signature pre-filter.
_EXACT_SCAN_ROWS = 4096
# How far below the threshold the pre-filter still lets candidates through, in cosine and in
# standard deviations of the Hamming distance: a true match is dropped with odds below 1 in 10,000.
_FILTER_COSINE_MARGIN = 0.05
_FILTER_SIGMAS = 4.0
_MAX_CANDIDATES = 2048
_NO_ROW = -1  # an entry stored without a vector: found by its exact key only


class _Scope:
    """The rows of one scope: unit vectors, their signatures and expiry times, grown by doubling."""

    __slots__ = ("bits", "expires", "keys", "n", "vectors")

    def __init__(self, dimensions: int) -> None:
        import numpy as np  # noqa: PLC0415 - numpy loads with the first cache entry, not at import

        # Scopes are many and mostly small (one per subscription, system prompt and parameters), so they
        # start at one row and double; they halve again when three quarters empty.
        self.n = 0
        self.vectors = np.zeros((1, dimensions), dtype=np.float32)
        self.bits = np.zeros((1, SIGNATURE_BITS // 64), dtype=np.uint64)
        self.expires = np.zeros(1, dtype=np.float64)
        self.keys: list[str] = []

    def append(self, key: str, vector: Vector, bits: npt.NDArray[np.uint64], expires_at: float) -> int:
        if self.n == len(self.vectors):
            self._resize(2 * len(self.vectors))
        row = self.n
        self.vectors[row] = vector
        self.bits[row] = bits
        self.expires[row] = expires_at
        self.keys.append(key)
        self.n += 1
        return row

    def remove(self, row: int) -> str | None:
        """Drop a row by moving the last one into its place; the key of the row that moved, if any."""
        last = self.n - 1
        moved = None
        if row != last:
            self.vectors[row] = self.vectors[last]
            self.bits[row] = self.bits[last]
            self.expires[row] = self.expires[last]
            self.keys[row] = self.keys[last]
            moved = self.keys[row]
        self.keys.pop()
        self.n = last
        if 4 <= 4 * self.n <= len(self.vectors):
            self._resize(len(self.vectors) // 2)
        return moved

    def _resize(self, rows: int) -> None:
        import numpy as np  # noqa: PLC0415

        def fit(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
            out[: self.n] = array[: self.n]
            return out

        self.vectors, self.bits, self.expires = fit(self.vectors), fit(self.bits), fit(self.expires)

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.bits.nbytes + self.expires.nbytes)


@dataclass(slots=True)
class _Slot:
    entry: CacheEntry
    row: int  # in its scope's arrays, or _NO_ROW
    cost: int  # bytes counted against the budget


class EmbeddedVectorStore:
    """In-process vector store for local runs and tests; state is per process."""

    kind = "embedded"

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._scopes: dict[str, _Scope] = {}
        # (scope, key) -> (entry, row), oldest first: with one TTL for every entry, the oldest
        # entry is also the one closest to expiry, so it is the one to evict.
        self._entries: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._bytes = 0
        self._planes: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the entries hold: answers, prompts, keys, and their rows of vectors and signatures."""
        return self._bytes

    def _signature(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
        """256 random-hyperplane sign bits per vector: their Hamming distance estimates the angle."""
        import numpy as np  # noqa: PLC0415

        if self._planes is None or self._planes.shape[0] != vectors.shape[-1]:
            # A fixed seed: signatures stay comparable for the life of the store.
            rng = np.random.default_rng(20240601)
            self._planes = rng.standard_normal((vectors.shape[-1], SIGNATURE_BITS)).astype(np.float32)
        signs = vectors.reshape(-1, vectors.shape[-1]) @ self._planes > 0
        packed: npt.NDArray[np.uint64] = np.packbits(signs, axis=1).view(np.uint64)
        return packed

    async def get(self, scope: str, key: str) -> CacheEntry | None:
        found = self._entries.get((scope, key))
        if found is None:
            return None
        if found.entry.expires_at <= self._clock.now():
            self._remove(scope, key)
            return None
        return found.entry

    async def nearest(self, scope: str, vector: Vector, min_similarity: float) -> Match | None:
        import numpy as np  # noqa: PLC0415

        rows = self._scopes.get(scope)
        if rows is None or rows.n == 0:
            return None
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if rows.n <= _EXACT_SCAN_ROWS:
            candidates = np.arange(rows.n)
            scores = rows.vectors[: rows.n] @ query
        else:
            candidates = self._prefilter(rows, query, min_similarity)
            if len(candidates) == 0:
                return None
            scores = rows.vectors[candidates] @ query
        scores = np.where(rows.expires[candidates] > self._clock.now(), scores, -2.0)
        best = int(np.argmax(scores))
        similarity = float(scores[best])
        if similarity < min_similarity:
            return None
        found = self._entries[(scope, rows.keys[int(candidates[best])])]
        return Match(found.entry, min(similarity, 1.0))

    def _prefilter(self, rows: _Scope, query: Vector, min_similarity: float) -> npt.NDArray[np.intp]:
        """Rows whose signature is close enough that their cosine may reach `min_similarity`."""
        import numpy as np  # noqa: PLC0415

        q = self._signature(query)[0]
        bits = rows.bits[: rows.n]
        distance = np.bitwise_count(bits[:, 0] ^ q[0]).astype(np.uint16)
        for word in range(1, bits.shape[1]):
            distance += np.bitwise_count(bits[:, word] ^ q[word])
        # For random hyperplanes P(a bit differs) = angle / pi: allow the threshold less a margin,
        # plus a few standard deviations of the binomial count.
        angle = math.acos(max(-1.0, min(1.0, min_similarity - _FILTER_COSINE_MARGIN)))
        p = angle / math.pi
        cutoff = SIGNATURE_BITS * p + _FILTER_SIGMAS * math.sqrt(SIGNATURE_BITS * p * (1 - p))
        candidates = np.flatnonzero(distance <= cutoff)
        if len(candidates) > _MAX_CANDIDATES:
            nearest = np.argpartition(distance[candidates], _MAX_CANDIDATES)[:_MAX_CANDIDATES]
            candidates = candidates[nearest]
        return candidates

    async def put(self, entry: CacheEntry, vector: Vector | None) -> None:
        ident = (entry.scope, entry.key)
        if ident in self._entries:
            self._remove(*ident)
        row, cost = (_NO_ROW, entry.size) if vector is None else self._append(entry, vector)
        self._entries[ident] = _Slot(entry, row, cost)
        self._bytes += cost
        self._evict()

    def _append(self, entry: CacheEntry, vector: Vector) -> tuple[int, int]:
        import numpy as np  # noqa: PLC0415

        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        rows = self._scopes.get(entry.scope)
        if rows is not None and rows.vectors.shape[1] != len(vec):
            # The embedder changed dimensions (a configuration change): the old vectors are useless.
            for key in list(rows.keys):
                self._remove(entry.scope, key)
            rows = None
        if rows is None:
            rows = self._scopes[entry.scope] = _Scope(len(vec))
        row = rows.append(entry.key, vec, self._signature(vec)[0], entry.expires_at)
        return row, entry.size + vec.nbytes + SIGNATURE_BITS // 8 + 8

    def _evict(self) -> None:
        """Drop expired entries, then the oldest, until within budget; the oldest come first, so this stops early."""
        now = self._clock.now()
        while self._entries:
            (scope, key), oldest = next(iter(self._entries.items()))
            over = len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            if not over and oldest.entry.expires_at > now:
                return
            self._remove(scope, key)

    async def delete(self, scope: str, key: str) -> bool:
        return self._remove(scope, key)

    def _remove(self, scope: str, key: str) -> bool:
        found = self._entries.pop((scope, key), None)
        if found is None:
            return False
        self._bytes -= found.cost
        if found.row == _NO_ROW:
            return True
        rows = self._scopes[scope]
        moved = rows.remove(found.row)
        if moved is not None:
            self._entries[(scope, moved)].row = found.row
        if rows.n == 0:
            del self._scopes[scope]
        return True

    async def close(self) -> None:
        self._scopes.clear()
        self._entries.clear()
        self._bytes = 0
