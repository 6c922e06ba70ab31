"""The /metrics response cache: nothing served or kept unless listening, a notification drops
the tenant's answers only, an answer computed across a change is never kept, LRU by bytes."""

from __future__ import annotations

from api.cache import ALL, ResponseCache


def _listening(max_bytes: int = 1_000) -> ResponseCache:
    cache = ResponseCache(max_bytes)
    cache.listening = True
    return cache


def test_nothing_is_served_or_kept_while_not_listening() -> None:
    cache = ResponseCache(1_000)
    cache.put("a", "k", cache.version("a"), b"x")
    assert cache.get("a", "k") is None and len(cache) == 0
    cache.listening = True
    cache.put("a", "k", cache.version("a"), b"x")
    assert cache.get("a", "k") == b"x"
    assert ResponseCache(0).get("a", "k") is None


def test_a_notification_drops_only_its_tenant_and_star_drops_all() -> None:
    cache = _listening()
    for tenant in ("a", "b"):
        cache.put(tenant, "k", cache.version(tenant), tenant.encode())
    cache.invalidate("a")
    assert cache.get("a", "k") is None and cache.get("b", "k") == b"b"
    cache.invalidate(ALL)
    assert cache.get("b", "k") is None and cache.size_bytes == 0


def test_an_answer_computed_across_a_change_is_not_kept() -> None:
    cache = _listening()
    before = cache.version("a")
    cache.invalidate("a")  # a commit's notification arrives while the answer is computed
    cache.put("a", "k", before, b"stale")
    assert cache.get("a", "k") is None
    before = cache.version("b")
    cache.flush()  # the listener reconnected
    cache.put("b", "k", before, b"stale")
    assert cache.get("b", "k") is None


def test_least_recently_used_answers_go_first_within_the_byte_budget() -> None:
    cache = _listening(max_bytes=10)
    cache.put("a", 1, cache.version("a"), b"1234")
    cache.put("a", 2, cache.version("a"), b"5678")
    assert cache.get("a", 1) == b"1234"  # 2 is now the least recently used
    cache.put("a", 3, cache.version("a"), b"9abc")
    assert cache.get("a", 2) is None and cache.get("a", 1) and cache.get("a", 3)
    assert cache.size_bytes <= 10
    cache.put("a", 4, cache.version("a"), b"x" * 11)  # larger than the budget
    assert cache.get("a", 4) is None
