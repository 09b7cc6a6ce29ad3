"""The production-shape stack (``scripts/prod-shape``): Postgres, daemon, webserver, two gRPC code locations."""
