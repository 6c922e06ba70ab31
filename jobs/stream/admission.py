"""Admission control across topics: how many messages of each topic one micro-batch takes.

An equal split of the batch budget lets one tenant's backlog drain at a fraction of the budget
while idle topics leave their share unused. Max-min fairness instead: every topic gets what it
asks for up to an equal share of what is left, and what small topics do not use goes to the
large ones. A topic with a backlog always gets at least ``min(backlog, budget // topics)``, so
none starves behind a large one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def allocate(budget: int, backlogs: Mapping[str, float]) -> dict[str, int]:
    """Messages admitted per topic for a batch of about ``budget`` messages.

    ``backlogs`` maps each topic with new messages to its estimated backlog (messages). Every
    topic gets at least one message, so a batch always makes progress on each topic.
    """
    admitted: dict[str, int] = {}
    left = budget
    waiting = sorted(backlogs.items(), key=lambda kv: (kv[1], kv[0]))
    for index, (topic, backlog) in enumerate(waiting):
        share = left // (len(waiting) - index)
        take = max(1, math.ceil(min(backlog, share)))
        admitted[topic] = take
        left = max(0, left - take)
    return admitted
