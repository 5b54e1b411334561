"""A checksummable byte stream for the no-byte-lost tests (test_tcp_stress, test_tls_faults).

Chunks are taken at advancing offsets of a random pool whose length matches no buffer size, and
their sizes cycle through odd values: a lost, duplicated or reordered chunk changes the digest.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterator, Sequence


class ChunkStream:
    def __init__(self, seed: int, sizes: Sequence[int]) -> None:
        self._pool = random.Random(seed).randbytes((1 << 20) + 12_345)
        self._sizes = tuple(sizes)

    def chunks(self, total: int) -> Iterator[bytes]:
        """Bytes objects adding up to ``total`` bytes."""
        offset = sent = i = 0
        limit = len(self._pool) - max(self._sizes)
        while sent < total:
            n = min(self._sizes[i % len(self._sizes)], total - sent)
            yield self._pool[offset : offset + n]
            offset = (offset + n * 31 + 17) % limit
            sent += n
            i += 1

    def digest(self, total: int) -> str:
        """The SHA-256 of the first ``total`` bytes of the stream."""
        h = hashlib.sha256()
        for chunk in self.chunks(total):
            h.update(chunk)
        return h.hexdigest()
