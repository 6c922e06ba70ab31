"""``python -m generator``: publish realistic events to the tenants' topics.

Examples::

    python -m generator burst --count 1000000 --tenant-count 4
    python -m generator continuous --rate 200 --tenants acme_shop,globex_store
    python -m generator burst --count 10000 --seed 7 --duplicate-rate 0.05 --malformed-rate 0.01

It registers the tenants it uses, prints a live progress line (or a JSON log line every ten
seconds when its output is not a terminal), and ends with a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import logging
import signal
from datetime import datetime
from types import FrameType

import orjson

from generator.catalog import Merchant, demo_tenant_ids, merchant_profile
from generator.messages import FaultShares
from generator.runner import PublishPlan, publish, publish_parallel
from include.db import connect
from include.log import configure_logging
from include.settings import Settings, get_settings
from include.tenants import register_tenant, validate_tenant_id

log = logging.getLogger("generator")


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a share is between 0 and 1, not {text}")
    return value


def _tenant_list(text: str) -> list[str]:
    try:
        return [validate_tenant_id(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m generator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    burst = modes.add_parser("burst", help="publish N messages as fast as possible")
    burst.add_argument("--count", type=int, required=True, help="messages to publish")
    continuous = modes.add_parser("continuous", help="publish at a steady rate until stopped")
    continuous.add_argument("--rate", type=float, required=True, help="events per second")
    continuous.add_argument("--duration", type=float, help="stop after this many seconds")
    for mode in (burst, continuous):
        who = mode.add_mutually_exclusive_group()
        who.add_argument("--tenants", type=_tenant_list, help="comma-separated tenant ids")
        who.add_argument("--tenant-count", type=int, help="use the first N demo tenants")
        mode.add_argument("--seed", type=int, help="seed for reproducible output")
        mode.add_argument(
            "--start-time",
            type=datetime.fromisoformat,
            help="event time of the first session (default: now); with --seed "
            "a burst is then byte-for-byte reproducible",
        )
        mode.add_argument(
            "--v2-share",
            type=_share,
            default=0.3,
            help="share of sessions using schema version 2 (default 0.3)",
        )
        mode.add_argument(
            "--late-share",
            type=_share,
            default=0.0,
            help="share of sessions whose events are hours to days late",
        )
        mode.add_argument(
            "--duplicate-rate",
            type=_share,
            default=0.0,
            help="share of messages that resend an earlier event_id",
        )
        mode.add_argument(
            "--malformed-rate",
            type=_share,
            default=0.0,
            help="share of messages that are not valid JSON",
        )
        mode.add_argument(
            "--bad-version-rate",
            type=_share,
            default=0.0,
            help="share of messages with an unsupported schema_version",
        )
        mode.add_argument(
            "--tenant-mismatch-rate",
            type=_share,
            default=0.0,
            help="share of messages whose tenant_id is not their topic's tenant",
        )
        mode.add_argument("--producer-id", default="generator-1", help="lineage.producer_id")
        mode.add_argument("--pulsar-url", help="overrides LAKEHOUSE_PULSAR_URL")
        mode.add_argument(
            "--processes",
            type=int,
            default=1,
            help="publishing processes; each takes a share of the tenants",
        )
    return parser


def register_merchants(settings: Settings, tenant_ids: list[str]) -> list[Merchant]:
    """Register each tenant (an existing registration wins) and return their profiles."""
    merchants = []
    with connect(settings) as conn:
        for tenant_id in tenant_ids:
            profile = merchant_profile(tenant_id)
            stored = register_tenant(conn, tenant_id, profile.display_name, profile.currency)
            merchants.append(merchant_profile(tenant_id, currency=stored.currency))
    return merchants


def plan_from_args(args: argparse.Namespace, settings: Settings) -> PublishPlan:
    """Register the tenants the arguments name and build the publishing plan."""
    if args.tenants:
        tenant_ids = args.tenants
    elif args.tenant_count:
        tenant_ids = demo_tenant_ids(args.tenant_count)
    else:
        tenant_ids = list(settings.demo_tenants)
    return PublishPlan(
        merchants=tuple(register_merchants(settings, tenant_ids)),
        pulsar_url=args.pulsar_url or settings.pulsar_url,
        pulsar_auth_token=settings.pulsar_token,
        topic_template=settings.topic_template,
        count=args.count if args.mode == "burst" else None,
        rate=args.rate if args.mode == "continuous" else None,
        duration_s=args.duration if args.mode == "continuous" else None,
        seed=args.seed,
        start_time=args.start_time,
        v2_share=args.v2_share,
        late_share=args.late_share,
        faults=FaultShares(
            args.duplicate_rate,
            args.malformed_rate,
            args.bad_version_rate,
            args.tenant_mismatch_rate,
        ),
        producer_id=args.producer_id,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 if any message failed for good)."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("stopping after the messages in flight", extra={"signal": signum})

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plan = plan_from_args(args, settings)
    if args.processes > 1:
        summary = publish_parallel(plan, args.processes)
    else:
        summary = publish(plan, lambda: stopping)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 1 if summary["failed"] or summary["unacknowledged"] else 0
