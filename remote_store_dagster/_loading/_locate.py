"""Finding stored objects: one HEAD per likely format for one object, one listing for many.

Several partitions are never looked up one by one: a single listing of the asset
folder gives every partition's object and its size, so the reads that follow
need no HEAD either.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

from remote_store_dagster import _layout as layout
from remote_store_dagster._loading._model import Stored

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from remote_store_dagster._loading._model import DataPath
    from remote_store_dagster._targets import Target

__all__ = ["ANY_FORMATS", "find_many", "find_one", "list_folder", "pick"]

#: Every stored format, likeliest first.
ANY_FORMATS = ("parquet", "raw", "pickle")


def find_one(dp: DataPath, location: layout.OutputLocation, fmts: Sequence[str]) -> Stored | None:
    """The stored object in ``location``, trying ``fmts`` in order (one HEAD each).

    On S3 the lookup is opening the file (``Storage.locate``); the open file is kept for
    the read (``Stored.opened``).
    """
    for fmt in fmts:
        found = dp.storage.locate(location.data_path(fmt))
        if found is not None:
            return Stored(fmt, found.path, found.size, opened=found.opened)
    return None


def _common_prefix(paths: Sequence[str]) -> str:
    """Longest common string prefix (not path prefix: ``partition=2024-01-`` is what S3 lists by)."""
    return os.path.commonprefix(list(paths))  # noqa: RUF071 - a key prefix, not a path


def list_folder(dp: DataPath, folder: str, within: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """(store-relative path, size) of every object below ``folder``: one listing.

    Narrowed to the longest common key prefix of ``within`` (e.g. ``partition=2024-01-``
    for a month of days) where the storage lists by key prefix.
    """
    narrow = _common_prefix(within) if within else ""
    for info in dp.storage.list_objects(folder, narrow_to=narrow):
        yield info.path, info.size


def find_many(dp: DataPath, targets: Sequence[Target]) -> dict[str, dict[str, Stored]]:
    """Per partition key, the stored objects by format, from one listing of the asset folder."""
    by_folder = {t.location.folder: str(t.partition) for t in targets}
    found: dict[str, dict[str, Stored]] = {str(t.partition): {} for t in targets}
    folder = targets[0].folder
    for path, size in list_folder(dp, folder, [t.location.folder + "/" for t in targets]):
        parent, name = posixpath.split(path)
        key = by_folder.get(parent)
        if key is None:
            continue
        stem, ext = posixpath.splitext(name)
        fmt = layout.EXTENSION_FORMATS.get(ext)
        if stem == layout.DATA_STEM and fmt is not None:
            found[key][fmt] = Stored(fmt, path, size, listed=True)
    return found


def pick(stored: Mapping[str, Stored], fmts: Sequence[str]) -> Stored | None:
    """The first of ``fmts`` that is stored."""
    for fmt in fmts:
        if fmt in stored:
            return stored[fmt]
    return None
