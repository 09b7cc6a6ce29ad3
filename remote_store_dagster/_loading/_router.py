"""From an input's annotation to its loader, and the request a load carries.

``LOADERS`` is read top to bottom, first match wins, as dagster-polars' type
routers are; a type no loader claims is a pickled object of that type.
``Optional[...]`` and ``dict[...]`` wrap a loader: nothing stored loads as
``None``; several partitions load as ``{partition_key: value}``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remote_store_dagster._loading._lazy import DatasetLoader, DuckDBLoader, LazyFrameLoader
from remote_store_dagster._loading._loaders import (
    AnyLoader,
    BinaryIOLoader,
    BytesLoader,
    Loader,
    ObjectLoader,
    PandasLoader,
    PolarsLoader,
    StreamLoader,
    TableLoader,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LOADERS", "Request", "loader_for", "request_for"]

#: Annotation -> loader, first match wins; ``ObjectLoader`` takes the rest.
LOADERS: tuple[type[Loader], ...] = (
    TableLoader,
    StreamLoader,
    PandasLoader,
    PolarsLoader,
    LazyFrameLoader,
    DatasetLoader,
    DuckDBLoader,
    BytesLoader,
    BinaryIOLoader,
    AnyLoader,
)


def loader_for(tp: Any) -> Loader:
    """The loader of annotation ``tp``."""
    for loader in LOADERS:
        if loader.accepts(tp):
            return loader(tp)
    return ObjectLoader(tp)


@dataclass(frozen=True)
class Request:
    """What an input asked for: its loader, and how the annotation wraps it.

    ``loader`` serves the annotation without ``Optional``: it reads one object (a
    ``dict[str, int]`` over an unpartitioned pickled dict is that dict) and decides what
    several partitions become. ``item`` is set for ``dict[...]`` annotations: several
    partitions load as ``{key: value}``, each value read by ``item``. ``optional``:
    ``Optional[T]`` / ``T | None`` (nothing stored -> ``None``); ``item_optional``:
    ``dict[str, T | None]`` (a missing partition -> ``None``). ``columns``: input metadata
    ``columns`` (the projection); ``allow_missing``: input metadata ``allow_missing_partitions``.
    """

    loader: Loader
    annotation: Any
    item: Loader | None = None
    optional: bool = False
    item_optional: bool = False
    columns: tuple[str, ...] | None = None
    allow_missing: bool = False

    @property
    def as_dict(self) -> bool:
        """Several partitions load as ``{partition_key: value}``."""
        return self.item is not None


def _strip_optional(tp: Any) -> tuple[bool, Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, (rest[0] if len(rest) == 1 else Any)
    return False, tp


def _dict_value_type(tp: Any) -> tuple[bool, Any]:
    """``dict[str, X]`` -> (True, X); a bare ``dict`` -> (True, Any); anything else -> (False, tp)."""
    if typing.get_origin(tp) in (dict, Mapping, typing.Mapping, typing.Dict):  # noqa: UP006
        args = typing.get_args(tp)
        return True, (args[1] if len(args) == 2 else Any)
    if tp in (dict, Mapping):
        return True, Any
    return False, tp


def request_for(annotation: Any, *, columns: Sequence[Any] | None = None, allow_missing: bool = False) -> Request:
    """The request of an input annotated ``annotation`` (with its metadata's projection and leniency)."""
    projection = tuple(str(c) for c in columns) if columns is not None else None
    optional, tp = _strip_optional(annotation)
    as_dict, inner = _dict_value_type(tp)
    item_optional, inner = _strip_optional(inner) if as_dict else (False, inner)
    return Request(
        loader_for(tp),
        annotation,
        item=loader_for(inner) if as_dict else None,
        optional=optional,
        item_optional=item_optional,
        columns=projection,
        allow_missing=allow_missing,
    )
