"""Where things live in a store: asset folders, Hive partitions, reserved names.

Layout under ``<store root>/<prefix>/``::

    a/b/data.parquet                          # asset ["a", "b"], unpartitioned
    a/b/partition=2024-01-01/data.parquet     # one partition dimension
    a/b/color=red/date=2024-01-01/data.parquet  # multi-partitions, dims sorted by name
    _runs/<run_id>/<step_key>/<output>/data.parquet  # op (non-asset) outputs
    _staging/<uuid>.<name>                    # in-flight writes on non-S3 backends

Every name the integration keeps for itself starts with ``_`` (or ``.``), so
``pyarrow.dataset``, DuckDB, Polars and Spark skip it when they read an asset
folder as a dataset. Keys are percent-encoded into single path segments, so no
partition key or asset key component can climb out of its folder.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DATA_STEM = "data"
RESERVED_PREFIXES = ("_", ".")
STAGING_DIR = "_staging"
RUNS_DIR = "_runs"
DEFAULT_PARTITION_COLUMN = "partition"

#: File extension of each storage format; the extension tells a loader the format.
FORMAT_EXTENSIONS: Mapping[str, str] = {"parquet": ".parquet", "raw": ".bin", "pickle": ".pickle"}
EXTENSION_FORMATS: Mapping[str, str] = {ext: fmt for fmt, ext in FORMAT_EXTENSIONS.items()}


def encode_segment(value: str) -> str:
    """Percent-encode ``value`` into one safe path segment.

    ``/``, ``=``, ``%``, spaces and non-ASCII are escaped (pyarrow's hive
    partitioning decodes them back with its default ``segment_encoding="uri"``);
    a leading ``_``/``.`` is escaped too so user names never look reserved and
    ``.``/``..`` can never be a segment of their own.
    """
    if not value:
        raise ValueError("an empty string cannot name a folder")
    encoded = urllib.parse.quote(value, safe="-_~")  # '.' is never quoted by quote()
    if encoded[0] in "_.":
        encoded = f"%{ord(encoded[0]):02X}{encoded[1:]}"
    return encoded


def decode_segment(segment: str) -> str:
    return urllib.parse.unquote(segment)


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIXES)


def join(*parts: str) -> str:
    """Join store-relative path parts, dropping empty ones."""
    return posixpath.join(*[p.strip("/") for p in parts if p and p.strip("/")]) if any(parts) else ""


def normalize_prefix(prefix: str) -> str:
    """Validate a configured prefix: relative, no ``..``, no reserved segment."""
    cleaned = prefix.strip("/")
    for segment in cleaned.split("/") if cleaned else []:
        if segment in ("", ".", ".."):
            raise ValueError(f"prefix {prefix!r}: empty, '.' or '..' path segment")
        if is_reserved(segment):
            raise ValueError(f"prefix {prefix!r}: segment {segment!r} starts with a reserved character '_' or '.'")
    return cleaned


def asset_folder(prefix: str, asset_key_path: Sequence[str]) -> str:
    """``<prefix>/a/b`` for asset key ``["a", "b"]``."""
    if not asset_key_path:
        raise ValueError("asset key has no path components")
    return join(prefix, *(encode_segment(part) for part in asset_key_path))


def hive_segments(partition: Mapping[str, str]) -> list[str]:
    """``{"date": "2024-01-01"}`` -> ``["date=2024-01-01"]`` (order kept)."""
    return [f"{encode_segment(dim)}={encode_segment(key)}" for dim, key in partition.items()]


def data_file_name(fmt: str) -> str:
    return DATA_STEM + FORMAT_EXTENSIONS[fmt]


@dataclass(frozen=True)
class OutputLocation:
    """The folder that holds one asset (partition) or op output, and its data file."""

    folder: str

    def data_path(self, fmt: str) -> str:
        return join(self.folder, data_file_name(fmt))

    def candidates(self) -> list[str]:
        return [self.data_path(fmt) for fmt in FORMAT_EXTENSIONS]


def partition_location(prefix: str, asset_key_path: Sequence[str], partition: Mapping[str, str]) -> OutputLocation:
    return OutputLocation(join(asset_folder(prefix, asset_key_path), *hive_segments(partition)))


def asset_location(prefix: str, asset_key_path: Sequence[str]) -> OutputLocation:
    return OutputLocation(asset_folder(prefix, asset_key_path))


def run_location(prefix: str, run_id: str, step_key: str, output_name: str) -> OutputLocation:
    return OutputLocation(
        join(prefix, RUNS_DIR, encode_segment(run_id), encode_segment(step_key), encode_segment(output_name))
    )


def staging_path(prefix: str, token: str, final_path: str) -> str:
    """A reserved, unique name for an in-flight write of ``final_path``."""
    return join(prefix, STAGING_DIR, f"{token}.{posixpath.basename(final_path)}")


def format_of(path: str) -> str | None:
    return EXTENSION_FORMATS.get(posixpath.splitext(path)[1])
