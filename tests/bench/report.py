"""``make bench``: every benchmark in a shorter form, and one report of them.

Runs, one after the other and each on its own freshly started services, the generator, stream,
load and API benchmarks and the soak (``tests/bench/*.py``) with smaller sizes than their
defaults (the flags and variables below), reads the JSON summary each prints last on stdout,
and writes ``docs/benchmarks/REPORT.md``: the machine, every target of the issues next to the
value measured in this run (met / not met), the baselines each benchmark measured in the same
run side by side, each benchmark's own tables, and PNG plots next to it (soak throughput, lag
and memory over time; API latency percentiles per endpoint). Every summary is also kept in
``docs/benchmarks/results.json`` and the soak's samples in ``docs/benchmarks/soak.json``, so
``--render-only`` redraws the report from them without measuring again.

Progress goes to stderr (each benchmark's own, prefixed by the step).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from include.embedded import prereqs

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "docs" / "benchmarks"
GIB = 2**30
RATE_WINDOW_S = 30.0  # the soak's throughput plot: rates over this window


def _log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- running the benchmarks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One benchmark: its module, arguments and environment."""

    name: str
    module: str
    args: list[str]
    env: dict[str, str]


def steps(args: argparse.Namespace, soak_out: Path) -> list[Step]:
    """The benchmarks, in their shorter forms."""
    return [
        Step("generator", "tests.bench.bench_generator", [],
             {"BENCH_COUNT": str(args.generator_events)}),
        Step("stream", "tests.bench.bench_stream", [], {
            "BENCH_EVENTS": str(args.stream_events),
            "BENCH_SECONDS": str(args.stream_seconds),
            "BENCH_RATES": "10000,2000",
        }),
        Step("load", "tests.bench.bench_load", [], {
            "BENCH_EVENTS": str(args.load_events),
            "BENCH_BASELINE_ROWS": str(args.load_baseline_rows),
        }),
        Step("api", "tests.bench.bench_api", [
            "--events", str(args.api_events), "--clients", str(args.api_clients),
            "--seconds", f"{args.api_seconds:g}", "--warmup", "3", "--runs", "5",
        ], {}),
        Step("soak", "tests.bench.soak", [
            "--rate", f"{args.soak_rate:g}", "--minutes", f"{args.soak_minutes:g}",
            "--interval", f"{args.soak_interval:g}", "--out", str(soak_out),
        ] + ([] if args.soak_airflow else ["--no-airflow"]), {}),
    ]  # fmt: skip


def json_summary(stdout: str) -> dict[str, Any]:
    """The JSON object a benchmark prints last on stdout."""
    start = stdout.rfind("\n{")
    text = stdout[start + 1 :] if start >= 0 else stdout
    summary: dict[str, Any] = orjson.loads(text)
    return summary


def run_step(step: Step) -> dict[str, Any]:
    """Run one benchmark; its stderr passes through, its stdout is kept."""
    command = [sys.executable, "-m", step.module, *step.args]
    _log(f"{step.name}: {' '.join(command[1:])} {step.env or ''}")
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **step.env},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    out: dict[str, Any] = {
        "command": " ".join([*(f"{k}={v}" for k, v in step.env.items()), "python", *command[1:]]),
        "seconds": seconds,
        "returncode": result.returncode,
    }
    try:
        out["summary"] = json_summary(result.stdout)
        out["markdown"] = result.stdout[: result.stdout.rfind("\n{")].strip()
    except orjson.JSONDecodeError:
        out["summary"] = None
        out["markdown"] = result.stdout.strip()
    _log(f"{step.name}: exit {result.returncode} after {seconds / 60:.1f} min")
    return out


# -- the machine ---------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    with Path("/proc/cpuinfo").open(encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the benchmarks ran on."""
    try:
        postgres = _first_line([str(prereqs.find_postgres_bindir(None) / "postgres"), "--version"])
    except prereqs.MissingPrerequisiteError:
        postgres = "not found"
    versions = {}
    for package in ("pyspark", "pulsar-lite", "deltalake", "apache-airflow", "fastapi"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / GIB,
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _first_line([shutil.which("java") or "java", "-version"]),
        "postgres": postgres,
        "packages": versions,
        "commit": commit,
        "load_average_at_start": os.getloadavg(),
    }


# -- the report ----------------------------------------------------------------------------------


def _num(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:  # NaN
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _met(ok: bool | None) -> str:
    if ok is None:
        return "not measured"
    return "met" if ok else "**not met**"


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(issue, target, measured in this run, met) for every target of the issues, from the
    benchmarks' results by name."""

    def summary(name: str) -> dict[str, Any] | None:
        run = results.get(name)
        return None if run is None else run.get("summary")

    rows: list[tuple[str, str, str, str]] = []

    def add(issue: str, target: str, measured: Callable[[dict[str, Any]], tuple[str, bool]],
            name: str) -> None:  # fmt: skip
        data = summary(name)
        if data is None:
            run = results.get(name)
            why = "not run" if run is None else f"benchmark failed (exit {run['returncode']})"
            rows.append((issue, target, why, _met(None)))
            return
        text, ok = measured(data)
        rows.append((issue, target, text, _met(ok)))

    add("#2", "generator burst into Pulsar ≥ 100,000 events/s",
        lambda d: (f"{_num(max(d['one_process_per_s'], d['two_processes_per_s']))} events/s "
                   f"(1 process {_num(d['one_process_per_s'])}, 2 processes "
                   f"{_num(d['two_processes_per_s'])})",
                   bool(d["met"]["events_per_s"])), "generator")  # fmt: skip

    def sustained(d: dict[str, Any]) -> tuple[str, bool]:
        if d["micro_batches"] < 2:
            return f"not measurable: {_num(d['events'])} events fit in one micro-batch", False
        text = f"{_num(d['backlog_events_per_s'])} events/s (backlog of {_num(d['events'])} "
        return text + f"events, {d['micro_batches']} micro-batches)", bool(d["met"]["events_per_s"])

    add("#3", "stream sustained ≥ 50,000 events/s, Pulsar to silver", sustained, "stream")

    def p95(d: dict[str, Any]) -> tuple[str, bool]:
        at = [r for r in d["steady"] if r["rate"] == d["targets"]["p95_at_rate"]]
        if not at:
            return "not measured at that rate", False
        r = at[0]
        return (f"p95 {r['p95']:.1f} s, p50 {r['p50']:.1f} s (publisher reached "
                f"{_num(r['published_rate'])}/s)", bool(d["met"]["p95_s"]))  # fmt: skip

    add("#3", "stream p95 latency < 2 s at 10,000 events/s", p95, "stream")
    add("#3", "stream peak memory < 1.5 GB (driver, JVM, Python workers)",
        lambda d: (f"{max([d['peak_memory_bytes']['total'], *(r['peak_memory_bytes'] for r in d['steady'])]) / 1e9:.2f} GB "  # noqa: E501
                   f"(backlog: {d['peak_memory_bytes']['total'] / 1e9:.2f} GB)",
                   bool(d["met"]["peak_memory_bytes"])), "stream")  # fmt: skip
    add("#4", "load_postgres ≥ 100,000 rows/s",
        lambda d: (f"{_num(d['rows_per_s'])} rows/s ({_num(d['rows'])} rows; "
                   f"{_num(d['rows_per_s_wall'])} with the JVM start)",
                   bool(d["met"]["rows_per_s"])), "load")  # fmt: skip
    add("#4", "load_postgres ≥ 10x a row-by-row INSERT",
        lambda d: (f"{d['speedup']:.1f}x ({_num(d['baseline_rows_per_s'])} rows/s baseline)",
                   bool(d["met"]["speedup"])), "load")  # fmt: skip

    def endpoint(d: dict[str, Any], name: str) -> dict[str, Any]:
        return next(r for r in d["concurrent"] if r["endpoint"] == name)

    add("#5", "`/metrics` p99 < 50 ms at 50 clients",
        lambda d: (f"p99 {_num(endpoint(d, 'metrics')['p99_ms'])} ms at {d['clients']} clients "
                   f"(p50 {_num(endpoint(d, 'metrics')['p50_ms'])} ms; {_num(d['events'])} "
                   "events)", bool(d["targets"]["metrics_p99_under_50ms_at_clients"])),
        "api")  # fmt: skip

    def no_errors(name: str) -> Callable[[dict[str, Any]], tuple[str, bool]]:
        def measured(d: dict[str, Any]) -> tuple[str, bool]:
            run = endpoint(d, name)
            text = f"{run['errors']} errors of {_num(run['requests'])} requests at "
            return text + f"{d['clients']} clients", run["errors"] == 0

        return measured

    for name in ("metrics", "events"):
        add("#5", f"`/{name}`: no errors at 50 clients", no_errors(name), "api")
    add("#5", "`/metrics` ≥ 20x faster than a plain GROUP BY",
        lambda d: (f"{d['single_client']['speedup_median']:.1f}x (medians, one client)",
                   bool(d["targets"]["metrics_20x_faster_than_plain"])), "api")  # fmt: skip
    add("#6", "soak: 10,000 events/s for at least 10 minutes",
        lambda d: (f"{_num(d['published_rate'])} events/s published for "
                   f"{d['publish_seconds'] / 60:.1f} min; the stream committed "
                   f"{_num(d['committed_rate_while_publishing'])}/s meanwhile",
                   d["published_rate"] >= 0.99 * 10_000 and d["publish_seconds"] >= 600
                   and d["committed_rate_while_publishing"] >= 0.99 * d["published_rate"]),
        "soak")  # fmt: skip
    add("#6", "soak: consumer lag stays bounded",
        lambda d: (f"lag slope {_num(d['lag_slope_second_half_per_s'])} messages/s over the "
                   f"second half; max {_num(d['lag_max_messages'])} messages, heartbeat "
                   f"{_num(d['heartbeat_lag_max_s'], 1)} s", bool(d["lag_bounded"])),
        "soak")  # fmt: skip
    add("#6", "soak: memory of every process flat",
        lambda d: ("PSS slopes over the second half: "
                   + "; ".join(f"{k} {v['pss_slope_second_half_mib_per_min']:+.1f}"
                               for k, v in d["memory"].items()) + " MiB/min",
                   bool(d["memory_flat"])), "soak")  # fmt: skip
    add("#6", "soak: no API errors",
        lambda d: (", ".join(f"`/{k}` {v['errors']} of {_num(v['requests'])}"
                             for k, v in d["api"].items()), d["api_errors"] == 0),
        "soak")  # fmt: skip

    def exact(d: dict[str, Any]) -> tuple[str, bool]:
        text = "equal" if d["totals_exact"] else "**different**"
        text += f" for {len(d['tenants'])} tenants, "
        text += f"{_num(sum(d['published_valid'].values()))} distinct valid events"
        if not d["drained"]:
            text += " (the stream did not drain within the timeout)"
        return text, bool(d["totals_exact"])

    add("#6", "soak: exact totals at the end", exact, "soak")
    return rows


def baseline_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, measured, baseline, ratio) for each benchmark that measures a baseline."""
    rows = []
    gen = (results.get("generator") or {}).get("summary")
    if gen:
        base = gen["baseline_raw_send_per_s"]
        for label, key in (
            ("1 process", "one_process_per_s"),
            ("2 processes", "two_processes_per_s"),
        ):
            rows.append((f"generator burst, {label} (events/s) vs. raw pulsar-client send of "
                         "pre-built payloads", _num(gen[key]), _num(base),
                         f"{gen[key] / base:.2f}x"))  # fmt: skip
    load = (results.get("load") or {}).get("summary")
    if load:
        rows.append(("load_postgres (rows/s) vs. one INSERT per row", _num(load["rows_per_s"]),
                     _num(load["baseline_rows_per_s"]), f"{load['speedup']:.1f}x"))  # fmt: skip
    api = (results.get("api") or {}).get("summary")
    if api:
        side = api["single_client"]
        rows.append(("`/metrics` 30 days hourly, one client (median ms) vs. a plain GROUP BY over "
                     "the raw events (ratio: plain / `/metrics`)", _num(side["api"]["median_ms"]),
                     _num(side["plain"]["median_ms"]),
                     f"{side['speedup_median']:.1f}x"))  # fmt: skip
    return rows


def render(results: dict[str, Any], soak: dict[str, Any] | None, out_dir: Path) -> str:
    """The Markdown of REPORT.md (the plots are written by ``plots``)."""
    m = results["machine"]
    lines = [
        "# Benchmark report",
        "",
        "Generated by `make bench` (`python -m tests.bench.report`); running it again measures "
        "again and rewrites this file, its plots and `results.json`. Every number below was "
        "measured in that one run; nothing is copied from earlier runs. The benchmarks ran in "
        "shorter forms than their defaults (commands below); `docs/performance.md` explains "
        f"each measure and what bounds it. A load average well above the {m['cores']} cores "
        "means other work shared the machine while the benchmarks ran.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| date (UTC) | {m['date']} |",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| RAM | {m['ram_gib']:.1f} GiB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| Java | {m['java']} |",
        f"| PostgreSQL | {m['postgres']} |",
        "| packages | " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + " |",
        f"| commit | `{m['commit']}` |",
        "| load average at start (1, 5, 15 min) | "
        + ", ".join(f"{x:.2f}" for x in m["load_average_at_start"])
        + " |",
        "| load average at the end | "
        + (
            ", ".join(f"{x:.2f}" for x in m["load_average_at_end"])
            if "load_average_at_end" in m
            else "not recorded (the run stopped before its end)"
        )
        + " |",
        "| duration of all benchmarks | "
        + (f"{_num(m['minutes'], 1)} min" if "minutes" in m else "not recorded")
        + " |",
        "",
        "## Targets",
        "",
        "Every target of the issues, next to what this run measured.",
        "",
        "| issue | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    rows = target_rows(results["runs"])
    lines += [f"| {i} | {t} | {v} | {ok} |" for i, t, v, ok in rows]
    unmet = sum(1 for *_, ok in rows if ok != "met")
    lines += ["", f"{len(rows) - unmet} of {len(rows)} targets met in this run.", ""]
    lines += [
        "## Baselines, side by side",
        "",
        "Each benchmark measures its baseline in the same run, on the same services. The "
        "streaming and soak benchmarks have none: their targets are absolute.",
        "",
        "| measure vs. baseline | measured | baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {w} | {v} | {b} | {r} |" for w, v, b, r in baseline_rows(results["runs"])]
    lines += ["", "## Plots", ""]
    for name, caption in PLOT_CAPTIONS.items():
        if (out_dir / name).exists():
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines += ["## Each benchmark", ""]
    for name, run in results["runs"].items():
        lines += [
            f"### {name}",
            "",
            f"`{run['command']}`: exit {run['returncode']}, {run['seconds'] / 60:.1f} min.",
            "",
            run["markdown"] or "(no output)",
            "",
        ]
    if soak is not None:
        lines += soak_notes(soak)
    return "\n".join(lines).rstrip() + "\n"


def soak_notes(soak: dict[str, Any]) -> list[str]:
    """How the soak's criteria are defined, and what bounded it."""
    cpu = soak.get("cpu_cores_while_publishing", {})
    busiest = sorted(
        ((v, k) for k, v in cpu.items() if k not in ("machine (all processes)",)), reverse=True
    )
    machine = cpu.get("machine (all processes)")
    lines = [
        "## Soak: definitions and what bounds it",
        "",
        "- **Lag** is messages published (the generators' progress, interpolated between their "
        "10-second reports) minus messages the stream committed (`stream_batches.input_rows`). "
        "It is **bounded** when its least-squares slope over the second half of publishing is at "
        "most 1 % of the publishing rate. The heartbeat lag is the stream's own: commit time "
        "minus the oldest publish time in its last batch.",
        "- **Memory flat**: least-squares slopes of each supervised program's RSS and PSS "
        "(process and descendants; a `load_postgres` task's Spark job is counted apart and not "
        "judged) over the second half of the loaded phase (publishing and draining). Flat when "
        "the PSS slope is at most 2 MiB/min or 0.5 % of the mean PSS per minute: PSS splits "
        "shared pages between the processes sharing them, while RSS counts every shared page a "
        'process touched (a PostgreSQL backend reading more of the shared buffers "grows" '
        "without using more memory). Both slopes are in the soak's table.",
        "- **Exact totals**: after the stream drained (and, with Airflow, a last `load_postgres` "
        "run), per tenant the distinct valid events the generators published equal the speed "
        "layer, the `/metrics` totals through a tenant token, the silver table's distinct event "
        "ids (with no duplicate rows) and the loaded `events` rows; quarantined rows equal the "
        "malformed messages published.",
    ]
    if machine is not None:
        cores = int(soak.get("cores") or os.cpu_count() or 1)
        top = ", ".join(f"{k} {v:.2f}" for v, k in busiest[:5])
        text = (
            f"- **What bounds it**: while publishing, {machine:.2f} of the machine's {cores} "
            f"cores were busy (busiest programs: {top}). The stream committed "
            f"{_num(soak['committed_rate_while_publishing'])} events/s while publishing and "
            f"{_num(soak['drain_rate'])} events/s while draining the backlog, against "
            f"{_num(soak['published_rate'])} events/s published. "
        )
        if soak["lag_bounded"]:
            text += "The stream kept up: its lag did not grow."
        elif machine >= 0.9 * cores:
            text += (
                "The cores were saturated: the stream shares them with the generators, the "
                "broker, PostgreSQL, the API and Airflow's loads, and its own cost per event "
                "(validation and the driver-side sink, `docs/performance.md`) bounds it below the "
                "rate, so the backlog grows for as long as publishing lasts."
            )
        else:
            text += (
                "The cores were not saturated, so the bound is inside the streaming job (its "
                "fixed cost per micro-batch and its serial driver-side sink, "
                "`docs/performance.md`)."
            )
        if not soak["drained"]:
            samples = sorted(soak.get("samples", []), key=lambda x: x["t"])
            drain = [x for x in samples if x["phase"] == "drain"]
            if len(drain) >= 2:
                rate = (drain[-1]["consumed"] - drain[0]["consumed"]) / (
                    drain[-1]["t"] - drain[0]["t"]
                )
                text += (
                    f" It did not drain within the {soak['config']['drain_timeout']:.0f} s the "
                    f"soak waits: {_num(drain[-1]['consumed'])} of {_num(soak['published'])} "
                    f"messages committed, {_num(rate)} messages/s over the drain phase (from its "
                    "samples); the totals above are therefore a snapshot, not a check of the "
                    "drained state."
                )
        lines.append(text)
    restarts = soak.get("restarts") or {}
    lines.append(
        "- **Restarts** by supervisord during the soak (a program's pid changed): "
        + (", ".join(f"{k} {v}" for k, v in sorted(restarts.items())) or "none")
        + "."
    )
    lines.append("")
    return lines


# -- plots ---------------------------------------------------------------------------------------

PLOT_CAPTIONS = {
    "soak_throughput.png": "Soak: events/s published and committed by the stream (30 s windows)",
    "soak_lag.png": "Soak: lag in messages (published - committed) and the stream heartbeat's lag",
    "soak_memory.png": "Soak: RSS of every supervised program over time",
    "api_latency.png": "API latency percentiles per endpoint (bench_api at its clients; soak)",
}


def plots(results: dict[str, Any], soak: dict[str, Any] | None, out_dir: Path) -> None:
    """Write the PNG plots next to the report (``results``: the benchmarks' by name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if soak is not None and soak.get("samples"):
        samples = sorted(soak["samples"], key=lambda s: s["t"])
        minutes = [s["elapsed_s"] / 60 for s in samples]
        stop = soak.get("publish_stop_elapsed_s", soak["publish_seconds"]) / 60

        def rates(key: str) -> list[float]:
            """Per sample, the rate over the last ``RATE_WINDOW_S`` seconds (micro-batches
            commit in steps, so a rate between two samples alone is spiky)."""
            out = []
            for i, b in enumerate(samples):
                a = next((s for s in reversed(samples[:i]) if b["t"] - s["t"] >= RATE_WINDOW_S),
                         samples[0])  # fmt: skip
                out.append((b[key] - a[key]) / (b["t"] - a["t"]) if b is not a else float("nan"))
            return out

        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot(minutes, rates("published"), label="published (generator)")
        ax.plot(minutes, rates("consumed"), label="committed by the stream")
        ax.axhline(soak["target_rate"], color="grey", linestyle="--", label="target rate")
        ax.axvline(stop, color="black", linestyle=":", label="publishing stops")
        ax.set_xlabel("minutes since publishing started")
        ax.set_ylabel("events/s")
        ax.set_title(PLOT_CAPTIONS["soak_throughput.png"])
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "soak_throughput.png", dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot(minutes, [s["lag_messages"] for s in samples], label="lag (messages)")
        ax.axvline(stop, color="black", linestyle=":", label="publishing stops")
        ax.set_xlabel("minutes since publishing started")
        ax.set_ylabel("messages published, not yet committed")
        right = ax.twinx()
        right.plot(
            minutes,
            [s["heartbeat_lag_s"] for s in samples],
            color="tab:red",
            label="heartbeat lag (s)",
        )
        right.set_ylabel("heartbeat lag (s)")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left")
        ax.set_title(PLOT_CAPTIONS["soak_lag.png"])
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "soak_lag.png", dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 5))
        names = sorted({n for s in samples for n in s["programs"]})
        for name in names:
            ax.plot(
                minutes,
                [s["programs"].get(name, {}).get("rss_mib", float("nan")) for s in samples],
                label=name,
            )
        ax.axvline(stop, color="black", linestyle=":", label="publishing stops")
        ax.set_xlabel("minutes since publishing started")
        ax.set_ylabel("RSS (MiB), process and descendants")
        ax.set_title(PLOT_CAPTIONS["soak_memory.png"])
        ax.legend(fontsize=8, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "soak_memory.png", dpi=110)
        plt.close(fig)

    panels: list[tuple[str, dict[str, dict[str, float]]]] = []
    api = (results.get("api") or {}).get("summary")
    if api:
        panels.append(
            (f"bench_api, {api['clients']} clients, {api['events']:,} events",
             {r["endpoint"]: r for r in api["concurrent"]})
        )  # fmt: skip
    if soak is not None:
        panels.append((f"soak, {soak['config']['clients']} clients, live data", soak["api"]))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
        for ax, (title, by_endpoint) in zip(axes[0], panels, strict=True):
            keys = ("p50_ms", "p95_ms", "p99_ms")
            endpoints = list(by_endpoint)
            width = 0.8 / len(keys)
            for k, key in enumerate(keys):
                ax.bar(
                    [e + k * width for e in range(len(endpoints))],
                    [by_endpoint[e][key] or 0 for e in endpoints],
                    width,
                    label=key.removesuffix("_ms"),
                )
            ax.set_xticks([e + width for e in range(len(endpoints))])
            ax.set_xticklabels([f"/{e}" for e in endpoints])
            ax.set_yscale("log")
            ax.set_ylabel("latency (ms, log scale)")
            ax.axhline(50, color="grey", linestyle="--", label="/metrics p99 target")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out_dir / "api_latency.png", dpi=110)
        plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--generator-events", type=int, default=200_000, help="bench_generator BENCH_COUNT")
    add("--stream-events", type=int, default=150_000, help="bench_stream BENCH_EVENTS")
    add("--stream-seconds", type=int, default=20, help="bench_stream BENCH_SECONDS per rate")
    add("--load-events", type=int, default=200_000, help="bench_load BENCH_EVENTS")
    add("--load-baseline-rows", type=int, default=10_000, help="bench_load BENCH_BASELINE_ROWS")
    add("--api-events", type=int, default=1_000_000, help="bench_api --events")
    add("--api-clients", type=int, default=50, help="bench_api --clients")
    add("--api-seconds", type=float, default=15, help="bench_api --seconds per endpoint")
    add("--soak-rate", type=float, default=10_000, help="soak --rate")
    add("--soak-minutes", type=float, default=4, help="soak --minutes")
    add("--soak-interval", type=float, default=10, help="soak --interval")
    add("--no-soak-airflow", dest="soak_airflow", action="store_false", help="soak --no-airflow")
    add("--only", help="comma-separated steps to run (generator,stream,load,api,soak); the "
        "others keep their results from results.json")  # fmt: skip
    add("--render-only", action="store_true", help="redraw from results.json and soak.json")
    add("--out-dir", type=Path, default=OUT_DIR, help="where REPORT.md and the plots go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks (or reuse their results), then write the report and the plots."""
    args = parse_args(argv)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file, soak_file = out_dir / "results.json", out_dir / "soak.json"
    results: dict[str, Any] = {"runs": {}}
    if args.render_only or args.only:
        results = orjson.loads(results_file.read_bytes())
    if not args.render_only:
        wanted = set(args.only.split(",")) if args.only else None
        results["machine"] = machine()
        todo = [s for s in steps(args, soak_file) if wanted is None or s.name in wanted]
        started = time.monotonic()
        _log(f"running {', '.join(s.name for s in todo)} (about 25 minutes in all)")
        for number, step in enumerate(todo, 1):
            _log(f"step {number} of {len(todo)}: {step.name}")
            results["runs"][step.name] = run_step(step)
            results_file.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        _log(f"benchmarks done in {(time.monotonic() - started) / 60:.1f} min")
        results["machine"]["load_average_at_end"] = os.getloadavg()
        results["machine"]["minutes"] = (time.monotonic() - started) / 60
    soak = None
    soak_summary = (results["runs"].get("soak") or {}).get("summary")
    if soak_summary and soak_file.exists():
        soak = orjson.loads(soak_file.read_bytes())
        if soak.get("started_at") != soak_summary.get("started_at"):
            soak = None  # samples of another run than the summary's
    plots(results["runs"], soak, out_dir)
    report = render(results, soak, out_dir)
    (out_dir / "REPORT.md").write_text(report, encoding="utf-8")
    _log(f"wrote {out_dir / 'REPORT.md'}")
    print(report)


if __name__ == "__main__":
    main()
