"""Multi-worker training as on two machines: two `attend train` processes on loopback ports with the
same run folder, one killed mid-run, both started again; and what such a run refuses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import load_config
from app.data.prepare import prepare_data
from app.run import RunDir
from tests.conftest import tiny_overrides

# one thread each: two workers on a machine of two cores, beside the test suite's other worker
ENVIRONMENT = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONUNBUFFERED": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(run: Path, data: Path, ports: list[int], log_dir: Path, attempt: int) -> list:
    """The same `attend train` on two workers, as on two machines: only TF_CONFIG's task differs."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    overrides = tiny_overrides(
        **{
            "train.distribution": "multi_worker",
            "train.epochs": 3,
            "train.bleu_sentences": 20,
            "decode.beam_width": 1,
        }
    )
    workers = []
    for index in range(len(ports)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        output = open(log_dir / f"worker{index}-{attempt}.log", "w")  # noqa: SIM115  (closed by the test)
        command = ["train", "--preset", "smoke", "--run-dir", str(run), "--data-dir", str(data), *overrides]
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *command],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**ENVIRONMENT, "TF_CONFIG": tf_config},
        )
        workers.append((process, output))
    return workers


def stop(workers: list) -> None:
    for process, output in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        output.close()


def backed_up_epoch(run: Path) -> int:
    metadata = run / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def event_file_pids(logs: Path) -> set[int]:
    """The process ids in TensorBoard's event file names (`events.out.tfevents.TIME.HOST.PID.N.v2`)."""
    return {int(path.name.split(".")[-3]) for path in logs.rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_two_workers_train_one_run_that_the_chief_writes_and_that_resumes_after_a_kill(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    config = load_config("smoke", tiny_overrides())
    prepare_data(config, data, log=lambda *_: None)  # once, as `attend prepare` before the workers start
    ports = free_ports(2)
    first = start_workers(run, data, ports, tmp_path, attempt=1)
    try:
        deadline = time.monotonic() + 300
        while backed_up_epoch(run) < 1 and time.monotonic() < deadline:
            assert all(process.poll() is None for process, _ in first), "a worker stopped early"
            time.sleep(0.2)
        assert backed_up_epoch(run) >= 1, "no epoch was backed up in time"
        first[1][0].send_signal(signal.SIGKILL)  # one machine dies; the run is started again on both
    finally:
        stop(first)
    resumed_from = backed_up_epoch(run)
    assert 1 <= resumed_from < 3
    chief_pids = {first[0][0].pid}

    second = start_workers(run, data, free_ports(2), tmp_path, attempt=2)
    try:
        for process, _ in second:
            process.wait(timeout=400)
    finally:
        stop(second)
    chief_pids.add(second[0][0].pid)
    chief_log = (tmp_path / "worker0-2.log").read_text()
    other_log = (tmp_path / "worker1-2.log").read_text()
    assert [process.returncode for process, _ in second] == [0, 0], chief_log[-3000:] + other_log[-3000:]
    assert "Resuming the interrupted run" in chief_log
    assert "worker 2 of 2 (not the chief)" in other_log and "the chief wrote the run folder" in other_log

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_this_session"] == 3 - resumed_from  # resumed, not started again
    assert metrics["distribution"]["replicas"] == 2 and metrics["distribution"]["workers"] == 2
    assert metrics["distribution"]["loop"].startswith("strategy.run")
    assert (run / "export" / "saved_model.pb").is_file() and not (run / "backup").exists()
    assert event_file_pids(run / "logs") <= chief_pids  # TensorBoard: the chief's files alone
    scratch = RunDir(run).worker_scratch_path(1)
    assert f"writes into the scratch folder {scratch}" in other_log and not scratch.exists()  # removed


def test_multi_worker_training_needs_a_run_dir_and_tf_config(tmp_path):
    from tests.test_cli import attend_here

    refused = attend_here("train", "--preset", "smoke", "train.distribution=multi_worker")
    assert refused.returncode == 2 and "needs --run-dir" in refused.stderr
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    completed = subprocess.run(
        [sys.executable, "-m", "app", "train", "--preset", "smoke", "--run-dir", str(tmp_path / "run")]
        + ["train.distribution=multi_worker"],
        capture_output=True,
        text=True,
        env={**environment, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2 and "needs TF_CONFIG" in completed.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written
