"""The game-day driver: deploy a cluster, break it on a schedule, heal it, judge the run.

A scenario (``scenario.py``, ``schedule.py``) names a workload and a fault timeline; the
orchestrator (``orchestrator.py``) plans each fault from the catalog (``faults/``) on the live
cluster and applies it through a backend (``backends/``: local processes, Docker, Kubernetes)
and the Toxiproxy link mesh (``mesh.py``, ``links.py``); ``run.py`` ties a whole run together
(cluster, Locust load, faults, checks, reports) under a dead-man's switch (``deadman.py``).
``k8s/`` is the local Kubernetes that the k8s backend runs on; ``*_cli.py`` and ``cli.py`` are
the ``gameday`` command; ``assets/`` the files shipped besides code.

``chaos`` may import ``cluster`` (to start and inspect it), ``workloads`` and ``checks``;
nothing imports ``chaos``.
"""
