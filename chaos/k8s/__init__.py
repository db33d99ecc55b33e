"""A real, local Kubernetes for the k8s backend: ``gameday k8s up``/``down`` and its nodes.

``localkube.py`` runs etcd, a control plane on loopback and one kubelet per rack (``nodes.py``,
``host.py``, ``node_runtime.py``, ``node_images.py``), with its own certificates (``pki.py``)
and manifests (``manifests.py``); ``cli.py`` is ``gameday k8s``.
"""
