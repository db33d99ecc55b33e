"""The system under test: a compact DynamoDB-style cluster, one process per role.

Request routers (``router/``: DynamoDB's JSON protocol over SigV4, transactions) find a key's
partition through MemDS (``memds/``: the partition map in memory, read from ``metadata/``'s
replicated ``meta`` group) and reach the partition's replication group on the storage nodes
(``storage/``: replicas, WAL, SQLite items, the replicated state machine). Each group is 3-way
replicated with Raft (``consensus/``: a sans-IO core driven only through its public API);
``healing/`` (run inside the storage nodes) keeps groups whole and verifies their replicas;
``admission/`` is the global admission control; ``dynamo/`` is the data model and expression
language, pure Python. Top-level modules hold what every process shares (config, topology,
internal auth, process start-up, ``sigv4core``, ``tasks``).

``cluster`` imports nothing of chaos, workloads or checks (tests/test_architecture.py).
"""
