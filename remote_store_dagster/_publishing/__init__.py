"""The write side: an output object becomes one atomically published object per target.

``write_outputs`` picks the format from the object's type (``_formats``), encodes it
straight into the storage's atomic publish stream (``Storage.publish``), deletes the
object's other formats when they may exist, and answers with the metadata Dagster
shows for each asset (partition). ``split_range`` cuts a single-run backfill's value
into one value per partition first.
"""

from remote_store_dagster._publishing._metadata import Written, add_output_metadata
from remote_store_dagster._publishing._output import OutputWriter
from remote_store_dagster._publishing._ranges import split_range
from remote_store_dagster._publishing._write import OtherFormats, WriteSettings, write_one

__all__ = [
    "OtherFormats",
    "OutputWriter",
    "WriteSettings",
    "Written",
    "add_output_metadata",
    "split_range",
    "write_one",
]
