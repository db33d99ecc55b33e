"""The workloads by name: Locust user class, table shape, key space. No Locust import here.

Shared by the locustfile (which runs under gevent) and by the CLI, runner and setup (which must
not import Locust, since importing it monkey-patches the process for gevent).

    spec = WORKLOADS["register"]
    spec.user_class            # "RegisterUser"
    spec.keys(3)               # ["r0", "r1", "r2"]
    spec.key_schema            # (("k", "S", "HASH"),)
"""

from __future__ import annotations

from dataclasses import dataclass

HASH_KEY = "k"
QUERY_HASH_KEY, QUERY_RANGE_KEY = "pk", "sk"
VALUE_ATTR, VERSION_ATTR = "v", "ver"
QUERY_SORT_KEYS = 100  # sort keys 0..99 under each partition key of the query workload


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    user_class: str
    summary: str
    key_prefix: str
    default_keys: int
    key_schema: tuple[tuple[str, str, str], ...]  # (attribute, type S/N, HASH/RANGE)

    @property
    def default_table(self) -> str:
        return f"gameday-{self.name}"

    @property
    def has_range_key(self) -> bool:
        return len(self.key_schema) > 1

    def keys(self, n: int) -> list[str]:
        """The hash-key values the workload uses with ``GAMEDAY_KEYS=n``."""
        return [f"{self.key_prefix}{i}" for i in range(n)]


_HASH_ONLY = ((HASH_KEY, "S", "HASH"),)
_HASH_RANGE = ((QUERY_HASH_KEY, "S", "HASH"), (QUERY_RANGE_KEY, "N", "RANGE"))

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "register",
            "RegisterUser",
            "consistent read / unique write / cas on few keys (linearizability)",
            "r",
            20,
            _HASH_ONLY,
        ),
        Workload(
            "read-heavy",
            "ReadHeavyUser",
            "YCSB-B: 95% get, 5% put",
            "user",
            1000,
            _HASH_ONLY,
        ),
        Workload(
            "update-heavy",
            "UpdateHeavyUser",
            "YCSB-A: 50% get, 50% update",
            "user",
            1000,
            _HASH_ONLY,
        ),
        Workload(
            "rmw",
            "ReadModifyWriteUser",
            "YCSB-F: get, then update conditioned on the version read",
            "rmw",
            100,
            _HASH_ONLY,
        ),
        Workload(
            "query",
            "QueryUser",
            "items under a few partition keys; Query over sort-key ranges, put, delete",
            "q",
            5,
            _HASH_RANGE,
        ),
        Workload(
            "bank",
            "BankUser",
            "transfers between accounts on many partitions (TransactWriteItems), audits of all",
            "acct",
            20,
            _HASH_ONLY,
        ),
    )
}


def workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
