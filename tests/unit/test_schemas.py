"""Schema derivation: every supported annotation maps to the documented column type."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

import pyarrow as pa
import pytest
from pydantic import AwareDatetime, BaseModel, Field
from pyspark.sql import types as st

from include.events import EventV1, EventV2
from include.events.schemas import arrow_schema, spark_schema


class Color(StrEnum):
    RED = "red"


class Inner(BaseModel):
    code: str
    weight: float | None = None


class Sample(BaseModel):
    id: UUID
    count: int
    flag: bool
    color: Color
    kind: Literal["a", "b"]
    version: Literal[1]
    price: Annotated[Decimal, Field(max_digits=12, decimal_places=3)]
    at: AwareDatetime
    day: date | None = None
    naive: datetime | None
    inner: Inner
    maybe_inner: Inner | None = None
    tags: list[str] = Field(default_factory=list)
    lines: list[Inner]
    scores: dict[str, float]
    nested: list[list[int]] | None = None


EXPECTED_SPARK = st.StructType(
    [
        st.StructField("id", st.StringType(), False),
        st.StructField("count", st.LongType(), False),
        st.StructField("flag", st.BooleanType(), False),
        st.StructField("color", st.StringType(), False),
        st.StructField("kind", st.StringType(), False),
        st.StructField("version", st.LongType(), False),
        st.StructField("price", st.DecimalType(12, 3), False),
        st.StructField("at", st.TimestampType(), False),
        st.StructField("day", st.DateType(), True),
        st.StructField("naive", st.TimestampType(), True),
        st.StructField(
            "inner",
            st.StructType(
                [
                    st.StructField("code", st.StringType(), False),
                    st.StructField("weight", st.DoubleType(), True),
                ]
            ),
            False,
        ),
        st.StructField(
            "maybe_inner",
            st.StructType(
                [
                    st.StructField("code", st.StringType(), False),
                    st.StructField("weight", st.DoubleType(), True),
                ]
            ),
            True,
        ),
        st.StructField("tags", st.ArrayType(st.StringType(), False), True),
        st.StructField(
            "lines",
            st.ArrayType(
                st.StructType(
                    [
                        st.StructField("code", st.StringType(), False),
                        st.StructField("weight", st.DoubleType(), True),
                    ]
                ),
                False,
            ),
            False,
        ),
        st.StructField("scores", st.MapType(st.StringType(), st.DoubleType(), False), False),
        st.StructField("nested", st.ArrayType(st.ArrayType(st.LongType(), False), False), True),
    ]
)


def test_spark_schema_covers_nested_structs_arrays_maps_and_optionals() -> None:
    assert spark_schema(Sample) == EXPECTED_SPARK


def test_arrow_schema_covers_the_same_shapes() -> None:
    schema = arrow_schema(Sample)
    assert schema.field("price").type == pa.decimal128(12, 3)
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("day").type == pa.date32()
    assert schema.field("scores").type == pa.map_(
        pa.string(), pa.field("value", pa.float64(), nullable=False)
    )
    lines = schema.field("lines").type
    assert pa.types.is_list(lines) and pa.types.is_struct(lines.value_type)
    assert lines.value_type.field("weight").nullable
    assert not schema.field("inner").nullable and schema.field("maybe_inner").nullable


def _shape(spark_type: st.DataType) -> object:
    """Spark type as nested (name, nullable) structure, to compare with Arrow's."""
    if isinstance(spark_type, st.StructType):
        return [(f.name, f.nullable, _shape(f.dataType)) for f in spark_type.fields]
    if isinstance(spark_type, st.ArrayType):
        return ("array", spark_type.containsNull, _shape(spark_type.elementType))
    if isinstance(spark_type, st.MapType):
        return ("map", spark_type.valueContainsNull, _shape(spark_type.valueType))
    return None


def _arrow_shape(arrow_type: pa.DataType) -> object:
    if pa.types.is_struct(arrow_type):
        return [(f.name, f.nullable, _arrow_shape(f.type)) for f in arrow_type]
    if pa.types.is_map(arrow_type):
        return ("map", arrow_type.item_field.nullable, _arrow_shape(arrow_type.item_type))
    if pa.types.is_list(arrow_type):
        return ("array", arrow_type.value_field.nullable, _arrow_shape(arrow_type.value_type))
    return None


@pytest.mark.parametrize("model", [Sample, EventV1, EventV2])
def test_spark_and_arrow_schemas_agree_on_names_and_nullability(model: type[BaseModel]) -> None:
    arrow = arrow_schema(model)
    assert _shape(spark_schema(model)) == _arrow_shape(pa.struct(list(arrow)))


def test_v2_schema_is_v1_plus_marketing() -> None:
    v1, v2 = spark_schema(EventV1), spark_schema(EventV2)
    assert v2.fieldNames() == [*v1.fieldNames(), "marketing"]
    assert v2["marketing"].nullable


def test_unsupported_annotations_are_refused() -> None:
    class Bad(BaseModel):
        value: int | str

    with pytest.raises(TypeError, match="unions"):
        spark_schema(Bad)
