"""The event contract: Pydantic models (the single source of truth) and derived schemas."""

from include.events.models import (
    SUPPORTED_SCHEMA_VERSIONS,
    AnyEvent,
    EventType,
    EventV1,
    EventV2,
    parse_event,
)

__all__ = [
    "SUPPORTED_SCHEMA_VERSIONS",
    "AnyEvent",
    "EventType",
    "EventV1",
    "EventV2",
    "parse_event",
]
