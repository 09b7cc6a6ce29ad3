"""Who wrote a stored object: the facts the cleanup sensor decides with.

Every object the IO manager publishes carries its provenance: the code location,
asset key, partition key and run id that wrote it, and this package's version.

* On **s3-pyarrow** it is S3 user metadata on the object itself (``x-amz-meta-rsd-*``,
  shown by ``aws s3api head-object``), set on the single PutObject and on the
  CreateMultipartUpload of larger outputs, so it can never disagree with the data.
* On **other backends** (which have no user metadata) it is a JSON sidecar,
  ``_provenance.json``, in the same folder as the data file; its leading ``_``
  keeps it out of dataset readers. It is written after the data is published,
  so a crash between the two leaves data without provenance ("unstamped"),
  which the cleanup sensor treats as not provably its own: it keeps it.

Values are percent-encoded where HTTP headers cannot carry them (non-ASCII,
control characters), so any partition key round-trips.
"""

from __future__ import annotations

import json
import posixpath
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remote_store_dagster._version import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["SIDECAR_NAME", "Provenance", "run_code_location", "sidecar_path"]

#: Prefix of our keys in S3 user metadata (S3 adds ``x-amz-meta-`` and lowercases keys).
METADATA_PREFIX = "rsd-"
#: File name of the provenance sidecar on backends without object metadata.
SIDECAR_NAME = "_provenance.json"

_FIELDS = {
    "code_location": "code-location",
    "asset_key": "asset-key",
    "partition_key": "partition-key",
    "run_id": "run-id",
    "version": "version",
}
#: Characters kept as they are in header values; everything else is percent-encoded.
_SAFE = "/:|=@+,-_.~"


@dataclass(frozen=True)
class Provenance:
    """What wrote one stored object.

    ``code_location`` is ``None`` when the run has no code location (in-process
    ``materialize``) and the IO manager was not given one; ``asset_key`` is the
    user string (``"a/b"``) and ``partition_key`` the Dagster partition key
    (multi-partition keys joined by ``|``), both ``None`` for op outputs.
    """

    run_id: str
    code_location: str | None = None
    asset_key: str | None = None
    partition_key: str | None = None
    version: str = __version__

    def to_metadata(self) -> dict[str, str]:
        """S3 user metadata (keys without ``x-amz-meta-``); unset fields are left out."""
        metadata = {}
        for attr, name in _FIELDS.items():
            value = getattr(self, attr)
            if value is not None:
                metadata[METADATA_PREFIX + name] = urllib.parse.quote(str(value), safe=_SAFE)
        return metadata

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> Provenance | None:
        """The provenance in S3 user metadata, or ``None`` for an unstamped object."""
        lowered = {str(k).lower(): v for k, v in (metadata or {}).items()}
        values: dict[str, str | None] = {}
        for attr, name in _FIELDS.items():
            raw = lowered.get(METADATA_PREFIX + name)
            values[attr] = urllib.parse.unquote(str(raw)) if raw is not None else None
        run_id = values.pop("run_id")
        if not run_id:
            return None
        version = values.pop("version") or "unknown"
        return cls(run_id=run_id, version=version, **values)

    def to_json(self) -> bytes:
        """The sidecar's content (plain JSON, no encoding of values)."""
        return json.dumps({name: getattr(self, attr) for attr, name in _FIELDS.items()}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Provenance | None:
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        if not isinstance(raw, dict) or not raw.get("run-id"):
            return None
        values = {attr: raw.get(name) for attr, name in _FIELDS.items()}
        values["version"] = values["version"] or "unknown"
        return cls(**{k: (str(v) if v is not None else None) for k, v in values.items()})  # type: ignore[arg-type]


def sidecar_path(data_file_path: str) -> str:
    """Where the provenance of ``data_file_path`` lives on backends without object metadata."""
    return posixpath.join(posixpath.dirname(data_file_path), SIDECAR_NAME)


def run_code_location(dagster_run: Any) -> str | None:
    """The code location a run was launched from (``None`` for in-process runs)."""
    origin = getattr(dagster_run, "remote_job_origin", None)
    if origin is None:
        return None
    try:
        return str(origin.location_name)
    except AttributeError:
        return None
