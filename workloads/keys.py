"""Key choosers: which of ``n`` keys the next operation touches, uniform or zipfian (hot keys).

Pure and seeded: the same seed gives the same sequence, so a workload's key stream can be
replayed. The zipfian chooser is YCSB's (Gray et al., "Quickly generating billion-record
synthetic databases", SIGMOD 1994): theta 0.99 by default, the zeta constant precomputed once per
(n, theta) and shared by every chooser; rank 0 is the hottest key.

    chooser = key_chooser("zipfian", 100, seed="user-3")
    index = chooser.next()               # 0 most often, then 1, ...
    name = key_name("r", index)          # "r0"
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Protocol

DISTRIBUTIONS = ("uniform", "zipfian")
ZIPFIAN_THETA = 0.99


class KeyChooser(Protocol):
    n: int

    def next(self) -> int:
        """An index in ``range(n)``."""
        ...


class UniformKeys:
    """Every key equally likely."""

    def __init__(self, n: int, seed: int | str = 0) -> None:
        if n < 1:
            raise ValueError("need at least one key")
        self.n = n
        self.rng = random.Random(seed)

    def next(self) -> int:
        return self.rng.randrange(self.n)


@lru_cache(maxsize=64)
def zeta(n: int, theta: float) -> float:
    """sum_{i=1..n} 1 / i**theta: the normalising constant, O(n) once per (n, theta)."""
    return float(sum(1.0 / (i**theta) for i in range(1, n + 1)))


class ZipfianKeys:
    """P(rank i) proportional to 1 / (i + 1)**theta, drawn in O(1) (YCSB's ZipfianGenerator)."""

    def __init__(self, n: int, seed: int | str = 0, theta: float = ZIPFIAN_THETA) -> None:
        if n < 1:
            raise ValueError("need at least one key")
        if not 0 < theta < 1:
            raise ValueError("theta must be in (0, 1)")
        self.n = n
        self.theta = theta
        self.rng = random.Random(seed)
        self.zetan = zeta(n, theta)
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = zeta(2, theta) if n >= 2 else 1.0
        self.eta = (1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta2 / self.zetan) if n > 2 else 0.0
        self.half_pow_theta = 0.5**theta

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + self.half_pow_theta or self.n <= 2:
            return min(1, self.n - 1)
        rank = int(self.n * (self.eta * u - self.eta + 1.0) ** self.alpha)
        return min(rank, self.n - 1)


def key_chooser(distribution: str, n: int, seed: int | str = 0) -> KeyChooser:
    """``uniform`` or ``zipfian`` (theta 0.99) over ``range(n)``."""
    if distribution == "uniform":
        return UniformKeys(n, seed)
    if distribution == "zipfian":
        return ZipfianKeys(n, seed)
    raise ValueError(f"unknown key distribution {distribution!r}; choose from {DISTRIBUTIONS}")


def key_name(prefix: str, index: int) -> str:
    """The item key for ``index``: ``key_name("r", 7)`` -> ``"r7"``."""
    return f"{prefix}{index}"
