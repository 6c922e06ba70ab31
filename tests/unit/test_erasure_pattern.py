"""The byte pattern that finds an erased customer in raw (quarantined) payloads."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from include.lake.erasure import LakeErasure, customer_token_pattern


def _matches(customer_id: str, payloads: list[bytes | None]) -> list[bool | None]:
    array = pa.array(payloads, type=pa.binary())
    result: list[bool | None] = pc.match_substring_regex(
        array, customer_token_pattern(customer_id)
    ).to_pylist()
    return result


def test_the_id_matches_as_a_whole_token_only() -> None:
    payloads: list[bytes | None] = [
        b'{"customer":{"customer_id":"c_1"}}',
        b'{"customer_id": "c_1" }',
        b"c_1",
        b"\xff\xfe broken utf-8 customer=c_1;",
        b'{"customer_id":"c_10"}',
        b'{"customer_id":"xc_1"}',
        b'{"customer_id":"c.1"}',
        None,
    ]
    assert _matches("c_1", payloads) == [True, True, True, True, False, False, False, None]


def test_regex_characters_of_an_id_are_literal() -> None:
    assert _matches("a.b+c@d:e-f", [b'"a.b+c@d:e-f"', b'"aXb+c@d:e-f"', b'"a.bbc@d:e-f"']) == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("customer_id", ["", "c 1", "c'1", "c%1", "_c1", "x" * 201])
def test_ids_outside_the_safe_alphabet_are_refused(customer_id: str) -> None:
    with pytest.raises(ValueError):
        customer_token_pattern(customer_id)


def test_lake_rows_add_up_the_four_tables_but_not_the_archive() -> None:
    assert LakeErasure(1, 2, 3, 4, archive_rows=100, event_ids=()).lake_rows == 10
