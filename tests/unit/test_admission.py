"""Admission by backlog: hand-worked allocations of one batch budget across topics."""

from __future__ import annotations

import random

from jobs.stream.admission import allocate


def test_idle_topics_leave_their_share_to_the_backlogged_one() -> None:
    # Budget 50,000 over 4 topics: the equal split gave the backlog 12,500.
    got = allocate(50_000, {"big": 300_000, "a": 40, "b": 60, "c": 1})
    assert got == {"c": 1, "a": 40, "b": 60, "big": 49_899}


def test_two_large_backlogs_split_what_the_small_ones_leave() -> None:
    got = allocate(10_000, {"x": 1_000_000, "y": 20_000, "small": 1_000})
    assert got == {"small": 1_000, "x": 4_500, "y": 4_500}


def test_a_topic_across_a_ledger_change_takes_what_is_left() -> None:
    got = allocate(1_000, {"unknown": float("inf"), "known": 100})
    assert got == {"known": 100, "unknown": 900}


def test_every_backlogged_topic_gets_at_least_its_equal_share_or_all_it_has() -> None:
    rng = random.Random(7)
    for _ in range(500):
        topics = {
            f"t{i}": float(rng.choice([1, 5, 300, 10_000, 10**6]))
            for i in range(rng.randint(1, 30))
        }
        budget = rng.randint(1, 100_000)
        got = allocate(budget, topics)
        assert set(got) == set(topics)
        floor = budget // len(topics)
        for topic, backlog in topics.items():
            assert got[topic] >= min(backlog, max(1, floor)), (budget, topics)
            assert got[topic] <= max(1, backlog)
        # The budget is spent (up to the one message each topic always gets) or nobody wants more.
        spent = sum(got.values())
        assert spent <= budget + len(topics)
        assert spent >= min(budget, sum(topics.values())) - len(topics)
