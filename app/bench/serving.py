"""The bench's `serve` phase: the greedy SavedModel served by `attend serve` (a subprocess on
loopback, whose peak RSS is its own), with dynamic batching and without, under 1, 8 and 64
closed-loop REST clients; its goals against the decode phase's offline figures; and version swaps
under load, with and without warm-up records (time to AVAILABLE, the first requests' latency)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from app.bench import load_test
from app.bench.plan import BenchPlan
from app.bench.report import DecodeReport, LoadRow, ServeGoals, ServeReport, ServerRun, SwapRow

SERVE_EXPORT = "greedy"
SERVE_MODEL_NAME = "bench"
SERVE_CLIENTS = (1, 8, 64)
# The server settings compared: TF Serving's batching knobs as recommended for this model (chosen by
# hand among max_batch_size 64 × batch_timeout_micros 0/1000/2000 × num_batch_threads 1/2), and none.
BATCHING_FLAGS = (
    "--max_batch_size=64",
    "--batch_timeout_micros=2000",
    "--num_batch_threads=1",
    "--max_enqueued_batches=64",
)
SERVER_SETTINGS = {"batching": BATCHING_FLAGS, "no_batching": ("--no-batching",)}
# The goals, at the most clients with batching: requests/s at least this share of the offline batch-64
# sentences/s of the same export, p99 latency at most this multiple of its offline batch-1 p50, and
# batching at least this many times the requests/s of no batching.
THROUGHPUT_GOAL = 0.7
P99_GOAL = 4.0
BATCHING_GOAL = 1.5
# Version swaps: each of the plan's exports (`BenchPlan.swap_exports`) with its warm-up records and
# without, a new version published under each number of clients, its first requests timed, then as
# many in steady state.
SWAP_REQUESTS = 100
SWAP_P99_GOAL = 1.5  # the first requests' p99 at most this multiple of steady state's
SWAP_POLL_SECONDS = 0.1  # how often the server looks for the new version (part of time to AVAILABLE)
SWAP_TIMEOUT_SECONDS = 900  # a version not AVAILABLE by then fails the phase
WARMED_LINE = re.compile(r"Warmed up version (\d+) of .*: (\d+) requests in ([\d.]+) s")


def run_serve_phase(
    export_dir: Path,
    sentences: list[str],
    plan: BenchPlan,
    clients: tuple[int, ...] = SERVE_CLIENTS,
    settings: dict[str, tuple[str, ...]] | None = None,
) -> ServeReport:
    """The greedy export served by `attend serve` under each server setting (default: batching on and
    off), loaded by 1, 8 and 64 concurrent clients sending one sentence per request."""
    settings = SERVER_SETTINGS if settings is None else settings
    servers = {}
    with tempfile.TemporaryDirectory(prefix="attend-bench-serve-") as base:
        version = Path(base) / SERVE_MODEL_NAME / "1"  # a model base: BASE/NAME/<version>
        version.parent.mkdir()
        version.symlink_to((export_dir / SERVE_EXPORT).resolve(), target_is_directory=True)
        for label, flags in settings.items():
            servers[label] = serve_under_load(Path(base), list(flags), sentences, clients, plan)
    swaps = [
        row
        for export in plan.swap_exports
        if (export_dir / export).is_dir()
        for warm_up in (True, False)
        for row in swap_under_load(export_dir / export, warm_up, sentences, plan.swap_clients)
    ]
    return ServeReport(
        export=SERVE_EXPORT,
        sentences=len(sentences),
        mean_source_words=round(sum(len(s.split()) for s in sentences) / max(len(sentences), 1), 1),
        max_requests=plan.load_requests,
        max_seconds=plan.load_seconds,
        servers=servers,
        swaps=swaps,
    )


def swap_under_load(
    export: Path, warm_up: bool, sentences: list[str], clients: tuple[int, ...] = (8, 64)
) -> list[SwapRow]:
    """`attend serve` (batching on) with `export` as version 1; under each number of clients a copy is
    published as the next version (without its warm-up records unless `warm_up`), timed until it is
    AVAILABLE, then its first `SWAP_REQUESTS` requests and as many more in steady state."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="attend-bench-swap-") as base:
        model = Path(base) / SERVE_MODEL_NAME
        publish_copy(export, model / "1", warm_up)
        command = [
            *(sys.executable, "-m", "app", "serve", "--model-base", base, "--model-name", SERVE_MODEL_NAME),
            *("--host", "127.0.0.1", "--rest-port", "0", "--grpc-port", "0"),
            *("--poll-seconds", str(SWAP_POLL_SECONDS), *BATCHING_FLAGS),
        ]
        startup = SWAP_TIMEOUT_SECONDS
        with load_test.ServerProcess(command, env=server_environment(), startup_seconds=startup) as server:
            path = f"/v1/models/{SERVE_MODEL_NAME}:predict"
            bodies = [{"instances": [sentence]} for sentence in sentences]
            requests = load_test.post_requests(server.host, server.port, path, bodies)
            for version, count in enumerate(clients, start=2):
                started = time.perf_counter()
                publish_copy(export, model / str(version), warm_up)
                wait_until_available(f"{server.rest}/v1/models/{SERVE_MODEL_NAME}", version)
                available = time.perf_counter() - started
                first, steady = (
                    load_test.run_load(server.host, server.port, requests, count, SWAP_REQUESTS, 600)
                    for _ in range(2)
                )
                rows.append(
                    SwapRow(
                        export=export.name,
                        warm_up=warm_up,
                        clients=count,
                        seconds_to_available=round(available, 2),
                        warmup_s=warmup_seconds(server.log(), version),
                        first_requests=first["requests"],
                        latency_ms_p50=first["latency_ms_p50"],
                        latency_ms_p99=first["latency_ms_p99"],
                        steady_latency_ms_p50=steady["latency_ms_p50"],
                        steady_latency_ms_p99=steady["latency_ms_p99"],
                        errors=first["errors"] + steady["errors"],
                    )
                )
    return rows


def server_environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ATTEND_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def publish_copy(export: Path, version_dir: Path, warm_up: bool) -> None:
    """A copy of `export` published as `version_dir` at once (copied beside it, then renamed), its
    warm-up records left out unless `warm_up`."""
    staging = version_dir.with_name(f"{version_dir.name}.staging")
    ignore = None if warm_up else shutil.ignore_patterns("assets.extra")
    shutil.copytree(export.resolve(), staging, ignore=ignore)
    staging.rename(version_dir)


def wait_until_available(status_url: str, version: int, timeout: float = SWAP_TIMEOUT_SECONDS) -> None:
    """Polls TF Serving's status URL until `version` is AVAILABLE (RuntimeError if it ends instead)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for entry in json.loads(load_test.fetch_text(status_url))["model_version_status"]:
            if entry["version"] == str(version) and entry["state"] == "AVAILABLE":
                return
            if entry["version"] == str(version) and entry["state"] == "END":
                raise RuntimeError(f"version {version} failed to load: {entry['status']}")
        time.sleep(0.02)
    raise RuntimeError(f"version {version} was not AVAILABLE after {timeout:.0f} s")


def warmup_seconds(log: str, version: int) -> float | None:
    """How long the server said `version`'s warm-up took (None: it had no warm-up records)."""
    times = [float(m.group(3)) for m in WARMED_LINE.finditer(log) if int(m.group(1)) == version]
    return times[-1] if times else None


def serve_under_load(
    base: Path, flags: list[str], sentences: list[str], clients, plan: BenchPlan
) -> ServerRun:
    """One `attend serve` subprocess on free loopback ports, loaded by each number of clients in turn
    (after a warm-up); its peak RSS read before it is stopped (SIGTERM, then a kill if it hangs)."""
    command = [
        *(sys.executable, "-m", "app", "serve", "--model-base", str(base), "--model-name", SERVE_MODEL_NAME),
        *("--host", "127.0.0.1", "--rest-port", "0", "--grpc-port", "0", "--poll-seconds", "0", *flags),
    ]
    rows = []
    with load_test.ServerProcess(command, env=server_environment()) as server:
        path = f"/v1/models/{SERVE_MODEL_NAME}:predict"
        bodies = [{"instances": [sentence]} for sentence in sentences]
        requests = load_test.post_requests(server.host, server.port, path, bodies)
        metrics = f"{server.rest}/monitoring/prometheus/metrics"
        for count in clients:
            warmup = max(plan.load_warmup, 2 * count)
            load_test.run_load(server.host, server.port, requests, count, warmup, plan.load_seconds)
            before = load_test.fetch_text(metrics)
            row = load_test.run_load(
                server.host, server.port, requests, count, plan.load_requests, plan.load_seconds
            )
            mean = load_test.mean_batch_size(before, load_test.fetch_text(metrics))
            rows.append(LoadRow(**row, mean_batch_size=None if mean is None else round(mean, 2)))
        peak = server.peak_rss_mb()
    return ServerRun(
        flags=flags,
        load=rows,
        startup_s=round(server.startup_s, 1),
        peak_rss_mb=None if peak is None else round(peak, 1),
        exit_status=server.exit_status,
    )


def serve_goals(serve: ServeReport, decode: DecodeReport) -> ServeGoals | None:
    """The serve phase against the issue's goals, at its most clients: batching's requests/s as a share
    of the offline batch-64 sentences/s of the same export (short sources), its p99 against the
    offline batch-1 p50, and batching against no batching. None without both servers."""
    offline = decode.speed(SERVE_EXPORT, "short")
    if not {"batching", "no_batching"} <= set(serve.servers) or offline is None:
        return None
    clients = max(row.clients for row in serve.servers["batching"].load)
    on, off = serve.servers["batching"].row(clients), serve.servers["no_batching"].row(clients)
    offline_rate = offline.sentences_per_s_batch64
    ratio = on.requests_per_s / offline_rate
    p99_limit = P99_GOAL * offline.latency_ms_batch1_p50
    speedup = on.requests_per_s / off.requests_per_s if off.requests_per_s else float("inf")
    return ServeGoals(
        clients=clients,
        offline_sentences_per_s_batch64=offline_rate,
        requests_per_s=on.requests_per_s,
        ratio_to_offline_batch64=round(ratio, 3),
        throughput_goal=THROUGHPUT_GOAL,
        throughput_goal_met=ratio >= THROUGHPUT_GOAL,
        offline_latency_ms_batch1_p50=offline.latency_ms_batch1_p50,
        latency_ms_p99=on.latency_ms_p99,
        p99_limit_ms=round(p99_limit, 2),
        p99_goal_met=on.latency_ms_p99 is not None and on.latency_ms_p99 <= p99_limit,
        # Little's law: closed-loop clients at the throughput goal wait this long on average
        mean_latency_ms_at_throughput_goal=round(1000 * clients / (THROUGHPUT_GOAL * offline_rate), 1),
        no_batching_requests_per_s=off.requests_per_s,
        batching_speedup=round(speedup, 2),
        batching_goal=BATCHING_GOAL,
        batching_goal_met=speedup >= BATCHING_GOAL,
        errors=sum(row.errors for server in serve.servers.values() for row in server.load),
    )


def format_serve(serve: ServeReport) -> list[str]:
    """The serve phase's rows (server setting × clients), its goals and the servers' peak RSS."""
    lines = [
        f"serving the {serve.export} export over REST (attend serve on loopback): closed-loop clients, "
        f"one of {serve.sentences} short sentences per request, at most "
        f"{serve.max_requests:,} requests or {serve.max_seconds:g} s a row",
        f"{'server':<14}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'mean batch':>12}{'errors':>8}",
    ]
    for label, server in serve.servers.items():
        for row in server.load:
            batch = "-" if row.mean_batch_size is None else f"{row.mean_batch_size:.1f}"
            lines.append(
                f"{label:<14}{row.clients:>8}{row.requests_per_s:>9.0f}{_ms(row.latency_ms_p50):>9}"
                f"{_ms(row.latency_ms_p90):>9}{_ms(row.latency_ms_p99):>9}{batch:>12}{row.errors:>8}"
            )
    for label, server in serve.servers.items():
        lines.append(f"{label}: {' '.join(server.flags)}")
    if serve.goals:
        lines += _format_goals(serve.goals)
    if serve.swaps:
        lines += _format_swaps(serve.swaps)
    peaks = ", ".join(
        f"{label} {'?' if server.peak_rss_mb is None else format(server.peak_rss_mb, '.0f')} MB"
        for label, server in serve.servers.items()
    )
    lines.append(f"server peak RSS: {peaks}")
    return lines


def _format_swaps(swaps: list[SwapRow]) -> list[str]:
    lines = [
        f"version swaps under load (batching on): published → AVAILABLE, then its first {SWAP_REQUESTS} "
        f"requests against the next {SWAP_REQUESTS} (goal: first p99 ≤ {SWAP_P99_GOAL:g} × steady)",
        f"{'export':<12}{'warm-up':>8}{'clients':>8}{'ready s':>9}{'warm s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'steady p99':>11}{'ratio':>7}{'errors':>7}",
    ]
    for row in swaps:
        warm = "-" if row.warmup_s is None else f"{row.warmup_s:.1f}"
        ratio = "-" if row.p99_to_steady is None else f"{row.p99_to_steady:.2f}"
        lines.append(
            f"{row.export:<12}{'yes' if row.warm_up else 'no':>8}{row.clients:>8}"
            f"{row.seconds_to_available:>9.1f}{warm:>8}{_ms(row.latency_ms_p50):>9}{_ms(row.latency_ms_p99):>9}"
            f"{_ms(row.steady_latency_ms_p99):>11}{ratio:>7}{row.errors:>7}"
        )
    return lines


def _format_goals(goals: ServeGoals) -> list[str]:
    return [
        f"{goals.clients} clients with batching: {goals.requests_per_s:.0f} req/s = "
        f"{goals.ratio_to_offline_batch64:.2f} × offline batch-64 "
        f"({goals.offline_sentences_per_s_batch64:.0f} sent/s; goal ≥ {goals.throughput_goal:.2f}: "
        f"{_met(goals.throughput_goal_met)}); p99 {_ms(goals.latency_ms_p99)} ms against "
        f"{goals.p99_limit_ms:.1f} ms = {P99_GOAL:g} × batch-1 p50 ({_met(goals.p99_goal_met)}; "
        f"at the goal's throughput {goals.clients} clients wait "
        f"{goals.mean_latency_ms_at_throughput_goal:.0f} ms on average)",
        f"without batching {goals.no_batching_requests_per_s:.0f} req/s: batching "
        f"{goals.batching_speedup:.1f}× (goal ≥ {goals.batching_goal:g}×: "
        f"{_met(goals.batching_goal_met)}); errors {goals.errors}",
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _met(flag: bool) -> str:
    return "met" if flag else "missed"
