"""Fail loudly, lose nothing: each fault of the reliability issue, met the way a user meets it (the
command's exit status and message, the files left on disk, the SavedModel's answer).

Overrides and presets: tests/test_reliability_config.py. SavedModel input and corpus control
characters: tests/test_reliability_inputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.run import RunDir
from tests.conftest import tiny_overrides
from tests.test_cli import ENVIRONMENT, attend, attend_here, summary_tags, train_arguments
from tests.test_tensorboard import accumulators, values


def strict_json(path: Path) -> dict:
    """The file as JSON that any reader accepts: a bare NaN or Infinity fails here."""

    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def scalar_steps(log_dir: Path, tag: str) -> list[int]:
    """Every step at which `tag` was written under `log_dir`, in any run, repeats included."""
    return sorted(
        step
        for events in accumulators(log_dir).values()
        if tag in events.Tags()["tensors"]
        for step, _ in values(events, tag)
    )


# === 1. A failed run is not a success ===
@pytest.mark.slow
def test_nan_after_a_good_epoch_keeps_its_checkpoint_and_nothing_is_exported(tmp_path, monkeypatch):
    """The loss turns NaN at the start of epoch 2 (a poisoned loss, switched on by a callback)."""
    import keras
    import tensorflow as tf

    import app.recipe.compile
    import app.train
    from app.config import load_config

    poisoned = tf.Variable(False)
    training_loss = app.recipe.compile.label_smoothed_cross_entropy(0.0)

    def nan_when_poisoned(labels, predictions):
        loss = training_loss(labels, predictions)
        return tf.where(poisoned, tf.constant(float("nan"), loss.dtype), loss)

    class PoisonAtEpochTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            poisoned.assign(epoch >= 1)

    make_callbacks = app.train.make_callbacks
    monkeypatch.setattr(
        app.recipe.compile, "label_smoothed_cross_entropy", lambda smoothing: nan_when_poisoned
    )
    monkeypatch.setattr(app.train, "make_callbacks", lambda *a: [PoisonAtEpochTwo(), *make_callbacks(*a)])
    config = load_config("smoke", tiny_overrides(**{"train.epochs": 3, "train.early_stopping_patience": 5}))
    run = RunDir(tmp_path / "run")
    with pytest.raises(app.train.RunFailed) as failed:
        app.train.train(config, run.path, tmp_path / "data", log=lambda *_: None)

    message = str(failed.value)
    assert "training diverged at epoch 2, step 1: the training loss became nan" in message
    assert f"The last good checkpoint remains: {run.best_weights} (epoch 1, val_bleu" in message
    assert run.best_score()["epoch"] == 1 and run.is_trained  # epoch 2 saved nothing
    backup = json.loads((run.backup_dir / "training_metadata.json").read_text())
    assert backup["epoch"] == 1  # the backup still holds the last good epoch
    assert scalar_steps(run.logs_dir, "epoch_bleu") == [0]  # no summary of the diverged epoch
    assert strict_json(run.metrics_path)["status"] == "diverged"
    assert strict_json(run.failure_path)["last_good"]["epoch"] == 1

    refused = attend_here("export", str(run.path))
    assert refused.returncode == 2 and not run.export_dir.exists()
    assert "training failed (training diverged at epoch 2, step 1" in refused.stderr
    assert f"attend export --force {run.path}` exports its last good checkpoint (epoch 1)" in refused.stderr
    forced = attend_here("export", "--force", str(run.path))
    assert forced.returncode == 0, forced.stderr[-2000:]
    card = json.loads((run.export_dir / "model_card.json").read_text())
    assert card["training_failure"]["epoch"] == 2  # the export says what it is


@pytest.mark.slow
def test_a_first_epoch_nan_fails_the_command_and_the_folder_takes_corrected_settings(tmp_path):
    run = RunDir(tmp_path / "run")
    diverging = {"train.learning_rate": "1.0e+30", "train.warmup_steps": 0, "train.epochs": 1}
    failed = attend(*train_arguments(tmp_path, **diverging))
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert (
        "training diverged at epoch 1, step" in failed.stderr
        and "the training loss became nan" in failed.stderr
    )
    assert "no checkpoint was kept" in failed.stderr and "Traceback" not in failed.stderr
    assert "Done." not in failed.stdout and not run.export_dir.exists() and not run.is_trained
    metrics = strict_json(run.metrics_path)
    assert metrics["status"] == "diverged" and metrics["failure"]["epoch"] == 1

    # 3. the folder held only a config and no finished epoch: corrected settings may reuse it
    corrected = attend(
        *train_arguments(
            tmp_path,
            "--no-export",
            **{"train.epochs": 1, "train.steps_per_epoch": 3, "train.bleu_sentences": 0},
        )
    )
    assert corrected.returncode == 0, corrected.stderr[-2000:]
    assert "held a run that never finished an epoch; reusing it with the new settings" in corrected.stdout
    assert "train.learning_rate: 1e+30 in the folder, 0.005 now" in corrected.stdout
    assert run.failure() is None and strict_json(run.metrics_path)["status"] == "trained"


def test_the_divergence_guard_measures_dev_loss_against_the_first_epoch(tmp_path):
    import keras

    from app.config import TrainConfig
    from app.recipe import make_callbacks
    from app.recipe.callbacks import DivergenceGuard, TrainingDiverged

    recorded = []
    guard = DivergenceGuard(3.0, None, recorded.append)
    guard.on_epoch_end(0, {"val_loss": 2.0})
    guard.on_epoch_end(1, {"val_loss": 5.9})  # under 3 × 2.0
    assert recorded == [2.0]
    expected = r"epoch 3: the dev loss 6.5 is over train.divergence_factor=3 times the first epoch's \(2\)"
    with pytest.raises(TrainingDiverged, match=expected):
        guard.on_epoch_end(2, {"val_loss": 6.5})
    resumed = DivergenceGuard(3.0, 2.0, recorded.append)  # a resumed run remembers the first epoch
    with pytest.raises(TrainingDiverged, match="epoch 5: the dev loss became inf"):
        resumed.on_epoch_end(4, {"val_loss": float("inf")})
    with pytest.raises(TrainingDiverged, match="the dev loss 7"):
        resumed.on_epoch_end(4, {"val_loss": 7.0})
    DivergenceGuard(0.0, 2.0, recorded.append).on_epoch_end(4, {"val_loss": 100.0})  # 0 = off
    assert recorded == [2.0]

    run = RunDir(tmp_path / "run")
    run.write_first_epoch_dev_loss(2.0)
    callbacks = make_callbacks(run, TrainConfig(), None)
    # the guard sees an epoch's end first, the backup last (after evaluation, checkpoint, summaries)
    assert isinstance(callbacks[0], DivergenceGuard) and callbacks[0].first_dev_loss == 2.0
    assert isinstance(callbacks[-1], keras.callbacks.BackupAndRestore)


# === 4. One writer per run folder ===
def test_export_and_evaluate_refuse_a_run_folder_in_use(trained_run):
    holder = f"in use by another attend process (pid {os.getpid()})"
    with RunDir(trained_run).lock():
        for command in (
            ["export", str(trained_run)],
            ["evaluate", str(trained_run), "--data-dir", str(trained_run.parent / "data")],
        ):
            refused = attend_here(*command)
            assert refused.returncode == 2 and holder in refused.stderr, refused.stderr[-2000:]


# === 5. No epoch is lost to a kill ===
@pytest.mark.slow
def test_a_kill_right_after_an_epochs_backup_loses_nothing_of_that_epoch(tmp_path):
    run = RunDir(tmp_path / "run")
    arguments = train_arguments(
        tmp_path, "--no-export", **{"train.epochs": 3, "train.early_stopping_patience": 10}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app", *arguments],
        env=ENVIRONMENT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metadata = run.backup_dir / "training_metadata.json"
    deadline = time.time() + 300
    while not metadata.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # as hard as a power cut, the moment the backup exists
    process.wait()
    assert metadata.is_file(), "the run never saved a backup"
    epochs_done = json.loads(metadata.read_text())["epoch"]
    assert 1 <= epochs_done < 3
    # the backed-up epoch was evaluated and checkpointed before its backup was written
    assert run.is_trained and run.best_score()["epoch"] <= epochs_done
    assert scalar_steps(run.logs_dir, "epoch_bleu") == list(range(epochs_done))

    resumed = attend(*arguments)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Epoch {epochs_done + 1}/3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout
    assert not run.backup_dir.exists()
    assert scalar_steps(run.logs_dir, "epoch_bleu") == [0, 1, 2]  # each epoch's dev BLEU once
    assert "epoch_bleu" in summary_tags(run.logs_dir / "validation")


# === 6. Too little data is a clear error ===
def test_a_corpus_too_small_for_one_batch_is_named_before_anything_is_written(tmp_path):
    tiny = tmp_path / "three.tsv"
    tiny.write_text("Hola.\tHello.\nAdiós.\tGoodbye.\nSí.\tYes.\n", encoding="utf-8")
    stopped = attend_here(*train_arguments(tmp_path, **{"data.tsv_path": tiny}))
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "The train split has 1 pairs; train.batch_size is 32" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (tmp_path / "run").exists()  # 3. nothing written before the settings are valid


# === 7. Clear errors instead of tracebacks ===
def test_a_missing_or_unusable_run_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-run"
    for command in (["evaluate", str(missing)], ["export", str(missing)]):
        refused = attend_here(*command)
        assert refused.returncode == 2 and f"no run folder at {missing}" in refused.stderr, refused.stderr
        assert not missing.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unusable = attend_here("train", "--preset", "smoke", "--run-dir", str(blocker / "run"), *tiny_overrides())
    assert unusable.returncode == 2, unusable.stderr[-2000:]
    assert f"Not a directory: {blocker / 'run'}" in unusable.stderr and "Traceback" not in unusable.stderr
    debug = attend_here("evaluate", str(missing), "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # the traceback, on request


def test_evaluate_checks_its_input_file_before_translating(trained_run, tmp_path):
    invalid = tmp_path / "invalid.tsv"
    invalid.write_bytes(b"Hola.\tHello.\n" + b"Adi\xf3s.\tGoodbye.\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    for source, expected in (
        (invalid, f"{invalid}:2: not valid UTF-8"),
        (empty, f"{empty} has no lines to score"),
    ):
        refused = attend_here("evaluate", str(trained_run), "--source", str(source))
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr[-2000:]
        assert not (trained_run / "evaluation" / f"{source.stem}-beam4").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["translate", "RUN", "Hola", "--batch-size", "0"],
        ["translate", "RUN", "Hola", "--batch-size", "-1"],
        ["evaluate", "RUN", "--beam", "0"],
        ["compare", "RUN", "--beam", "0"],
    ],
)
def test_sizes_below_one_are_refused_by_the_command_line(command):
    refused = attend_here(*command)
    assert refused.returncode == 2 and "expected at least 1, got" in refused.stderr, refused.stderr


def test_translate_names_the_stdin_line_that_is_not_utf8_after_translating_the_lines_before(trained_run):
    stdin = "Hola.\nY lloró Jesús.\n".encode() + b"Adi\xf3s.\nGracias.\n"
    completed = attend_here("translate", str(trained_run), stdin=stdin)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "stdin line 3: not valid UTF-8" in completed.stderr
    assert len(completed.stdout.splitlines()) == 2  # lines 1 and 2, nothing after line 3


def test_translate_plot_creates_its_folder(trained_run, tmp_path):
    plot = tmp_path / "new" / "folder" / "attention.png"
    plotted = attend_here("translate", str(trained_run), "Hola.", "--plot", str(plot))
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_export_of_damaged_weights_says_so_and_keeps_the_export(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    weights = RunDir(copy).best_weights
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by a full disk
    before = sorted(path.name for path in (copy / "export").iterdir())
    refused = attend_here("export", str(copy))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"{weights} cannot be read" in refused.stderr
    assert sorted(path.name for path in (copy / "export").iterdir()) == before
