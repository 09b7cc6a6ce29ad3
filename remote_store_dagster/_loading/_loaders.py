"""One loader per kind of input annotation, as dagster-polars' type routers have.

A loader owns three answers for its annotation: which stored formats it reads
(likeliest first, one HEAD each for a lone object), how one stored object
becomes the annotated value (``read``), and what several partitions become
(``load_many``: one table or frame, one batch stream, or a ``dict``). Loaders
that only make sense for one object (``bytes``, ``BinaryIO``, a pickled object)
say so with ``several = False``: several partitions then need a ``dict[...]``.
``_router`` picks the loader for an annotation.
"""

from __future__ import annotations

import io
import typing
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import pyarrow as pa

from remote_store_dagster import _formats as formats
from remote_store_dagster._loading import _read
from remote_store_dagster._loading._locate import ANY_FORMATS
from remote_store_dagster._loading._refusal import guarded_stream

if TYPE_CHECKING:
    from collections.abc import Sequence

    Columns = Sequence[str] | None

    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._loading._partitions import Partitions
    from remote_store_dagster._progress import Progress
    from remote_store_dagster._targets import Target

__all__ = [
    "AnyLoader",
    "BinaryIOLoader",
    "BytesLoader",
    "Loader",
    "ObjectLoader",
    "PandasLoader",
    "PolarsLoader",
    "StreamLoader",
    "TableLoader",
    "loaded_module",
    "type_name",
]

#: Formats a table annotation reads.
TABLE_FORMATS = ("parquet",)
#: Formats a bytes or file annotation reads: the object's bytes whatever they encode.
BYTE_FORMATS = ("raw", "parquet", "pickle")


def type_name(tp: Any) -> str:
    """``pa.Table`` -> ``Table``, ``dict[str, int]`` -> ``dict[str, int]``: how messages name a type."""
    if typing.get_origin(tp) is not None:
        return repr(tp).replace("typing.", "")
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


def loaded_module(name: str, attribute: str, tp: Any) -> bool:
    """Whether ``tp`` is ``name.attribute`` of an already imported module (never imports it)."""
    module = formats._optional(name)
    return module is not None and tp is getattr(module, attribute, None)


class Loader:
    """How one stored object becomes the annotated type, and what several partitions become."""

    #: Stored formats this loader reads, likeliest first.
    formats: ClassVar[tuple[str, ...]] = TABLE_FORMATS
    #: Whether several partitions load as one value (``False``: only as a ``dict[...]``).
    several: ClassVar[bool] = True

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        """Whether this loader serves annotation ``tp``."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type_name(self.annotation)

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        """One stored object as the annotated type."""
        raise NotImplementedError

    def load_many(self, parts: Partitions) -> Any:
        """Several partitions as one value (only called when ``several``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class TableLoader(Loader):
    """``pa.Table``: a Parquet object decoded whole; partitions concatenated (schemas unified)."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return tp is pa.Table

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        return self.from_table(_read.read_table(dp, stored, columns, progress))

    def load_many(self, parts: Partitions) -> Any:
        return self.from_table(parts.concatenated())

    def from_table(self, table: pa.Table) -> Any:
        """The loaded (or concatenated) table as the annotated type."""
        return table


class PandasLoader(TableLoader):
    """``pd.DataFrame``: the table converted once (several partitions: concatenated as Arrow first)."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return loaded_module("pandas", "DataFrame", tp)

    def from_table(self, table: pa.Table) -> Any:
        return table.to_pandas()


class PolarsLoader(TableLoader):
    """``pl.DataFrame``: the table converted once, zero-copy where Arrow allows."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return loaded_module("polars", "DataFrame", tp)

    def from_table(self, table: pa.Table) -> Any:
        import polars as pl

        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a Table (not an Array) converts to a DataFrame
        return frame


class StreamLoader(Loader):
    """``pa.RecordBatchReader``: a lazy stream, one row group in memory; partitions as one stream."""

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return tp is pa.RecordBatchReader

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        reader = _read.read_stream(dp, stored, columns, progress)
        return guarded_stream(reader, target.label, dp.uri(stored.path))

    def load_many(self, parts: Partitions) -> Any:
        return parts.stream()


class BytesLoader(Loader):
    """``bytes``: the stored object's bytes, whatever format they encode."""

    formats = BYTE_FORMATS
    several = False

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return tp is bytes

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        return _read.read_bytes(dp, stored)


class BinaryIOLoader(Loader):
    """``BinaryIO`` (and binary file classes): a chunked reader with an 8 MiB read-ahead."""

    formats = BYTE_FORMATS
    several = False

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return tp in (BinaryIO, typing.IO[bytes], io.BufferedIOBase, io.IOBase, io.RawIOBase, typing.IO) or (
            isinstance(tp, type) and issubclass(tp, io.BufferedIOBase)
        )

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        return _read.chunked_reader(dp, stored)


class AnyLoader(Loader):
    """Unannotated, ``Any`` or ``object``: by stored format (table, bytes, object); partitions as a dict."""

    formats = ANY_FORMATS

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return tp in (None, Any, object, type(None)) or tp is typing.Any

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        if stored.fmt == "raw":
            return _read.read_bytes(dp, stored)
        if stored.fmt == "pickle":
            return _read.read_pickle(dp, stored)
        return _read.read_table(dp, stored, columns, progress)

    def load_many(self, parts: Partitions) -> Any:
        return parts.as_dict(self)


class ObjectLoader(Loader):
    """Any other type: a pickled object, checked to be an instance of the annotation."""

    formats = ANY_FORMATS
    several = False

    @classmethod
    def accepts(cls, tp: Any) -> bool:
        return True

    def read(self, dp: DataPath, target: Target, stored: Stored, columns: Columns, progress: Progress | None) -> Any:
        if stored.fmt == "raw":
            raise TypeError(f"raw bytes cannot be loaded as {self.name}; annotate bytes or BinaryIO")
        if stored.fmt != "pickle":
            raise TypeError(f"a Parquet table cannot be loaded as {self.name}")
        value = _read.read_pickle(dp, stored)
        expected = typing.get_origin(self.annotation) or self.annotation  # dict[str, int] -> dict
        if isinstance(expected, type) and not isinstance(value, expected):
            raise TypeError(f"the stored object is a {type(value).__name__}, not {self.name}")
        return value
