"""MemDS: the partition map held in memory and served to routers (``python -m cluster.memds``).

Re-reads the whole map from the replicated ``meta`` group at a fixed rate and answers batched
lookups from memory; routers cache its answers (``cluster/router/context.py``).
"""
