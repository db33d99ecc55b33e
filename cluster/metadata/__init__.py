"""The partition map: which replication group holds each table's key ranges.

``partitionmap.py`` is the map as values (tables, key schemas, partitions, hash ranges);
``store.py`` keeps it durably as items of the replicated ``meta`` group, written with
conditional puts so concurrent routers cannot lose each other's changes.
"""
