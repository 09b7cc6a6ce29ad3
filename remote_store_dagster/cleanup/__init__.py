"""The cleanup sensor: stored data follows the Dagster catalog.

A sensor that, on each tick, lists what its policies need below
``<store root>/<prefix>/`` and deletes what its policies select:

* **leftovers** of failed writes: objects under ``<prefix>/_staging/`` and (on
  s3-pyarrow) incomplete multipart uploads, older than ``leftover_grace``;
* **wiped** assets: data of assets wiped in Dagster (``ASSET_WIPED`` events),
  decided by the run that wrote each object;
* **orphans** (opt-in): asset folders of assets this code location does not
  define, whose data this code location wrote (per provenance);
* **retention** (``keep_last_partitions``): all but the newest N partitions.

Modules: ``sensor`` (the factory and its arguments), ``tick`` (one evaluation,
in order), ``catalog`` (what is read from Dagster), ``listing`` (what is read
from the store), ``ownership`` (provenance decisions), ``plan`` (the pure
policies), ``deleter`` (the one scope guard and the deletes), ``report`` (tick
text and observations).
"""

from remote_store_dagster.cleanup.sensor import build_cleanup_sensor

__all__ = ["build_cleanup_sensor"]
