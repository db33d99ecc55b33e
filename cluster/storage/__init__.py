"""The storage node: replicas of replication groups, each a Raft log and an SQLite item store.

``node.py`` is the process (``python -m cluster.storage``; ``adminhttp.py`` its admin endpoint,
``reads.py`` its read operations); ``replica.py`` runs one group's Raft core with its WAL
(``wal.py``; ``recovery.py`` rebuilds a replica from its files) and applies committed
``commands.py`` through the state machine (``statemachine.py``, ``intents.py`` for
transactions) to the items (``itemstore.py``). The node's replicas share one journal
(``journal.py``): one fsync makes every group's ready WAL records durable (group commit),
and one I/O thread (``readyio.py``) that persists, sends and applies their Readies in batches.
``transport.py``, ``wire.py``, ``handshake.py`` and ``client.py`` carry peer and client
messages; ``layout.py`` owns the on-disk file layout; ``archive.py`` and ``scrub.py`` keep the
log and verify replicas. Healing sees a node only through ``host.py``'s ``NodeHost``.
"""
