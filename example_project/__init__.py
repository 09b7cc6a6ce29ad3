"""Example Dagster code location for remote-store-dagster (loaded by ``workspace.yaml``).

``./scripts/dev`` runs it in ``dagster dev`` on an embedded S3 server (``scripts/_dev.py``).
"""
