"""What the fuzz targets share: decoding fuzz bytes into choices, and the atheris entry point.

A target is a function ``run_one(data: bytes)`` that raises (AssertionError for a broken oracle)
or crashes the process when turboloop misbehaves.  Decoding is plain Python, so the pytest replay
of saved inputs (``test_fuzz_regressions.py``) needs no atheris; atheris only mutates the bytes.
"""

from __future__ import annotations

import random
import sys
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


class Source:
    """Draws choices from fuzz bytes; once they run out every draw is 0, so any input is valid."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def exhausted(self) -> bool:
        return self._pos >= len(self._data)

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        self._pos += 1
        return self._data[self._pos - 1]

    def below(self, n: int) -> int:
        """An int in [0, n); two bytes when n > 256."""
        value = self.byte()
        if n > 256:
            value = value << 8 | self.byte()
        return value % n

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def flag(self) -> bool:
        return self.byte() & 1 == 1

    def blob(self, max_len: int) -> bytes:
        """Bytes of a drawn length up to max_len: short ones copied from the input, longer ones a
        repeated byte (so a short input can still ask for a big write)."""
        length = self.pick((0, 1, 2, 7, 100, 1000, 4096, 65536, 300_000))
        length = min(length, max_len)
        if length <= 100:
            chunk = self._data[self._pos : self._pos + length]
            self._pos += len(chunk)
            return chunk.ljust(length, b"\x00")
        return bytes([self.byte()]) * length


def seeded_inputs(seed: int, count: int, size: int = 200) -> list[bytes]:
    """Reproducible pseudo-random inputs: the fixed-seed runs in pytest use these."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, size)) for _ in range(count)]


def fuzz_main(run_one: Callable[[bytes], None]) -> None:
    """Run ``run_one`` under atheris (libFuzzer's options come from sys.argv), with coverage
    feedback from every Python function loaded so far (asyncio's and turboloop's included)."""
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, run_one)
    atheris.Fuzz()
