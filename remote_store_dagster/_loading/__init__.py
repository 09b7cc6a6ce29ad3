"""The load side: what an input gets, by its annotation, from one object or several partitions.

``io_manager.py`` hands over the input's targets (``_targets.Target``: what it
covers, one object or partitions in order) and its request (``request_for``:
the annotation's loader, the projection); ``load`` does the rest. Rooms:

* ``_router``: annotation -> loader (``Optional[...]`` and ``dict[...]`` wrap one);
* ``_loaders``: one loader per eager annotation kind: its read of one object, its
  conversion, and what several partitions become (one table or frame, one stream, a dict);
* ``_lazy``: the lazy loaders (``pyarrow.dataset.Dataset``, ``pl.LazyFrame``, DuckDB),
  all over ``_dataset``: the Hive dataset of the requested objects;
* ``_locate``: one HEAD per likely format for one object, one listing for many;
* ``_read``: reading one object (whole, by row groups, as a stream, in chunks);
* ``_partitions``: several partitions (concurrent fetches, one table, one stream, a dict);
* ``_schema``: which partition schemas combine, and how;
* ``_refusal``: S3 refusing a request, named (operation, IAM permission);
* ``_memory``: the Arrow pool tables are decoded into;
* ``_load``: a load from start to end (missing data, ``Optional``, errors, progress).

Several partitions follow Dagster's ``UPathIOManager`` convention: a
``dict[partition_key, value]`` for ``dict[...]``, ``Any`` and unannotated
inputs; one concatenated table or frame (or one batch stream, or one lazy
dataset) for table annotations. ``docs/io-manager/partitions.md`` has the rules.
"""

from __future__ import annotations

from remote_store_dagster._loading._load import RunLog, load
from remote_store_dagster._loading._memory import MEMORY_POOLS, memory_pool_for
from remote_store_dagster._loading._model import DataPath, Stored
from remote_store_dagster._loading._router import Request, loader_for, request_for
from remote_store_dagster._targets import Target

__all__ = [
    "MEMORY_POOLS",
    "DataPath",
    "Request",
    "RunLog",
    "Stored",
    "Target",
    "load",
    "loader_for",
    "memory_pool_for",
    "request_for",
]
