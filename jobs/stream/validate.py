"""Validation and flattening of raw Pulsar messages (pure: Arrow in, Arrow out).

Every message comes out as one row: ``status`` ``valid`` with the flat event columns and its
item lines, or ``quarantined`` with a machine-readable ``reason`` and a ``detail``. Content never
raises: whatever a producer sends ends in one of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from include.events import AnyEvent, EventV1, EventV2
from include.events.fast import FLAT_NAMES, Line, accept
from include.events.flatten import FlatColumn, flat_columns, flat_values, item_fields
from include.tenants import CURRENCY_PATTERN, tenant_of_topic

VALID = "valid"
QUARANTINED = "quarantined"
INVALID_JSON = "invalid_json"
SCHEMA_VIOLATION = "schema_violation"
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
TENANT_MISMATCH = "tenant_mismatch"
CURRENCY_MISMATCH = "currency_mismatch"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNKNOWN_TENANT = "unknown_tenant"
REASONS = (
    INVALID_JSON,
    SCHEMA_VIOLATION,
    UNSUPPORTED_SCHEMA_VERSION,
    TENANT_MISMATCH,
    CURRENCY_MISMATCH,
    PAYLOAD_TOO_LARGE,
    UNKNOWN_TENANT,
)

# The deepest nesting the contract has: event -> items -> item (and ml_context -> model_scores).
CONTRACT_DEPTH = 3
# An event time is plausible from this long before its message was published (late events
# and backfills; anything older is a broken clock, e.g. 1970-01-01 or 0001-01-01) ...
MAX_EVENT_AGE = timedelta(days=3653)
# ... to this long after it (clock skew, a local time sent as UTC); later ones have not happened.
MAX_CLOCK_SKEW = timedelta(days=1)

# Strict: the JSON types the contract documents. The lax default would take "3" or true for a
# quantity, "yes" for a flag and a number of seconds for a timestamp.
_EVENT = TypeAdapter[EventV1 | EventV2](AnyEvent)

COLUMNS: list[FlatColumn] = flat_columns()
ITEM_TYPE = pa.list_(
    pa.struct([pa.field("line_number", pa.int32(), nullable=False), *item_fields()])
)
OUTPUT_SCHEMA = pa.schema(
    [
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("topic", pa.string()),
        ("topic_tenant", pa.string()),
        ("message_id", pa.string()),
        ("publish_time", pa.timestamp("us", tz="UTC")),
        ("ingest_time", pa.timestamp("us", tz="UTC")),
        ("key", pa.string()),
        ("value", pa.binary()),
        *[pa.field(c.name, c.type, nullable=True) for c in COLUMNS],
        ("items", ITEM_TYPE),
    ]
)


def classify_error(error: ValidationError) -> tuple[str, str]:
    """(reason, detail) of a contract violation; detail names the field path."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid" and "recursion limit exceeded" in first["msg"]:
        # Well-formed JSON may nest without bound, but no event nests this deep.
        return SCHEMA_VIOLATION, (
            f"<root>: nested deeper than the JSON parser follows (the contract nests at most "
            f"{CONTRACT_DEPTH} levels): {first['msg']}"
        )
    if kind == "json_invalid" or kind == "json_type":
        return INVALID_JSON, first["msg"]
    if kind == "union_tag_invalid":
        return UNSUPPORTED_SCHEMA_VERSION, first["msg"]
    if kind == "union_tag_not_found":
        return SCHEMA_VIOLATION, "schema_version: Field required"
    loc = [str(part) for part in first["loc"]]
    # A discriminated union prefixes the path with the tag (the schema version): drop it.
    if loc and loc[0].isdigit():
        loc = loc[1:]
    return SCHEMA_VIOLATION, f"{'.'.join(loc) or '<root>'}: {first['msg']}"


def validate_batch(
    batch: pa.RecordBatch,
    currencies: dict[str, str],
    topic_template: str,
    max_payload_bytes: int,
    ingest_time: datetime,
) -> pa.RecordBatch:
    """Validate and flatten every message of a raw batch (source schema -> ``OUTPUT_SCHEMA``).

    ``currencies`` maps each registered tenant to its currency. A message the msgspec fast path
    (``include.events.fast``) accepts is stored as it decoded it; every other one takes the
    Pydantic path (``_check``), which words each quarantine and stores what the fast path
    declined but the contract allows. One Python pass per row, then Arrow columns.
    """
    topics = batch.column("topic").to_pylist()
    published_times = batch.column("publish_time").to_pylist()
    tenant_of = {topic: tenant_of_topic(topic, topic_template) for topic in set(topics)}
    # No order matches a tenant currency that is not a valid code (the contract refuses it).
    order_currency = {
        tenant: currency
        if isinstance(currency, str) and CURRENCY_PATTERN.fullmatch(currency)
        else None
        for tenant, currency in currencies.items()
    }
    status: list[str] = []
    reasons: list[str | None] = []
    details: list[str | None] = []
    tenants: list[str | None] = []
    rows: list[Sequence[Any]] = []
    lines: list[Line] = []
    line_numbers: list[int] = []
    offsets = [0]
    no_items: list[bool] = []
    for topic, value, publish_time in zip(
        topics, batch.column("value").to_pylist(), published_times, strict=True
    ):
        tenant = tenant_of[topic]
        published = publish_time or ingest_time
        row: Sequence[Any]
        accepted = None
        if tenant in currencies and value is not None and len(value) <= max_payload_bytes:
            accepted = accept(
                value,
                tenant,
                order_currency[tenant],
                published - MAX_EVENT_AGE,
                published + MAX_CLOCK_SKEW,
            )
        event_lines: list[Line] | None
        if accepted is not None:
            reason, detail = None, None
            row, event_lines = accepted
        else:
            reason, detail, parsed = _check(value, tenant, currencies, max_payload_bytes, published)
            row, event_lines = (_NO_ROW, None) if parsed is None else _pydantic_row(*parsed)
        status.append(VALID if reason is None else QUARANTINED)
        reasons.append(reason)
        details.append(detail)
        tenants.append(tenant)
        rows.append(row)
        no_items.append(event_lines is None)
        if event_lines:
            lines += event_lines
            line_numbers += range(1, len(event_lines) + 1)
        offsets.append(len(lines))
    flat_columns = list(zip(*rows, strict=True)) or [()] * len(COLUMNS)
    n = batch.num_rows
    arrays = {
        "status": pa.array(status, pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "detail": pa.array(details, pa.string()),
        "topic_tenant": pa.array(tenants, pa.string()),
        "ingest_time": pa.array([ingest_time] * n, OUTPUT_SCHEMA.field("ingest_time").type),
        **{name: _passed_through(batch, name) for name in _PASSED_THROUGH},
        **{
            column.name: _column(cells, column.type)
            for column, cells in zip(COLUMNS, flat_columns, strict=True)
        },
        "items": _items(lines, line_numbers, offsets, no_items),
    }
    return pa.RecordBatch.from_arrays(
        [arrays[name] for name in OUTPUT_SCHEMA.names], schema=OUTPUT_SCHEMA
    )


_PASSED_THROUGH = ("topic", "message_id", "publish_time", "key", "value")
_NO_ROW = (None,) * len(COLUMNS)
_DECIMALS = [i for i, c in enumerate(COLUMNS) if pa.types.is_decimal(c.type)]
_MONEY_SCALE = ITEM_TYPE.value_type.field("unit_price").type.scale
if [c.name for c in COLUMNS] != list(FLAT_NAMES) or any(
    COLUMNS[i].type.scale != _MONEY_SCALE for i in _DECIMALS
):
    raise RuntimeError("include.events.fast.FLAT_NAMES no longer matches the flat columns")


def _unscaled(amount: Decimal, scale: int) -> int:
    """A decimal of at most ``scale`` places as an integer of units of 10**-scale (exact)."""
    return int(amount.scaleb(scale))


def _pydantic_row(event: EventV1 | EventV2, flat: list[Any]) -> tuple[list[Any], list[Line]]:
    """A Pydantic-path row in the fast path's form: decimals as unscaled integers, item lines
    as tuples."""
    for i in _DECIMALS:
        if flat[i] is not None:
            flat[i] = _unscaled(flat[i], _MONEY_SCALE)
    lines = [
        (it.sku, it.category, it.quantity, _unscaled(it.unit_price, _MONEY_SCALE))
        for it in event.items
    ]
    return flat, lines


def _decimal(unscaled: Sequence[int | None], type_: pa.DataType) -> pa.Array:
    # Decimal128 of any precision is a 16-byte integer: cast, then read it with the scale.
    return pa.array(unscaled, pa.int64()).cast(pa.decimal128(38, 0)).view(type_)


def _column(cells: Sequence[Any], type_: pa.DataType) -> pa.Array:
    return _decimal(cells, type_) if pa.types.is_decimal(type_) else pa.array(cells, type_)


def _passed_through(batch: pa.RecordBatch, name: str) -> pa.Array:
    column = batch.column(name)
    wanted = OUTPUT_SCHEMA.field(name).type
    return column if column.type == wanted else pa.array(column.to_pylist(), wanted)


def _items(
    lines: list[Line], line_numbers: list[int], offsets: list[int], no_items: list[bool]
) -> pa.Array:
    item = ITEM_TYPE.value_type
    skus, categories, quantities, prices = zip(*lines, strict=True) if lines else ([],) * 4
    children = [
        pa.array(line_numbers, pa.int32()),
        pa.array(skus, pa.string()),
        pa.array(categories, pa.string()),
        pa.array(quantities, pa.int64()),
        _decimal(prices, item.field("unit_price").type),
    ]
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(children, fields=list(item)),
        type=ITEM_TYPE,
        mask=pa.array(no_items, pa.bool_()),
    )


def _paths(kind: Callable[[Any], bool]) -> list[tuple[int, str]]:
    return [(i, ".".join(c.path)) for i, c in enumerate(COLUMNS) if kind(c.type)]


_TEXT = _paths(pa.types.is_string)
_FLOATS = _paths(pa.types.is_floating)
_MAPS = _paths(pa.types.is_map)
_TIMES = _paths(pa.types.is_timestamp)
_ITEM_TEXT = [f.name for f in item_fields() if pa.types.is_string(f.type)]
# JSON carries U+0000 only as this escape (a raw control character is not JSON).
_NUL_ESCAPE = b"\\u0000"


def unstorable(flat: list[Any], items: Sequence[Any], may_hold_nul: bool) -> str | None:
    """Why a valid event (its ``flat_values`` and item lines) cannot be stored as it is
    downstream (``<field path>: why``), or None.

    PostgreSQL text holds no NUL character, JSON (and jsonb) no NaN or infinity, and the
    tables keep timestamps in UTC, which a year-1 or year-9999 time with an offset leaves.
    Text is only searched for NUL when ``may_hold_nul`` (the payload has the escape).
    """
    for i, path in _TIMES:
        moment = flat[i]
        if moment is not None and moment.year in (1, 9999):
            try:
                moment.astimezone(UTC)
            except OverflowError:
                return f"{path}: {moment.isoformat()} is out of range in UTC"
    for i, path in _FLOATS:
        if flat[i] is not None and not math.isfinite(flat[i]):
            return f"{path}: Input should be a finite number"
    for i, path in _MAPS:
        for key, value in (flat[i] or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                return f"{path}.{key}: Input should be a finite number"
    if not may_hold_nul:
        return None
    for i, path in _TEXT:
        if flat[i] is not None and "\x00" in flat[i]:
            return f"{path}: text contains U+0000 (NUL)"
    for i, path in _MAPS:
        for key in flat[i] or {}:
            if "\x00" in key:
                return f"{path}.{key}: text contains U+0000 (NUL)"
    for n, item in enumerate(items):
        for name in _ITEM_TEXT:
            text = getattr(item, name)
            if text is not None and "\x00" in text:
                return f"items.{n}.{name}: text contains U+0000 (NUL)"
    return None


def event_time_problem(event_time: datetime, published: datetime) -> str | None:
    """Why ``event_time`` is implausible for a message published at ``published``, or None."""
    if event_time < published - MAX_EVENT_AGE:
        return (
            f"event_time: {event_time.isoformat()} is more than {MAX_EVENT_AGE.days} days "
            f"before the message was published ({published.isoformat()})"
        )
    if event_time > published + MAX_CLOCK_SKEW:
        return (
            f"event_time: {event_time.isoformat()} is more than {MAX_CLOCK_SKEW.days} day after "
            f"the message was published ({published.isoformat()})"
        )
    return None


def _check(
    value: bytes | None,
    tenant: str | None,
    currencies: dict[str, str],
    max_bytes: int,
    published: datetime,
) -> tuple[str | None, str | None, tuple[EventV1 | EventV2, list[Any]] | None]:
    """(reason, detail, None) of a message to quarantine, or (None, None, (event, flat))."""
    if tenant is None or tenant not in currencies:
        return UNKNOWN_TENANT, "the topic belongs to no registered tenant", None
    if value is None:
        return INVALID_JSON, "empty message", None
    if len(value) > max_bytes:
        return PAYLOAD_TOO_LARGE, f"{len(value)} bytes > {max_bytes}", None
    try:
        event = _EVENT.validate_json(value, strict=True)
    except ValidationError as error:
        reason, detail = classify_error(error)
        return reason, detail, None
    except (ValueError, RecursionError) as error:  # whatever else the parser may raise
        return INVALID_JSON, str(error)[:500], None
    if (
        event.schema_version == 1
        and b"true" in value
        and from_json(value).get("schema_version") is True
    ):
        # The union picks the model by its tag, and True == 1 as a tag: strict validation of the
        # Literal alone lets `"schema_version": true` through. Only payloads that could hold it
        # pay for this second parse.
        return SCHEMA_VIOLATION, "schema_version: must be a JSON integer, not a boolean", None
    flat = flat_values(event, COLUMNS)
    why = unstorable(flat, event.items, _NUL_ESCAPE in value)
    if why is not None:
        if "finite number" in why:
            # NaN and Infinity literals are not JSON; 1e400 is, but overflows a float.
            try:
                from_json(value, allow_inf_nan=False)
            except ValueError as error:
                return INVALID_JSON, f"Invalid JSON: {error}"[:500], None
        return SCHEMA_VIOLATION, why[:500], None
    implausible = event_time_problem(event.event_time, published)
    if implausible is not None:
        return SCHEMA_VIOLATION, implausible, None
    if event.tenant_id != tenant:
        return TENANT_MISMATCH, f"payload tenant {event.tenant_id!r} on {tenant!r}'s topic", None
    if event.order is not None and event.order.currency != currencies[tenant]:
        return (
            CURRENCY_MISMATCH,
            f"order currency {event.order.currency} != tenant currency {currencies[tenant]}",
            None,
        )
    return None, None, (event, flat)
