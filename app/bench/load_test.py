"""A loopback load test of a REST server: a server subprocess started and always stopped, closed-loop
clients on keep-alive HTTP/1.1 connections, and the arithmetic of the report (latency percentiles,
the mean merged batch from the server's Prometheus page).

Standard library only (the bench's `serve` phase drives `attend serve` with it): the clients are
asyncio coroutines writing raw HTTP/1.1 on `asyncio.open_connection`, so that on a small machine
the client takes little of the CPU the server is measured with.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

# `  REST: http://127.0.0.1:PORT/v1/models/NAME`, as `attend serve` prints it once it is ready
REST_LINE = re.compile(r"^\s*REST: (http://(\[[^\]]+\]|[^:/\s]+):(\d+))(/\S*)?\s*$")
# one sample of a Prometheus text page: `name{labels} value`
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)")


# === Arithmetic ===
def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) of `values`, interpolated linearly between the nearest ranks
    (numpy's default); NaN for no values."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def metric_totals(text: str, name: str) -> float | None:
    """The sum of every sample of metric `name` (all label sets) in a Prometheus text page;
    None if it has none."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            total, found = total + float(match.group(2)), True
    return total if found else None


def mean_batch_size(before: str, after: str, histogram: str = "attend_batch_size") -> float | None:
    """Mean rows per merged call between two readings of a metrics page: the growth of the
    histogram's `_sum` over that of its `_count`; None when no batch ran in between."""

    def reading(text: str) -> tuple[float, float]:
        return (
            metric_totals(text, f"{histogram}_sum") or 0.0,
            metric_totals(text, f"{histogram}_count") or 0.0,
        )

    (sum_before, count_before), (sum_after, count_after) = reading(before), reading(after)
    batches = count_after - count_before
    return (sum_after - sum_before) / batches if batches > 0 else None


def fetch_text(url: str, timeout: float = 30) -> str:
    """A GET's body as text (the metrics page)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


# === The server ===
# Linux: prctl(PR_SET_PDEATHSIG) in the server before it runs, so that it gets a SIGTERM if the process
# that started it dies without stopping it (libc is loaded here, not in the child between fork and exec).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident set (VmHWM of /proc/PID/status) in MB; None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


class ServerProcess:
    """A server subprocess, ready once it has printed its `REST: http://HOST:PORT…` line.

    `with ServerProcess(command) as server:` starts it and stops it on leaving, however the block
    ends: SIGTERM, then a kill if it has not exited within `stop_seconds`.

    Args:
        command: the full command line (e.g. `python -m app serve … --rest-port 0`).
        startup_seconds: how long it may take to print its REST line.
        env: its environment.
    """

    def __init__(
        self,
        command: list[str],
        startup_seconds: float = 300,
        stop_seconds: float = 60,
        env: dict[str, str] | None = None,
    ):
        self.command, self.startup_seconds, self.stop_seconds, self.env = (
            command,
            startup_seconds,
            stop_seconds,
            env,
        )
        self.process: subprocess.Popen | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.rest = ""  # http://HOST:PORT
        self.host, self.port = "", 0
        self.startup_s = math.nan
        self.exit_status: int | None = None
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> ServerProcess:
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            preexec_fn=_terminate_with_parent if _LIBC is not None else None,
        )
        self._readers = [
            threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()
        try:
            self._wait_until_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until_ready(self, started: float) -> None:
        deadline = started + self.startup_seconds
        while True:
            for line in list(self.stdout):
                if match := REST_LINE.match(line):
                    self.rest, self.host = match.group(1), match.group(2).strip("[]")
                    self.port = int(match.group(3))
                    self.startup_s = time.perf_counter() - started
                    return
            if self.process.poll() is not None:
                status = self.process.returncode
                raise RuntimeError(f"the server exited ({status}) before it was ready:\n{self.log()[-3000:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"the server was not ready after {self.startup_seconds:.0f} s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)

    def peak_rss_mb(self) -> float | None:
        """Its peak RSS so far (read while it runs: the figure is gone once it has exited)."""
        return peak_rss_mb(self.process.pid) if self.process and self.process.poll() is None else None

    def log(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> int | None:
        """SIGTERM and wait (kill after `stop_seconds`); returns its exit status (negative: killed by
        that signal)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        for reader in self._readers:
            reader.join(5)
        self.exit_status = self.process.returncode
        return self.exit_status


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


# === The clients ===
@dataclasses.dataclass
class _Schedule:
    """Hands out request numbers: at most `requests`, none after `seconds`."""

    requests: int
    seconds: float
    started: float = dataclasses.field(default_factory=time.perf_counter)
    issued: int = 0

    def take(self) -> int | None:
        if self.issued >= self.requests or time.perf_counter() - self.started > self.seconds:
            return None
        self.issued += 1
        return self.issued - 1


@dataclasses.dataclass(frozen=True)
class _Answer:
    number: int
    sent: float
    received: float
    status: int  # 0: no answer (timeout, connection lost)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are expected
        body = b"".join(chunks)
    else:
        body = await reader.read()
    return status, headers, body


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    schedule: _Schedule,
    answers: list[_Answer],
    timeout: float,
) -> None:
    """One closed-loop client: a request, wait for its answer, the next, on one kept-alive connection
    (reopened if the server closes it or an answer is lost)."""
    connection = None
    try:
        while (number := schedule.take()) is not None:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            reader, writer = connection
            sent = time.perf_counter()
            try:
                writer.write(requests[number % len(requests)])
                status, headers, _ = await asyncio.wait_for(_read_response(reader), timeout)
            except (OSError, EOFError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                status, headers = 0, {"connection": "close"}
            answers.append(_Answer(number, sent, time.perf_counter(), status))
            if headers.get("connection", "").lower() == "close":
                await _close(connection)
                connection = None
    finally:
        if connection is not None:
            await _close(connection)


async def _close(connection) -> None:
    _, writer = connection
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


def post_requests(host: str, port: int, path: str, bodies: list[dict]) -> list[bytes]:
    """Ready-to-send keep-alive HTTP/1.1 POSTs of JSON bodies."""
    requests = []
    for body in bodies:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        requests.append(head.encode("latin-1") + data)
    return requests


def run_load(
    host: str,
    port: int,
    requests: list[bytes],
    clients: int,
    max_requests: int,
    max_seconds: float,
    timeout: float = 60,
) -> dict:
    """`clients` concurrent closed-loop clients sending `requests` in turn (request n is
    `requests[n % len(requests)]`), at most `max_requests` of them, none sent after `max_seconds`.
    Returns requests/s (answered with 200, over the time from the first request sent to the last
    answer), the latency percentiles of those requests, and the failures (other statuses; 0: no
    answer within `timeout` seconds, or the connection failed)."""
    schedule = _Schedule(max_requests, max_seconds)
    answers: list[_Answer] = []

    async def everyone() -> None:
        coroutines = [_client(host, port, requests, schedule, answers, timeout) for _ in range(clients)]
        await asyncio.wait_for(asyncio.gather(*coroutines), max_seconds + 2 * timeout)

    asyncio.run(everyone())
    return load_summary(answers, clients)


def load_summary(answers: list[_Answer], clients: int) -> dict:
    """The report of a load run's answers."""
    ok = [1000 * (answer.received - answer.sent) for answer in answers if answer.status == 200]
    failures = Counter(str(answer.status) for answer in answers if answer.status != 200)
    elapsed = max((a.received for a in answers), default=0.0) - min((a.sent for a in answers), default=0.0)
    return {
        "clients": clients,
        "requests": len(answers),
        "errors": sum(failures.values()),
        "error_statuses": dict(sorted(failures.items())),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(ok) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms_p50": _rounded(percentile(ok, 0.5)),
        "latency_ms_p90": _rounded(percentile(ok, 0.9)),
        "latency_ms_p99": _rounded(percentile(ok, 0.99)),
        "latency_ms_max": _rounded(max(ok, default=math.nan)),
    }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)
