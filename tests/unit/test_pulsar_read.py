from __future__ import annotations

from include.pulsar_read import RedeliveryFilter


def test_redeliveries_and_older_ids_are_dropped() -> None:
    kept = RedeliveryFilter()
    stream = [
        (1, 0, 0),
        (1, 0, 1),
        (1, 0, 0),
        (1, 0, 1),
        (1, 0, 2),
        (1, 1, 0),
        (1, 0, 2),
        (2, 0, -1),
    ]
    accepted = [p for p in stream if kept.accept(p)]
    assert accepted == [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (2, 0, -1)]
    assert kept.dropped == 3
    assert kept.last == (2, 0, -1)


def test_a_filter_resumes_after_a_given_position() -> None:
    kept = RedeliveryFilter(last=(5, 10, 3))
    assert not kept.accept((5, 10, 3))
    assert not kept.accept((5, 9, 999))
    assert kept.accept((5, 10, 4))


def test_an_id_without_batch_index_covers_its_whole_entry() -> None:
    from include.pulsar_read import covers

    assert covers((1, 5, -1), (1, 5, -1))
    assert covers((1, 5, -1), (1, 5, 7))
    assert not covers((1, 5, 3), (1, 5, -1))
    assert not covers((1, 5, -1), (1, 6, -1))
    assert not covers(None, (0, 0, -1))
    assert covers(None, None)
