"""Exceptions raised by the integration."""

from __future__ import annotations

__all__ = ["RemoteStoreConfigError", "RemoteStoreIOError"]


class RemoteStoreConfigError(ValueError):
    """Resource or IO manager configuration is invalid; the message names the field."""


class RemoteStoreIOError(RuntimeError):
    """An output could not be stored or an input could not be loaded.

    The message names the asset (and partition) and the cause.
    """
