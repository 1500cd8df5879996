"""`attend serve` as the tests run it: a real subprocess on free loopback ports, its URLs read from
what it prints, stopped (SIGTERM, then checked to exit 0) by the test that started it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.model_base import ModelBase
from tests.test_cli import ENVIRONMENT as CLI_ENVIRONMENT
from tests.test_cli import attend

ENVIRONMENT = {**CLI_ENVIRONMENT, "ATTEND_PROGRESS": "0"}


class Server:
    """A running `attend serve`: `rest` (http://127.0.0.1:PORT), `grpc` (127.0.0.1:PORT), its log lines."""

    def __init__(self, *args: str, startup_seconds: float = 180, cwd: Path | None = None):
        command = [sys.executable, "-m", "app", "serve", "--rest-port", "0", "--grpc-port", "0", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT, cwd=cwd
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + startup_seconds
        while not any(line.startswith("  gRPC: ") for line in self.stdout):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"attend serve did not start: {''.join(self.stderr)[-3000:]}")
            time.sleep(0.1)
        text = "".join(self.stdout)
        self.rest = re.search(r"REST: (http://[^/]+)/", text).group(1)
        self.grpc = re.search(r"gRPC: (\S+)", text).group(1)

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def log(self) -> str:
        return "".join(self.stderr)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self._readers:
            reader.join(5)
        return status

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def http(
    method: str, url: str, body: bytes | dict | None = None, timeout: float = 60
) -> tuple[int, dict | str]:
    """(status, JSON answer or text) of one plain HTTP request, errors included."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def publish(run_dir: Path, base: Path, name: str) -> Path:
    """`attend export RUN --model-base BASE --name NAME`, as a user types it; the version folder it wrote."""
    result = attend("export", str(run_dir), "--model-base", str(base), "--name", name)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / name / str(ModelBase(base, name).latest())
