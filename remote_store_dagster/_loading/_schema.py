"""Schema evolution across partitions: which schemas combine into one table, and how.

Daily data gains columns over time; partitions combine when their schemas differ
only by added columns or widened types (``docs/io-manager/partitions.md`` lists
the rules). Anything else is a ``SchemaMismatch`` naming both partitions and the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SchemaMismatch", "conform", "unify_schemas", "widen"]


class SchemaMismatch(ValueError):
    """Two partitions' schemas differ in a way that is not an added column or a widened type."""


def widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both ``a`` and ``b`` convert to without loss of meaning, or ``None``.

    Same type; ``null`` with anything; a narrower integer to a wider one (signed
    and unsigned mixed: the signed type that holds both, up to int64); float16/32
    to a wider float; any integer with a float to float64; string/binary to their
    ``large_`` variants. Nothing else (no string <-> number, no timestamp units).
    """
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return _widen_ints(a, b)
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if (pa.types.is_integer(a) and pa.types.is_floating(b)) or (pa.types.is_floating(a) and pa.types.is_integer(b)):
        return pa.float64()
    pairs = {(pa.string(), pa.large_string()): pa.large_string(), (pa.binary(), pa.large_binary()): pa.large_binary()}
    for (x, y), wide in pairs.items():
        if (a.equals(x) and b.equals(y)) or (a.equals(y) and b.equals(x)):
            return wide
    return None


def _widen_ints(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    signed = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}
    a_signed, b_signed = pa.types.is_signed_integer(a), pa.types.is_signed_integer(b)
    if a_signed == b_signed:
        return a if a.bit_width >= b.bit_width else b
    s, u = (a, b) if a_signed else (b, a)
    if s.bit_width > u.bit_width:
        return s
    if u.bit_width < 64:
        return signed[2 * u.bit_width]
    return None


def unify_schemas(schemas: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for several partitions: columns in order of first appearance, widened types.

    Raises ``SchemaMismatch`` naming both partitions and the field when a
    column's types cannot be widened to one.
    """
    first = schemas[0][1]
    if all(s.equals(first, check_metadata=False) for _, s in schemas[1:]):
        return first
    fields: dict[str, pa.Field] = {}
    seen_in: dict[str, tuple[str, pa.DataType]] = {}
    for name, schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
                seen_in[f.name] = (name, f.type)
                continue
            wide = widen(fields[f.name].type, f.type)
            if wide is None:
                other, other_type = seen_in[f.name]
                raise SchemaMismatch(
                    f"partitions {other!r} and {name!r} differ in field {f.name!r}: {other_type} vs {f.type} "
                    "(only added columns and widened types combine; load them as a dict[str, ...] instead)"
                )
            fields[f.name] = pa.field(f.name, wide, nullable=fields[f.name].nullable or f.nullable)
            if not f.type.equals(seen_in[f.name][1]) and wide.equals(f.type):
                seen_in[f.name] = (name, f.type)
    return pa.schema(list(fields.values()), metadata=first.metadata)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> Any:
    """``table`` with ``schema``'s columns in its order: missing ones as nulls, types widened."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    arrays = []
    for f in schema:
        if f.name in table.schema.names:
            column = table.column(f.name)
            arrays.append(column if column.type.equals(f.type) else column.cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    if isinstance(table, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)
