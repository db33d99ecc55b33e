"""Who talks to whom: the directed links between cluster processes, the one link topology.

A link is a directed pair ``(src, dst)`` of process ids: ``src`` dials ``dst`` and sends on that
connection only (cluster messages are one-way, see chaos/mesh.py). The Toxiproxy mesh puts one
proxy on every link (``mesh.plan_links``) and faults cut or degrade sets of them
(``faults.ClusterView.links``); both take the pairs from here, so they cannot disagree.

    linked_pairs({"storage": ["sn-a1", "sn-b1"], "router": ["rt-a"]})
    # -> [("sn-a1", "sn-b1"), ("sn-b1", "sn-a1"), ("rt-a", "sn-a1"), ("rt-a", "sn-b1")]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cluster.config import Role

LinkPair = tuple[str, str]

#: Who dials whom: every (src role, dst role) pair with a link per process pair, in port order.
LINKED_ROLES: tuple[tuple[Role, Role], ...] = (
    ("storage", "storage"),
    ("router", "storage"),
    ("router", "memds"),
    ("router", "gac"),
    ("memds", "storage"),
    ("storage", "memds"),
)


def linked_pairs(ids_by_role: Mapping[str, Iterable[str]]) -> list[LinkPair]:
    """Every directed pair that carries traffic, in ``LINKED_ROLES`` order, then by source and
    destination id (so a mesh numbers its proxies the same way every time)."""
    pairs: list[LinkPair] = []
    for src_role, dst_role in LINKED_ROLES:
        sources = sorted(ids_by_role.get(src_role, ()))
        targets = sorted(ids_by_role.get(dst_role, ()))
        pairs += [(s, d) for s in sources for d in targets if s != d]
    return pairs


def links_text(links: Iterable[LinkPair], show: int = 4) -> str:
    """``3 links (sn-a1->sn-b1, ...)``: a short description of a set of links."""
    ordered = sorted(links)
    shown = ", ".join(f"{a}->{b}" for a, b in ordered[:show])
    more = f", +{len(ordered) - show} more" if len(ordered) > show else ""
    return f"{len(ordered)} link{'s' if len(ordered) != 1 else ''} ({shown}{more})"
