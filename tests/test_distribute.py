"""tf.distribute training: MirroredStrategy equals training without it, each worker reads its own shard,
TPU batches have fixed shapes, TF_CONFIG and the strategy settings are checked, mixed_float16 trains
and exports float32 (multi-worker training itself: tests/test_distribute_multi_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
