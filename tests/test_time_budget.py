"""`train.max_minutes`: the schedule that changes length in the traced step, the epoch plan, and a
run that stops where its budget ends and says so in its folder."""

from __future__ import annotations

import json

import keras
import pytest
import tensorflow as tf

from app.config import TrainConfig, load_config
from app.recipe import learning_rate_schedule, make_callbacks
from app.recipe.callbacks import TimeBudget, plan_epochs
from app.run import RunDir
from tests.conftest import tiny_overrides


def test_a_resized_schedule_ends_at_its_new_length_inside_a_traced_function():
    train = TrainConfig(learning_rate=1e-3, warmup_steps=10, min_learning_rate_ratio=0.1)
    schedule = learning_rate_schedule(train, total_steps=110)
    traced = tf.function(lambda step: schedule(step))
    halfway_before = float(traced(tf.constant(60)))
    schedule.resize(60)  # 10 warm-up steps + 50 of decay
    assert schedule.total_steps == 60
    assert float(traced(tf.constant(60))) == pytest.approx(1e-4, rel=1e-5)  # the floor, now at step 60
    assert float(traced(tf.constant(35))) == pytest.approx(halfway_before, rel=1e-5)  # half-way: the same
    assert float(traced(tf.constant(5))) == pytest.approx(5e-4, rel=1e-5)  # the warm-up is unchanged
    assert traced.experimental_get_tracing_count() == 1
    assert (
        keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule)).get_config()
        == schedule.get_config()
    )


def test_the_plan_holds_the_epochs_that_fit_at_the_last_epochs_pace():
    assert plan_epochs(600, [], max_epochs=10) == 10  # nothing measured: the schedule of train.epochs
    assert plan_epochs(600, [100], max_epochs=10) == 6  # 1 done + 500 s / 100 s
    assert plan_epochs(600, [150, 100], max_epochs=10) == 5  # the first epoch's tracing does not count twice
    assert plan_epochs(600, [10], max_epochs=10) == 10  # never beyond train.epochs
    assert plan_epochs(600, [400, 250], max_epochs=10) == 2  # the budget is spent: stop now


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_epochs(budget: TimeBudget, model: keras.Model, clock: FakeClock, seconds: list[float], first=0):
    """Drives the callback as `fit` would; returns the epochs that ran."""
    budget.set_model(model)
    model.stop_training = False
    budget.on_train_begin()
    ran = 0
    for epoch, duration in enumerate(seconds, start=first):
        budget.on_epoch_begin(epoch)
        clock.now += duration
        budget.on_epoch_end(epoch, {})
        ran += 1
        if model.stop_training:
            break
    return ran


def test_the_budget_shortens_the_schedule_moves_early_stopping_and_stops(tmp_path, monkeypatch):
    import app.recipe.callbacks

    clock = FakeClock()
    monkeypatch.setattr(app.recipe.callbacks.time, "monotonic", clock)
    train = TrainConfig(epochs=10, max_minutes=10, warmup_steps=10)
    schedule = learning_rate_schedule(train, total_steps=10 * 100)
    run = RunDir(tmp_path / "run")
    callbacks = make_callbacks(run, train, None, schedule=schedule, steps_per_epoch=100)
    budget = next(c for c in callbacks if isinstance(c, TimeBudget))
    stopper = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    assert stopper.start_from_epoch == 5  # before any plan: half of train.epochs
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    ran = run_epochs(budget, model, clock, [150.0, 100.0, 100.0] + [100.0] * 7)
    assert ran == 5  # 150 + 4 × 100 s ≤ 600 s; a sixth would not fit
    assert schedule.total_steps == 5 * 100  # the decay ends with the last epoch that fits
    assert stopper.start_from_epoch == 2  # early stopping waits for half of the planned epochs
    assert run.time_budget() == {
        "max_minutes": 10.0,
        "epoch_seconds": [150.0, 100.0, 100.0, 100.0, 100.0],
        "planned_epochs": 5,
    }


def test_a_resumed_run_keeps_its_plan_and_the_time_already_spent(tmp_path, monkeypatch):
    import app.recipe.callbacks

    clock = FakeClock()
    monkeypatch.setattr(app.recipe.callbacks.time, "monotonic", clock)
    train = TrainConfig(epochs=10, max_minutes=10, warmup_steps=10)
    run = RunDir(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    run.write_time_budget({"max_minutes": 10.0, "epoch_seconds": [150.0, 100.0], "planned_epochs": 5})
    schedule = learning_rate_schedule(train, total_steps=10 * 100)  # as a fresh process builds it
    callbacks = make_callbacks(run, train, None, schedule=schedule, steps_per_epoch=100)
    budget = next(c for c in callbacks if isinstance(c, TimeBudget))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    budget.set_model(model)
    budget.on_train_begin()
    assert schedule.total_steps == 5 * 100  # the interrupted run's schedule, before its first step
    ran = run_epochs(budget, model, clock, [100.0] * 8, first=2)  # BackupAndRestore resumes at epoch 3
    assert ran == 3 and run.time_budget()["epoch_seconds"] == [150.0, 100.0, 100.0, 100.0, 100.0]


def test_a_budget_under_multi_worker_is_refused_by_name(tmp_path):
    from tests.test_cli import attend_here, train_arguments

    refused = attend_here(*train_arguments(tmp_path, "--max-minutes", "-1"))
    assert refused.returncode == 2
    assert "train.max_minutes: expected greater than 0, got -1.0" in refused.stderr
    assert not (tmp_path / "run").exists()
    multi_worker = "train.max_minutes cannot be used with train.distribution=multi_worker"
    with pytest.raises(ValueError, match=multi_worker):
        load_config("smoke", ["train.max_minutes=5", "train.distribution=multi_worker"])
    with pytest.raises(ValueError, match="train.max_minutes: expected greater than 0"):
        load_config("smoke", ["train.max_minutes=0"])


def test_a_run_out_of_time_stops_after_the_epoch_that_spent_it(tmp_path):
    """A budget smaller than any epoch: the first epoch runs (nothing is measured before it), then the
    run ends with the best weights of that epoch, its plan and time in the folder."""
    from app.train import train

    lines: list[str] = []
    config = load_config("smoke", tiny_overrides(**{"train.epochs": 4, "train.max_minutes": 0.0001}))
    metrics = train(config, tmp_path / "run", tmp_path / "data", log=lines.append)
    run = RunDir(tmp_path / "run")
    assert metrics["epochs_this_session"] == 1 and run.is_trained
    assert metrics["history"]["planned_epochs"] == [1.0]
    record = json.loads(run.time_budget_path.read_text())
    assert record["planned_epochs"] == 1 and len(record["epoch_seconds"]) == 1
    assert metrics["time_budget"] == record
    assert any("as many as fit in 0.0001 minutes" in line for line in lines)
