"""Derive explicit Arrow schemas from the pydantic records.

The pydantic records are the single source of truth; every Parquet file the
pipeline writes uses the schema derived here, so pandas, DuckDB and
Hugging Face `datasets` see the same column types run after run (schemas are
never inferred from whatever rows happen to be in a shard).
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
    dt.date: pa.date32(),
}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        raise TypeError(f"unions other than Optional[X] have no Arrow type: {annotation!r}")
    return annotation, False


def arrow_type(annotation: Any) -> pa.DataType:
    """Arrow type for one pydantic field annotation."""
    annotation, _ = _strip_optional(annotation)
    if get_origin(annotation) is typing.Annotated:
        # An Arrow type in the metadata wins (e.g. list<uint32> where pydantic only knows int).
        declared = [m for m in get_args(annotation)[1:] if isinstance(m, pa.DataType)]
        return declared[0] if declared else arrow_type(get_args(annotation)[0])
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        return arrow_type(type(values[0]))
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        if not args:
            raise TypeError(f"list field needs an item type: {annotation!r}")
        return pa.list_(arrow_type(args[0]))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return arrow_type(type(next(iter(annotation)).value))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_fields(annotation))
    raise TypeError(f"no Arrow type for {annotation!r}")


def _fields(model: type[BaseModel]) -> list[pa.Field]:
    fields = []
    for name, info in model.model_fields.items():
        _, optional = _strip_optional(info.annotation)
        nullable = optional or not info.is_required()
        declared = [m for m in info.metadata if isinstance(m, pa.DataType)]  # pydantic lifts Annotated's
        fields.append(pa.field(name, declared[0] if declared else arrow_type(info.annotation), nullable=nullable))
    return fields


@cache
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a record class, with the class name as metadata."""
    return pa.schema(_fields(model), metadata={b"mfpipe.record": model.__name__.encode()})


def to_table(records: list[BaseModel], model: type[BaseModel]) -> pa.Table:
    """Records → an Arrow table with exactly the derived schema."""
    rows = [r.model_dump(mode="python") for r in records]
    return pa.Table.from_pylist(rows, schema=arrow_schema(model))
