"""Which Arrow memory pool loaded tables are decoded into (``load_memory_pool``)."""

from __future__ import annotations

import os

import pyarrow as pa

__all__ = ["MEMORY_POOLS", "memory_pool_for"]

#: Settings of ``RemoteStoreIOManager.load_memory_pool``.
MEMORY_POOLS = ("auto", "default", "system", "jemalloc", "mimalloc")


def memory_pool_for(setting: str) -> pa.MemoryPool:
    """The Arrow pool loaded tables are decoded into.

    ``auto`` is Arrow's default pool, except where that is mimalloc only because
    pyarrow's wheels default to it (no ``ARROW_DEFAULT_MEMORY_POOL``): then the
    system allocator. mimalloc backs its arenas with transparent huge pages, and
    where a huge-page fault is expensive (measured on a Firecracker VM: twice the
    CPU of first-touching a freshly loaded table; 256 MiB load 0.92 s vs 0.63 s)
    a one-shot load pays for it. Writes and batch streams reuse a few buffers and
    keep Arrow's default. Raises ``ValueError`` naming what this pyarrow lacks.
    """
    if setting not in MEMORY_POOLS:
        raise ValueError(f"{setting!r} is not one of {', '.join(MEMORY_POOLS)}")
    default = pa.default_memory_pool()
    if setting == "default":
        return default
    if setting == "auto":
        chosen = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
        return default if chosen or default.backend_name != "mimalloc" else pa.system_memory_pool()
    factory = {
        "system": pa.system_memory_pool,
        "jemalloc": pa.jemalloc_memory_pool,
        "mimalloc": pa.mimalloc_memory_pool,
    }[setting]
    try:
        return factory()
    except NotImplementedError:
        raise ValueError(f"{setting!r}: this pyarrow {pa.__version__} build has no {setting} allocator") from None
