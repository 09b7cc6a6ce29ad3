"""The ``BinaryIO`` input: a chunked file object over a buffered PyArrow stream."""

from __future__ import annotations

import io
from typing import Any, BinaryIO

__all__ = ["ChunkedReader"]


class ChunkedReader(io.BufferedIOBase, BinaryIO):
    """A read-only binary file over a buffered PyArrow input stream.

    Each ``read(65536)`` is served from an 8 MiB read-ahead buffer, not one
    GET per call. It subclasses ``typing.BinaryIO`` so that Dagster's type
    check of a ``BinaryIO`` input passes.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if size is None or size < 0:
            return bytes(self._stream.read())
        return bytes(self._stream.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()

    def __enter__(self) -> ChunkedReader:
        return self
