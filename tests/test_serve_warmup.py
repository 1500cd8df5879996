"""`attend serve` warms each version up before serving it: a version stays LOADING until its warm-up
records are replayed, one whose warm-up fails is reported and not served, `/healthz` and `/readyz`
answer orchestrators' probes, and an `--xla` export's first request of each covered shape compiles
nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.model_base import ModelBase
from app.serve.metrics import ServerMetrics
from app.serve.options import Limits
from app.serve.rest import build_app
from app.serve.versions import ModelVersions


class FakeServable:
    """A version whose warm-up runs `warm` (blocks, raises) and which records being unloaded."""

    def __init__(self, version: int, warm=None):
        self.version, self._warm, self.unloaded = version, warm, False

    def warm_up(self) -> tuple[int, float]:
        if self._warm:
            self._warm()
        return 3, 0.0

    def unload(self, timeout=None) -> None:
        self.unloaded = True

    def acquire(self) -> None: ...

    def release(self) -> None: ...


def model_base(tmp_path: Path, *versions: int) -> ModelBase:
    for version in versions:
        (tmp_path / "m" / str(version)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(b"")
    return ModelBase(tmp_path, "m")


def states(versions: ModelVersions) -> dict[int, str]:
    return {status.version: status.state for status in versions.statuses("m")}


def blocking_warm_up() -> tuple[threading.Event, threading.Event, callable]:
    started, release = threading.Event(), threading.Event()

    def warm() -> None:
        started.set()
        assert release.wait(30)

    return started, release, warm


def test_a_new_version_stays_loading_until_its_warm_up_ran_and_the_previous_one_serves_meanwhile(tmp_path):
    started, release, warm = blocking_warm_up()
    servables = {1: FakeServable(1), 2: FakeServable(2, warm)}
    said: list[str] = []
    versions = ModelVersions(model_base(tmp_path, 1), lambda v, _: servables[v], 0, said.append)
    versions.start()
    model_base(tmp_path, 2)
    swap = threading.Thread(target=versions.poll_once)
    swap.start()
    assert started.wait(30)
    assert states(versions) == {2: "LOADING", 1: "AVAILABLE"} and versions.served_version == 1
    assert versions.readiness()[0]  # version 1 still answers
    release.set()
    swap.join(30)
    assert states(versions) == {2: "AVAILABLE", 1: "UNLOADING"} or states(versions) == {
        2: "AVAILABLE",
        1: "END",
    }
    assert versions.served_version == 2
    assert "Warmed up version 2 of 'm': 3 requests in 0.0 s" in said


def test_not_ready_while_the_first_version_warms_up(tmp_path):
    started, release, warm = blocking_warm_up()
    versions = ModelVersions(model_base(tmp_path, 1), lambda v, _: FakeServable(v, warm), 0, lambda _: None)
    app = build_app(versions, Limits(), ServerMetrics())
    starting = threading.Thread(target=versions.start)
    starting.start()
    assert started.wait(30)
    assert states(versions) == {1: "LOADING"}
    assert get(app, "/readyz") == (
        503,
        {"status": "not ready", "reason": "no version is AVAILABLE (loading: [1])"},
    )
    assert get(app, "/healthz") == (200, {"status": "alive"})
    release.set()
    starting.join(30)
    assert get(app, "/readyz") == (200, {"status": "ready", "model": "m", "version": 1})
    assert get(app, "/v1/models/m")[0] == 200  # TF Serving's own status URL, unchanged
    versions.stop(0)
    assert get(app, "/readyz") == (503, {"status": "not ready", "reason": "the server is stopping"})


def test_a_version_whose_warm_up_fails_is_reported_unloaded_and_the_previous_stays(tmp_path):
    def fail() -> None:
        raise RuntimeError("no such signature")

    servables = {1: FakeServable(1), 2: FakeServable(2, fail)}
    said: list[str] = []
    versions = ModelVersions(model_base(tmp_path, 1), lambda v, _: servables[v], 0, said.append)
    versions.start()
    model_base(tmp_path, 2)
    versions.poll_once()
    (failed,) = versions.statuses("m", 2)
    assert (failed.state, failed.error) == ("END", "warm-up: RuntimeError: no such signature")
    assert servables[2].unloaded and versions.served_version == 1 and versions.readiness()[0]
    assert any(
        "Version 2 of 'm' failed to warm up" in line and "still serving version 1" in line for line in said
    )


def get(app, path: str) -> tuple[int, dict]:
    """One GET through the ASGI app, without a server."""
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(message.get("body", b"") for message in messages[1:])
    return messages[0]["status"], json.loads(body)


# === An --xla export compiles nothing after its warm-up ===
# Counts XLA compilations as the modules XLA dumps (one `*.before_optimizations.txt` each).
_FIRST_REQUESTS = """
import json, os, sys
from pathlib import Path
import numpy as np
from app.serve.options import Limits
from app.serve.servable import Servable

dump = Path(os.environ["XLA_FLAGS"].split("=", 1)[1])
compiles = lambda: len(list(dump.glob("*before_optimizations.txt")))
servable = Servable("m", 1, Path(sys.argv[1]), None, Limits())
requests, _ = servable.warm_up()
warmed = compiles()
for batch in json.loads(sys.stdin.read()):
    servable._call("serving_default", {"text": np.array([t.encode() for t in batch], dtype=object)})
first_requests = compiles()
servable._call("translate_ids", {"source_ids": np.array([[5, 6, 7, 2]] * 3, np.int32)})  # no record's shape
print(json.dumps({"requests": requests, "warmed": warmed, "first": first_requests, "control": compiles()}))
"""


@dataclasses.dataclass
class ShorterInputs:
    """The trained run with inputs cut at 16 tokens: padded source lengths 8 and 16 only."""

    run: object

    def __getattr__(self, name):
        return getattr(self.run, name)

    def config(self):
        config = self.run.config()
        return dataclasses.replace(config, decode=dataclasses.replace(config.decode, max_input_tokens=16))


@pytest.mark.slow
def test_an_xla_export_serves_the_first_request_of_each_covered_shape_without_compiling(
    trained_run, tmp_path
):
    from app.export import export_extras
    from app.run import RunDir
    from app.translator import XLA_MAX_BATCH, XLA_MIN_SOURCE_LENGTH, load_translator, save_translator
    from app.warmup import padded_shapes, texts_by_padded_length

    run = ShorterInputs(RunDir(trained_run))
    translator = load_translator(run, beam_width=1, xla=True, data_dir=trained_run.parent / "data")
    sentences = ["Y lloró Jesús.", "En el principio creó Dios los cielos y la tierra.", "Hola."]
    card = {"export": {}}
    extras = export_extras(translator, card, sentences, xla=True, max_input_tokens=16, log=lambda *_: None)
    export = save_translator(
        translator, tmp_path / "xla", card, ["Hola."], log=lambda *_: None, extras=extras
    )
    shapes = padded_shapes(XLA_MAX_BATCH["greedy"], XLA_MIN_SOURCE_LENGTH, 16)
    other = ["Jesús lloró.", "Dios creó la tierra y los cielos en el principio, y vio que era bueno."] * 4
    texts = texts_by_padded_length(translator.source_ids, other, {length for _, length in shapes})
    # batches the compiled search pads up to each covered shape, of texts the warm-up did not hold
    probes = [
        [texts[length][i % len(texts[length])] for i in range(batch // 2 + 1)] for batch, length in shapes
    ]
    dump = tmp_path / "xla-dump"
    completed = subprocess.run(
        [sys.executable, "-c", _FIRST_REQUESTS, str(export)],
        input=json.dumps(probes),
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": f"--xla_dump_to={dump}", "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    counts = json.loads(completed.stdout.strip().splitlines()[-1])
    assert counts["requests"] >= len(shapes) + 4
    assert counts["warmed"] >= len(shapes)  # the warm-up compiled each shape
    assert counts["first"] == counts["warmed"], "a first request compiled after the warm-up"
    assert counts["control"] > counts["first"]  # a shape no record covers does compile: the count sees it


# === The bench's version swaps ===
def test_a_swap_row_reads_back_and_the_table_shows_the_first_requests_against_steady_state():
    from app.bench.report import ServeReport, SwapRow
    from app.bench.serving import format_serve

    row = SwapRow("greedy", True, 8, 2.5, 1.2, 100, 10.0, 30.0, 9.0, 20.0, 0)
    assert row.p99_to_steady == 1.5
    report = ServeReport("greedy", 64, 5.0, 64, 1.5, {}, None, [row])
    written = json.loads(json.dumps(report.to_json()))
    assert written["swaps"][0]["p99_to_steady"] == 1.5 and ServeReport.from_json(written) == report
    assert "swaps" not in ServeReport("greedy", 64, 5.0, 64, 1.5, {}).to_json()  # older reports: unchanged
    line = next(line for line in format_serve(report) if line.startswith("greedy "))
    assert line.split() == ["greedy", "yes", "8", "2.5", "1.2", "10.0", "30.0", "20.0", "1.50", "0"]


def test_a_cold_copy_leaves_the_warm_up_records_out_and_the_servers_log_gives_the_warm_up_time(tmp_path):
    from app.bench.serving import publish_copy, warmup_seconds
    from app.warmup import WARMUP_FILE

    export = tmp_path / "export"
    (export / WARMUP_FILE).parent.mkdir(parents=True)
    (export / WARMUP_FILE).write_bytes(b"records")
    (export / "saved_model.pb").write_bytes(b"")
    publish_copy(export, tmp_path / "base" / "2", warm_up=False)
    publish_copy(export, tmp_path / "base" / "3", warm_up=True)
    assert (
        not (tmp_path / "base" / "2" / WARMUP_FILE).exists()
        and (tmp_path / "base" / "2" / "saved_model.pb").exists()
    )
    assert (tmp_path / "base" / "3" / WARMUP_FILE).read_bytes() == b"records"
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["2", "3"]  # no staging left
    log = "".join(
        f"Warmed up version {v} of 'bench': 12 requests in {s} s\n" for v, s in ((2, 3.4), (3, 0.9))
    )
    assert (warmup_seconds(log, 3), warmup_seconds(log, 4)) == (0.9, None)
