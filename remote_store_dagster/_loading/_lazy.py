"""Lazy inputs: a ``pyarrow.dataset``, a polars ``LazyFrame``, a DuckDB relation.

All three are the same dataset (``_dataset``) seen by another engine, over one
object or several partitions alike: nothing is read at load time but one
footer (the schema), and each engine pushes its filters and projections down
to PyArrow's scanner, so a filter on a partition column reads only those
partitions' objects and a projection fetches only those columns' bytes. The
reads go through the store's own PyArrow filesystem (credentials, endpoint and
all), so DuckDB needs no extension (no ``httpfs``) and polars no storage options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remote_store_dagster._loading._dataset import dataset_of
from remote_store_dagster._loading._loaders import Loader, loaded_module

if TYPE_CHECKING:
    from collections.abc import Sequence

    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._loading._partitions import Partitions
    from remote_store_dagster._progress import Progress
    from remote_store_dagster._targets import Target

__all__ = ["DatasetLoader", "DuckDBLoader", "LazyFrameLoader"]


class DatasetLoader(Loader):
    """``pyarrow.dataset.Dataset``: the asset folder as a Hive dataset, restricted to what the input covers."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return loaded_module("pyarrow.dataset", "Dataset", tp) or loaded_module(
            "pyarrow.dataset", "FileSystemDataset", tp
        )

    def read(
        self, dp: DataPath, target: Target, stored: Stored, columns: Sequence[str] | None, progress: Progress | None
    ) -> Any:
        return self.from_dataset(dataset_of(dp, [(target, stored)], columns))

    def load_many(self, parts: Partitions) -> Any:
        return self.from_dataset(parts.dataset())

    def from_dataset(self, dataset: Any) -> Any:
        """The dataset as the annotated type."""
        return dataset


class LazyFrameLoader(DatasetLoader):
    """``pl.LazyFrame``: a scan of the dataset (polars passes its predicates and projection to PyArrow)."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return loaded_module("polars", "LazyFrame", tp)

    def from_dataset(self, dataset: Any) -> Any:
        import polars as pl

        return pl.scan_pyarrow_dataset(dataset)


class DuckDBLoader(DatasetLoader):
    """``duckdb.DuckDBPyRelation``: the dataset on a private in-memory connection, scanned through Arrow."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return loaded_module("duckdb", "DuckDBPyRelation", tp)

    def from_dataset(self, dataset: Any) -> Any:
        import duckdb

        # The relation keeps its connection alive; a private one shares no state with the user's.
        return duckdb.connect().from_arrow(dataset)
