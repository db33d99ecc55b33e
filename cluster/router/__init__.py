"""The request router: DynamoDB's JSON protocol, authenticated with SigV4, served over HTTP.

``app.py`` dispatches each operation to ``tables.py`` (table control plane), ``items.py``
(single-item writes and reads), ``reads.py`` (Query, Scan) and ``transact.py`` (transactions;
the two-phase commit in ``txncoord.py``), validating with ``validate.py`` and ``shapes.py``.
``context.py`` holds what every request uses: the partition resolver (MemDS), admission
and the storage nodes (``storage_access.py``). A router keeps no state a client depends on:
any router serves any request.
"""
