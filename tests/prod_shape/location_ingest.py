"""Code location ``ingest`` (``dagster api grpc --module-name prod_shape.location_ingest``)."""

from prod_shape.locations import build_location

defs = build_location("ingest")
