"""tf.distribute training: MirroredStrategy equals training without it, two worker processes train one
run that the chief alone writes and that resumes after a kill, each worker reads its own shard,
TF_CONFIG and the strategy settings are checked, mixed_float16 trains and exports float32."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app.config import TrainConfig, load_config
from app.data.pipeline import make_dataset
from app.data.prepare import prepare_data
from app.recipe import check_batch_divides
from app.recipe.distribution import WorkerRole, resolve_distribution, worker_role
from app.run import RunDir
from tests.conftest import tiny_overrides

ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_mirrored_training_on_two_replicas_equals_training_without_a_strategy(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "tests.mirrored_training", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = json.loads(completed.stdout.strip().splitlines()[-1])
    single, mirrored = runs["none"], runs["mirrored"]
    assert single["distribution"]["replicas"] == 1
    assert mirrored["distribution"] == {
        "setting": "mirrored",
        "strategy": "MirroredStrategy",
        "replicas": 2,
        "workers": 1,
        "loop": "model.fit",
    }
    # the same losses (train and dev: the dev set's batches split unevenly over the two replicas)
    for key, values in single["history"].items():
        np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-5, err_msg=key)
    # and the same weights, to float32 rounding: float sums in another order, nothing more
    assert len(mirrored["weights"]) == len(single["weights"])
    for got, want in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


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
            "train.epochs": 4,
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
    assert 1 <= resumed_from < 4
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
    assert metrics["epochs_this_session"] == 4 - resumed_from  # resumed, not started again
    assert metrics["distribution"]["replicas"] == 2 and metrics["distribution"]["workers"] == 2
    assert metrics["distribution"]["loop"].startswith("strategy.run")
    assert (run / "export" / "saved_model.pb").is_file() and not (run / "backup").exists()
    assert event_file_pids(run / "logs") <= chief_pids  # TensorBoard: the chief's files alone
    scratch = RunDir(run).worker_scratch_path(1)
    assert f"writes into the scratch folder {scratch}" in other_log and not scratch.exists()  # removed


def test_each_worker_reads_its_own_share_of_the_pairs_and_together_all(tmp_path):
    data = prepare_data(load_config("smoke", tiny_overrides()), tmp_path, log=lambda *_: None)
    settings = {"batch_size": 8, "max_source_tokens": 64, "max_target_tokens": 64}

    def sources(shard=None) -> list[tuple[int, ...]]:
        dataset = make_dataset(data.corpus.train_files, *data.tokenizers, shard=shard, **settings)
        return [tuple(row[row > 0]) for (source, _), _ in dataset.as_numpy_iterator() for row in source]

    everything = sources()
    shares = [sources((3, index)) for index in range(3)]
    assert sorted(everything) == sorted(row for share in shares for row in share)  # each pair exactly once
    assert all(abs(len(share) - len(everything) / 3) <= 1 for share in shares)


def test_static_shapes_give_full_batches_padded_to_their_bucket(tmp_path):
    data = prepare_data(load_config("smoke", tiny_overrides()), tmp_path, log=lambda *_: None)
    dataset = make_dataset(
        data.corpus.train_files,
        *data.tokenizers,
        batch_size=8,
        max_source_tokens=30,
        max_target_tokens=30,
        bucket_width=8,
        static_shapes=True,
    )
    shapes = {(source.shape, target_in.shape) for (source, target_in), _ in dataset.as_numpy_iterator()}
    assert shapes and all(source[0] == 8 and target_in[0] == 8 for source, target_in in shapes)
    # padded to a bucket's bound: 8, 16, 24 and 31 (30 target tokens and the start marker)
    assert {source[1] for source, _ in shapes} <= {8, 16, 24, 31}
    assert all(target_in[1] == source[1] - 1 for source, target_in in shapes)


@pytest.mark.parametrize(
    ("tf_config", "role"),
    [
        (
            {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}},
            WorkerRole(0, 2, True),
        ),
        (
            {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}},
            WorkerRole(1, 2, False),
        ),
        (
            {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
            WorkerRole(1, 2, False),
        ),
        (
            {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
            WorkerRole(0, 2, True),
        ),
    ],
)
def test_the_chief_is_tf_configs_chief_task_else_worker_0(tf_config, role):
    assert worker_role("multi_worker", json.dumps(tf_config)) == role
    assert worker_role("mirrored", json.dumps(tf_config)) == WorkerRole()  # one process: the chief


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("", "needs TF_CONFIG"),
        ("{not json", "not a valid cluster description"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "an index into"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "chief or worker"),
    ],
)
def test_a_missing_or_malformed_tf_config_is_a_clear_error(tf_config, message):
    with pytest.raises(ValueError, match=message):
        worker_role("multi_worker", tf_config)


def test_auto_distribution_is_none_without_several_gpus_and_the_batch_must_divide():
    assert not tf.config.list_physical_devices("GPU")
    assert resolve_distribution(TrainConfig(distribution="auto")).name == "none"
    assert resolve_distribution(TrainConfig(distribution="multi_worker")).runs_fit is False
    assert resolve_distribution(TrainConfig(distribution="tpu")).static_shapes is True
    check_batch_divides(64, 2)
    with pytest.raises(ValueError, match="train.batch_size=63 does not divide among 2 replicas"):
        check_batch_divides(63, 2)


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


@pytest.mark.slow
def test_mixed_float16_scales_the_loss_trains_finite_and_exports_a_float32_model(tmp_path):
    import math

    import keras

    from app.export import export_run
    from app.recipe import compile_model
    from app.train import train

    overrides = {"train.precision": "mixed_float16", "train.epochs": 1, "train.steps_per_epoch": 3}
    config = load_config("smoke", tiny_overrides(**overrides, **{"train.bleu_sentences": 0}))
    try:
        metrics = train(config, tmp_path / "run", tmp_path / "data", log=lambda *_: None)
        data = prepare_data(config, tmp_path / "data", log=lambda *_: None)
        optimizer = compile_model(config, data, total_steps=10).optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)  # Keras's dynamic loss scaling
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(math.isfinite(loss) for loss in metrics["history"]["loss"]) and math.isfinite(
        metrics["dev_loss"]
    )
    assert RunDir(tmp_path / "run").model_card()["training_policy"] == "mixed_float16"
    export_run(tmp_path / "run", log=lambda *_: None)  # reloaded and checked in a fresh process
    served = tf.saved_model.load(str(tmp_path / "run" / "export")).signatures["serving_default"]
    outputs = served(text=tf.constant(["Y lloró Jesús.", "En el principio"]))
    assert outputs["score"].dtype == tf.float32 and np.isfinite(outputs["score"].numpy()).all()
    assert all(text for text in outputs["translation"].numpy())
