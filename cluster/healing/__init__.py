"""Healing and continuous verification (DESIGN.md "Log replicas", "Continuous verification").

The control plane runs inside the storage nodes, so it is as available as the groups it heals:
every group's leader watches its own members and repairs its own group. Modules:

- ``settings``: the knobs (grace period, probe interval, scrub interval).
- ``events``: the timeline of healing steps, served on ``/admin/events`` and as metrics.
- ``planner``: pure decisions: given a group and the nodes' health, the next step, if any.
- ``admin``: the loop in each node that probes peers, plans for the groups it leads, and
  carries the steps out (create/drop replicas, membership changes, partition-map updates).
- ``mapupdate``: write a group's new members into the partition map (meta group).
- ``scrubber``: the leader's side of a scrub round (compare digests, quarantine, repair).

Healing depends on storage, never the other way: it sees a node only through
``cluster.storage.host.NodeHost``, and the node's entry point (``python -m cluster.storage``)
adds the admin as a service. Rebuilding a replica's files is storage's own job
(``cluster.storage.rebuild``, the ``rebuild`` op); healing only asks for it.

    node = StorageNode(NodeConfig(...))
    node.add_service(Admin(node, HealingSettings(grace_seconds=3.0), node_azs={...}))
"""
