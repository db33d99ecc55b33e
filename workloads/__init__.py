"""Client traffic: Locust users and the recorded history every check reads.

``locustfile.py`` runs the workloads of ``catalog.py`` (register, query, bank transfers) over
SigV4 (``sigv4.py``, ``client.py``, ``lean_http.py``) against the routers, open-loop when asked
(``schedule.py``), retrying as ``retry.py`` says and classifying outcomes (``outcomes.py``);
every op goes to the history (``history.py``), per-AZ canaries (``canary.py``) measure
availability as clients feel it. ``runner.py`` starts and stops Locust; ``setup.py`` creates
tables and does the final reads.

Workloads reach the cluster only through its public DynamoDB API: they import nothing of ours
but ``cluster.sigv4core`` (public and dependency-free; tests/test_architecture.py).
"""
