"""Code location ``sales`` (``dagster api grpc --module-name prod_shape.location_sales``)."""

from prod_shape.locations import build_location

defs = build_location("sales")
