"""Raft consensus for one replication group, sans-IO (in the manner of etcd's ``raft`` package).

``raft.py`` is the pure state machine (ticks, steps, proposals in; a ``Ready`` of things to
persist, send and apply out), ``log.py`` its in-memory log with the stable/commit/applied marks,
and ``messages.py`` the immutable values that cross its boundary. Nothing here does I/O: the
storage node drives it with asyncio and a WAL, the deterministic simulator in tests with a seed.
"""
