"""The training recipe: the learning-rate schedule, and checkpointing that continues from the best
score of an interrupted run."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from app.config import TrainConfig
from app.recipe import learning_rate_schedule, make_callbacks, make_optimizer
from app.recipe.callbacks import BestCheckpoint, improves
from app.run import RunDir


def test_learning_rate_warms_up_linearly_then_decays_along_a_cosine():
    train = TrainConfig(learning_rate=1e-3, warmup_steps=10, min_learning_rate_ratio=0.1)
    schedule = learning_rate_schedule(train, total_steps=110)
    assert make_optimizer(train, 110).clipnorm == train.clipnorm
    expected = {
        0: 0.0,
        5: 5e-4,  # half-way through the warm-up
        10: 1e-3,  # the peak
        60: 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))),  # half-way through the decay
        110: 1e-4,  # the floor: min_learning_rate_ratio of the peak
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-5, abs=1e-9), step


def test_warm_up_is_at_most_a_tenth_of_a_short_run():
    train = TrainConfig(learning_rate=1e-3, warmup_steps=200)
    schedule = learning_rate_schedule(train, total_steps=50)
    assert float(schedule(5)) == pytest.approx(1e-3)  # warm-up capped at 5 steps


def test_a_resumed_run_does_not_save_a_worse_best(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_best_score("val_bleu", 30.0, 2, {"val_bleu": 30.0, "val_loss": 2.5})  # the interrupted run's
    monitor = keras.callbacks.Callback()  # stands in for the dev monitor (which adds val_bleu)
    callbacks = make_callbacks(run, TrainConfig(), monitor)
    checkpoint = next(c for c in callbacks if isinstance(c, BestCheckpoint))
    assert checkpoint.best == 30.0
    assert not any(isinstance(c, keras.callbacks.ModelCheckpoint) for c in callbacks)  # one owner
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(2, {"val_bleu": 12.0, "val_loss": 1.0})  # worse than the run's best
    assert not run.best_weights.exists()
    assert run.best_score()["value"] == 30.0 and run.best_score()["epoch"] == 2
    assert checkpoint.kept == {"val_bleu": 30.0, "val_loss": 2.5, "epoch": 2}  # what TensorBoard is shown
    checkpoint.on_epoch_end(3, {"val_bleu": 31.0, "val_loss": 2.4, "loss": 2.0})
    assert run.best_score() == {
        "monitor": "val_bleu",
        "value": 31.0,
        "epoch": 4,
        "metrics": {"val_bleu": 31.0, "val_loss": 2.4},  # the dev metrics of the kept epoch
    }
    assert checkpoint.kept == {"val_bleu": 31.0, "val_loss": 2.4, "epoch": 4}
    restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored.load_weights(str(run.best_weights))
    for saved, original in zip(restored.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.array(saved), np.array(original))
    assert sorted(path.name for path in run.best_weights.parent.iterdir()) == ["best.json", "best.weights.h5"]


def test_a_bleu_tie_keeps_the_epoch_of_lower_dev_loss_and_a_loss_rise_alone_changes_nothing(tmp_path):
    """At the noise floor (a small run's dev BLEU 0.22 at epochs 2 and 10) the loss decides."""
    run = RunDir(tmp_path / "run")
    checkpoint = BestCheckpoint(run.best_weights, run.write_best_score, "val_bleu", "max", None)
    checkpoint.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    epochs = [
        {"val_bleu": 0.22, "val_loss": 6.06},  # 1: kept (the first)
        {"val_bleu": 0.0, "val_loss": 5.60},  # 2: lower BLEU, not kept despite its loss
        {"val_bleu": 0.22, "val_loss": 6.10},  # 3: a tie at a higher loss: not kept
        {"val_bleu": 0.22, "val_loss": 5.35},  # 4: a tie at a lower loss: kept
        {"val_bleu": 0.21, "val_loss": 5.30},  # 5: lower BLEU: not kept
    ]
    kept = []
    for epoch, logs in enumerate(epochs):
        checkpoint.on_epoch_end(epoch, logs)
        kept.append(run.best_score()["epoch"])
    assert kept == [1, 1, 1, 4, 4]
    assert run.best_score()["metrics"] == {"val_bleu": 0.22, "val_loss": 5.35}

    assert improves({"val_loss": 2.0}, "val_loss", "min", {"value": 2.1, "metrics": {}})
    assert not improves({"val_loss": 2.1}, "val_loss", "min", {"value": 2.1, "metrics": {"val_loss": 2.1}})
    assert not improves({"val_bleu": 5.0}, "val_bleu", "max", {"value": 5.0, "metrics": {"val_loss": 3.0}})


def test_weight_decay_shrinks_kernels_not_biases_and_zero_keeps_adam():
    import numpy as np

    from app.recipe.optimizer import ReplicaSumClippingAdam, ReplicaSumClippingAdamW

    assert type(make_optimizer(TrainConfig(), 100)) is ReplicaSumClippingAdam
    optimizer = make_optimizer(TrainConfig(weight_decay=0.5, warmup_steps=0, learning_rate=0.1), 100)
    assert isinstance(optimizer, ReplicaSumClippingAdamW)
    layer = keras.layers.Dense(2, bias_initializer="ones")
    layer.build((None, 3))
    kernel, bias = (np.array(variable) for variable in (layer.kernel, layer.bias))
    zeros = [np.zeros_like(kernel), np.zeros_like(bias)]  # no gradient: only the decay moves weights
    rate = float(optimizer.learning_rate)  # at this first step (the schedule moves on after it)
    optimizer.apply_gradients(zip(zeros, [layer.kernel, layer.bias], strict=True))
    np.testing.assert_allclose(np.array(layer.kernel), kernel * (1 - rate * 0.5), rtol=1e-5)
    np.testing.assert_array_equal(np.array(layer.bias), bias)


def test_early_stopping_never_stops_in_the_first_half_of_the_schedule(tmp_path):
    def stopper(train):
        callbacks = make_callbacks(RunDir(tmp_path / "run"), train, None)
        return next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))

    assert stopper(TrainConfig(epochs=10)).start_from_epoch == 5
    assert stopper(TrainConfig(epochs=10, early_stopping_from_epoch=0)).start_from_epoch == 0
    # it really waits: with patience 1 and a worse score every epoch, it stops only after epoch 5 + 1
    early = stopper(TrainConfig(epochs=10, early_stopping_patience=1))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    early.set_model(model)
    model.stop_training = False
    early.on_train_begin()
    for epoch in range(10):
        early.on_epoch_end(epoch, {"val_loss": 1.0 + epoch})
        if model.stop_training:
            break
    assert epoch == 6


class Killed(Exception):
    """Stands in for the process being killed at the start of an epoch."""


class ScriptedBleu(keras.callbacks.Callback):
    """Stands in for the dev monitor: `val_bleu` of each epoch from a script; remembers the epochs run."""

    def __init__(self, scores: list[float], kill_at: int | None = None):
        super().__init__()
        self.scores, self.kill_at, self.epochs = scores, kill_at, []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.kill_at:
            raise Killed

    def on_epoch_end(self, epoch, logs=None):
        logs["val_bleu"] = self.scores[epoch]
        self.epochs.append(epoch)


def fit_toy_model(run: RunDir, train: TrainConfig, monitor: ScriptedBleu) -> None:
    """One training session as a fresh process runs it: a new model and the run folder's callbacks."""
    source, target = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    embedding = keras.layers.Embedding(4, 2)
    logits = keras.layers.Dense(4)(keras.layers.Add()([embedding(source), embedding(target)]))
    model = keras.Model([source, target], logits)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.ones((8, 3), dtype="int32")
    callbacks = make_callbacks(run, train, monitor)
    model.fit((ids, ids), ids, batch_size=4, epochs=train.epochs, callbacks=callbacks, verbose=0)


@pytest.mark.parametrize("killed_after", [2, 4, 5])
def test_a_resumed_run_stops_early_at_the_epoch_an_uninterrupted_run_stops(tmp_path, killed_after):
    """Keras's EarlyStopping forgets its patience on a restart; counted from the kept checkpoint's
    epoch, a run killed after any epoch stops where it would have without the kill."""
    train = TrainConfig(epochs=10, early_stopping_patience=2, early_stopping_from_epoch=0, keep_last_epochs=0)
    scores = [1.0, 2.0, 3.0, 5.0, 4.0, 4.5, 3.0, 2.0, 1.0, 0.0]  # best after epoch 4, then 2 without
    uninterrupted = ScriptedBleu(scores)
    fit_toy_model(RunDir(tmp_path / "whole"), train, uninterrupted)
    assert uninterrupted.epochs == [0, 1, 2, 3, 4, 5]  # stopped after epoch 6 (0-based 5)

    run = RunDir(tmp_path / "killed")
    with pytest.raises(Killed):
        fit_toy_model(run, train, ScriptedBleu(scores, kill_at=killed_after))
    assert run.is_unfinished and run.best_score()["epoch"] == min(killed_after, 4)
    resumed = ScriptedBleu(scores)
    fit_toy_model(run, train, resumed)
    assert resumed.epochs == list(range(killed_after, 6))  # the same last epoch
    assert run.best_score()["epoch"] == 4
