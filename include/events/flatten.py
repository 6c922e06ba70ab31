"""The flat (silver) shape of an event, derived from the Pydantic contract.

Top-level scalars keep their names; nested structs become ``<struct>_<field>`` columns (one
level, which is all the contract has); maps stay map columns; the ``items`` list goes to the
child table ``event_items``. Version-2 fields (``marketing``) become columns like any other, so
the flat schema grows with the contract instead of being written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pyarrow as pa
from pydantic import BaseModel

from include.events.models import EventV1, EventV2, Item
from include.events.schemas import arrow_schema

CHILD_LIST = "items"


@dataclass(frozen=True)
class FlatColumn:
    """One silver column: its name, the attribute path in the model, and its Arrow type."""

    name: str
    path: tuple[str, ...]
    type: pa.DataType


def flat_columns(model: type[BaseModel] = EventV2) -> list[FlatColumn]:
    """Silver columns of ``model``, in contract order."""
    columns: list[FlatColumn] = []
    for field in arrow_schema(model):
        if field.name == CHILD_LIST:
            continue
        if pa.types.is_struct(field.type):
            columns += [
                FlatColumn(f"{field.name}_{sub.name}", (field.name, sub.name), sub.type)
                for sub in field.type
            ]
        else:
            columns.append(FlatColumn(field.name, (field.name,), field.type))
    return columns


def v2_only_columns() -> list[str]:
    """Columns that only version-2 events fill (added to silver by schema evolution)."""
    v1 = {c.name for c in flat_columns(EventV1)}
    return [c.name for c in flat_columns(EventV2) if c.name not in v1]


def item_fields() -> list[pa.Field]:
    """Arrow fields of one ``event_items`` line, after its keys."""
    return list(arrow_schema(Item))


def flat_values(event: BaseModel, columns: list[FlatColumn]) -> list[Any]:
    """The event's value for each column (None where a struct or field is absent)."""
    # One model_dump (in Rust) and dict look-ups beat attribute walks by about 5x.
    data = event.model_dump()
    values: list[Any] = []
    for column in columns:
        if len(column.path) == 1:
            value = data.get(column.path[0])
        else:
            parent = data.get(column.path[0])
            value = None if parent is None else parent.get(column.path[1])
        if isinstance(value, UUID):
            value = str(value)
        values.append(value)
    return values
