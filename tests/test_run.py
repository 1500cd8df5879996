"""RunDir: the run folder's resume rules, the lock, and the record of the best score."""

from __future__ import annotations

import dataclasses
import os

import pytest

from app.config import load_config, save_config
from app.run import RunDir, config_differences


def test_make_train_again_resumes_the_unfinished_run_with_the_same_settings(tmp_path):
    config = load_config("smoke")
    unfinished = tmp_path / "smoke-20260101-000000"
    (unfinished / "backup").mkdir(parents=True)
    save_config(config, unfinished / "config.yaml")
    finished = tmp_path / "smoke-20260102-000000"
    finished.mkdir()
    save_config(config, finished / "config.yaml")
    assert RunDir.for_training(config, tmp_path).path == unfinished
    changed = load_config("smoke", ["train.epochs=9"])
    fresh = RunDir.for_training(changed, tmp_path).path
    assert fresh not in (unfinished, finished) and fresh.name.startswith("smoke-")
    save_config(changed, tmp_path / "config.yaml")  # a run's saved config, given as `--preset`
    repeated = RunDir.for_training(load_config(str(tmp_path / "config.yaml")), tmp_path).path
    assert repeated.name.startswith("smoke-")  # named after the preset it started from, not "config-"


def test_a_run_with_another_config_is_refused_naming_the_keys(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start(load_config("smoke"))
    run.backup_dir.mkdir()  # an epoch was trained
    changed = load_config("smoke", ["train.epochs=9", "model.units=48"])
    with pytest.raises(ValueError) as refused:
        run.check_resumable(changed)
    message = str(refused.value)
    assert "train.epochs: 5 in the folder, 9 now" in message
    assert "model.units: 32 in the folder, 48 now" in message
    assert "train.batch_size" not in message  # only what differs
    run.check_resumable(load_config("smoke"))  # the same settings resume


def test_config_differences_ignore_the_name_and_where_it_trains_only():
    first, second = load_config("smoke"), load_config("smoke", ["decode.beam_width=2"])
    assert config_differences(first, dataclasses.replace(first, name="other")) == []
    assert config_differences(first, second) == [("decode.beam_width", 4, 2)]
    elsewhere = load_config("smoke", ["train.distribution=multi_worker", "train.steps_per_execution=8"])
    assert config_differences(first, elsewhere) == []  # an interrupted run may resume on more machines


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = f"in use by another attend process \\(pid {os.getpid()}\\)"
    with run.lock(create=True), pytest.raises(ValueError, match=holder), RunDir(tmp_path / "run").lock():
        pass
    assert not run.path.exists()  # the folder it made held nothing but the lock
    run.path.mkdir()
    with run.lock():  # released when the holder ends
        pass
    with pytest.raises(ValueError, match="no run folder at"):  # export and evaluate never create one
        RunDir(tmp_path / "other").lock().__enter__()


def test_a_folder_that_never_finished_an_epoch_takes_new_settings(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start(load_config("smoke"))
    run.write_failure({"message": "training diverged at epoch 1, step 2"})
    (run.logs_dir / "train").mkdir(parents=True)
    logged = []
    run.start(load_config("smoke", ["train.learning_rate=0.001"]), log=logged.append)
    assert (
        "reusing it with the new settings (train.learning_rate: 0.005 in the folder, 0.001 now)" in logged[0]
    )
    assert run.config().train.learning_rate == 0.001
    assert run.failure() is None and not run.logs_dir.exists()  # nothing left of the other settings


def test_best_score_round_trips_as_json(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.best_score() is None
    run.write_best_score("val_bleu", 12.5, 3)
    assert run.best_score() == {"monitor": "val_bleu", "value": 12.5, "epoch": 3, "metrics": {}}
    assert not list(run.checkpoints_dir.glob(".*.tmp"))  # written through a temporary file and a rename


def test_an_untrained_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="nothing to export"):
        RunDir(tmp_path).require_trained()
    with pytest.raises(ValueError, match="is not a run folder"):
        RunDir(tmp_path).config()
