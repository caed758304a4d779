"""A least-recently-used map that several threads may use at once.

The verdict caches are shared by every session of a gateway, and both doors may decide on
worker threads: a get / move-to-end / evict sequence on a bare ``OrderedDict`` races (one
thread evicts the key another is moving: ``KeyError``).

Writes (``put`` and its evictions, ``clear``) hold a lock. Reads do not: a hit is the hot path
of every repeated statement, and each step of a read is one call into the C ``OrderedDict``
(``get``, then ``move_to_end``), which runs whole under the GIL (keys are tuples of str,
frozenset, None: hashing and comparing them runs no Python code). The one race left is a key
evicted between the two steps: ``move_to_end`` then raises ``KeyError``, and the value already
read is still the right one (an entry is never changed in place), so the read returns it and
the entry is simply gone, as if evicted just after.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    __slots__ = ("_data", "_lock", "maxsize", "peek", "touch")

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        # The two steps of a read, as the C methods themselves: a hot caller (Decider.decide) calls
        # them directly, sparing a Python frame per hit. ``touch`` may raise KeyError (see above).
        self.peek = self._data.get
        self.touch = self._data.move_to_end
        self._lock = threading.Lock()
        self.maxsize = maxsize

    def get(self, key: K) -> V | None:
        value = self.peek(key)
        if value is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs more than the rest of a hit)
                self.touch(key)
            except KeyError:
                pass  # evicted by another thread since the peek: the value read is still right
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            data = self._data
            if key in data:
                data.move_to_end(key)  # (a new key is inserted last already)
            data[key] = value
            while len(data) > self.maxsize:
                data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
