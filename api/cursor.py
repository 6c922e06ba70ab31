"""Opaque keyset cursors of ``GET /events``: (event_time, event_id) of the last row served."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import orjson

from api.errors import Problem


def encode_cursor(event_time: datetime, event_id: uuid.UUID) -> str:
    """The cursor that continues after this row."""
    raw = orjson.dumps({"t": event_time.isoformat(), "id": str(event_id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The row a cursor points after, or 422 for anything that is not a cursor we issued."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        moment = datetime.fromisoformat(data["t"])
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, uuid.UUID(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Problem(422, "invalid cursor: pass back a next_cursor exactly as returned") from None
