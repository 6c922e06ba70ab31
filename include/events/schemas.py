"""Spark and Arrow schemas derived from the Pydantic event models.

One walk over the model's fields (``_derive``) drives two small type builders, so the Spark
``StructType`` and the Arrow schema can never drift from the contract or from each other.
A field is nullable when its annotation admits ``None`` or when it may be absent from the
JSON (it has a default): that is what parsing raw JSON yields.
"""

from __future__ import annotations

import datetime as dt
import types
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar, Union, get_args, get_origin
from uuid import UUID

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, FutureDatetime, NaiveDatetime, PastDatetime
from pyspark.sql import types as st

T = TypeVar("T")
_DEFAULT_DECIMAL = (38, 18)
# Pydantic's constrained datetime markers are not datetime subclasses.
_DATETIME_MARKERS = (AwareDatetime, NaiveDatetime, PastDatetime, FutureDatetime)


class _TypeBuilder(Protocol, Generic[T]):
    def string(self) -> T: ...
    def long(self) -> T: ...
    def double(self) -> T: ...
    def boolean(self) -> T: ...
    def decimal(self, precision: int, scale: int) -> T: ...
    def timestamp(self) -> T: ...
    def date(self) -> T: ...
    def array(self, element: T, element_nullable: bool) -> T: ...
    def map(self, value: T, value_nullable: bool) -> T: ...
    def struct(self, fields: list[tuple[str, T, bool]]) -> T: ...


class _SparkBuilder:
    def string(self) -> st.DataType:
        return st.StringType()

    def long(self) -> st.DataType:
        return st.LongType()

    def double(self) -> st.DataType:
        return st.DoubleType()

    def boolean(self) -> st.DataType:
        return st.BooleanType()

    def decimal(self, precision: int, scale: int) -> st.DataType:
        return st.DecimalType(precision, scale)

    def timestamp(self) -> st.DataType:
        return st.TimestampType()

    def date(self) -> st.DataType:
        return st.DateType()

    def array(self, element: st.DataType, element_nullable: bool) -> st.DataType:
        return st.ArrayType(element, containsNull=element_nullable)

    def map(self, value: st.DataType, value_nullable: bool) -> st.DataType:
        return st.MapType(st.StringType(), value, valueContainsNull=value_nullable)

    def struct(self, fields: list[tuple[str, st.DataType, bool]]) -> st.DataType:
        return st.StructType([st.StructField(n, t, nullable=nl) for n, t, nl in fields])


class _ArrowBuilder:
    def string(self) -> pa.DataType:
        return pa.string()

    def long(self) -> pa.DataType:
        return pa.int64()

    def double(self) -> pa.DataType:
        return pa.float64()

    def boolean(self) -> pa.DataType:
        return pa.bool_()

    def decimal(self, precision: int, scale: int) -> pa.DataType:
        return pa.decimal128(precision, scale)

    def timestamp(self) -> pa.DataType:
        return pa.timestamp("us", tz="UTC")

    def date(self) -> pa.DataType:
        return pa.date32()

    def array(self, element: pa.DataType, element_nullable: bool) -> pa.DataType:
        return pa.list_(pa.field("element", element, nullable=element_nullable))

    def map(self, value: pa.DataType, value_nullable: bool) -> pa.DataType:
        return pa.map_(
            pa.field("key", pa.string(), nullable=False),
            pa.field("value", value, nullable=value_nullable),
        )

    def struct(self, fields: list[tuple[str, pa.DataType, bool]]) -> pa.DataType:
        return pa.struct([pa.field(n, t, nullable=nl) for n, t, nl in fields])


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unions other than Optional[X] have no column type: {annotation}")
        return args[0], True
    return annotation, False


def _decimal_shape(metadata: list[Any]) -> tuple[int, int]:
    precision, scale = _DEFAULT_DECIMAL
    for item in metadata:
        precision = getattr(item, "max_digits", None) or precision
        scale = getattr(item, "decimal_places", None) or scale
    return precision, scale


def _derive(annotation: Any, metadata: list[Any], builder: _TypeBuilder[T]) -> tuple[T, bool]:
    """(column type, nullable) of one annotation."""
    annotation, nullable = _strip_optional(annotation)
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        column_type, inner_nullable = _derive(inner, [*metadata, *extra], builder)
        return column_type, nullable or inner_nullable
    if annotation in _DATETIME_MARKERS:
        return builder.timestamp(), nullable
    origin = get_origin(annotation)
    if origin is Literal:
        kinds = {type(v) for v in get_args(annotation)}
        return _derive(kinds.pop() if len(kinds) == 1 else str, metadata, builder)[0], nullable
    if origin is list:
        (element,) = get_args(annotation)
        element_type, element_nullable = _derive(element, [], builder)
        return builder.array(element_type, element_nullable), nullable
    if origin is dict:
        key, value = get_args(annotation)
        if key is not str:
            raise TypeError(f"map keys must be str, not {key}")
        value_type, value_nullable = _derive(value, [], builder)
        return builder.map(value_type, value_nullable), nullable
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _struct(annotation, builder), nullable
        # bool before int: bool is a subclass of int.
        scalar_builders: list[tuple[type, Any]] = [
            (Enum, builder.string),
            (str, builder.string),
            (UUID, builder.string),
            (bool, builder.boolean),
            (int, builder.long),
            (float, builder.double),
            (dt.datetime, builder.timestamp),
            (dt.date, builder.date),
        ]
        for python_type, make in scalar_builders:
            if issubclass(annotation, python_type):
                return make(), nullable
        if issubclass(annotation, Decimal):
            return builder.decimal(*_decimal_shape(metadata)), nullable
    raise TypeError(f"no column type for annotation {annotation!r}")


def _struct(model: type[BaseModel], builder: _TypeBuilder[T]) -> T:
    fields: list[tuple[str, T, bool]] = []
    for name, info in model.model_fields.items():
        column_type, nullable = _derive(info.annotation, list(info.metadata), builder)
        fields.append((info.alias or name, column_type, nullable or not info.is_required()))
    return builder.struct(fields)


def spark_schema(model: type[BaseModel]) -> st.StructType:
    """The Spark ``StructType`` of ``model``'s JSON form."""
    schema = _struct(model, _SparkBuilder())
    assert isinstance(schema, st.StructType)
    return schema


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of ``model``'s JSON form."""
    struct = _struct(model, _ArrowBuilder())
    return pa.schema(list(struct))
