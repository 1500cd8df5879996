"""Fail loudly, lose nothing, second round (issue #32): the seven faults a fresh round of probes still
found, each met the way a user meets it (the command's exit status and one-line message, the files
left on disk).

The first round: tests/test_reliability.py.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import pytest

from app import __version__
from app.run import RunDir
from app.scoring import read_references
from tests.conftest import BIBLE_SAMPLE, tiny_overrides
from tests.test_cli import attend, attend_here, train_arguments


# === 7. evaluate --source: exactly two columns ===
def test_a_line_with_a_third_column_is_refused_by_file_and_line(tmp_path):
    tsv = tmp_path / "scores.tsv"
    tsv.write_text("uno\tone\ndos\ttwo\tsomething else\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"scores.tsv:2: expected source<TAB>target, found 3 columns"):
        read_references(tsv)
    tsv.write_text("uno\tone\ndos\ttwo\n", encoding="utf-8")
    assert read_references(tsv) == (["uno", "dos"], [["one"], ["two"]])


# === 6. A damaged model_card.json is named, and rebuilt ===
def test_a_damaged_record_of_the_run_folder_is_named(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    run.model_card_path.write_text("")
    with pytest.raises(ValueError, match=f"{run.model_card_path}: the file is empty"):
        run.model_card()
    run.best_score_path.write_text('{"monitor": "val_bleu", "val')  # cut short
    with pytest.raises(ValueError, match=f"{run.best_score_path}: not valid JSON"):
        run.best_score()


def test_a_damaged_model_card_is_rebuilt_from_the_run_folder(tmp_path):
    from app.config import load_config, save_config
    from app.export import model_card_of

    run = RunDir(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    config = load_config("smoke")
    save_config(config, run.config_path)
    run.write_metrics({"status": "trained", "dev_loss": 1.5, "history": {"loss": [2.0, 1.5]}})
    run.model_card_path.write_text('{"name": "smo')  # cut short
    notes = []
    card = model_card_of(run, notes.append)
    assert card["config"] == config.to_dict() and card["metrics"] == {"status": "trained", "dev_loss": 1.5}
    assert notes == [
        f"Note: {run.model_card_path}: not valid JSON (Unterminated string starting at: line 1 column 10 "
        f"(char 9)); rebuilt it from {run.config_path} and {run.metrics_path} (its data report is lost)"
    ]
    assert run.model_card() == card  # written back: the folder is whole again

    run.export_dir.mkdir()
    exported = {"name": "smoke", "data": {"report": "6 kept"}, "export": {"xla": False}}
    run.exported_model_card_path.write_text(json.dumps(exported))
    run.model_card_path.write_text("")
    assert model_card_of(run, notes.append) == {"name": "smoke", "data": {"report": "6 kept"}}
    assert notes[-1].endswith(f"rebuilt it from the copy in {run.exported_model_card_path}")


# === 5. A damaged tokenizer model is named ===
def test_a_cut_short_tokenizer_model_is_named_with_what_is_wrong(tmp_path):
    from app.data.tokenizer import load_tokenizer, train_sentencepiece, vocabulary

    sentences = [line.split("\t")[0] for line in BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()]
    proto = train_sentencepiece(sentences, 400)
    model = tmp_path / "source.model"
    model.write_bytes(proto)
    assert load_tokenizer(model).vocab_size == len(vocabulary(model)) > 300
    for cut, expected in (
        (0, "the file is empty"),
        (len(proto) // 2 + 1, "are not a SentencePiece model|reserved ids"),
    ):
        model.write_bytes(proto[:cut])
        for load in (load_tokenizer, vocabulary):
            with pytest.raises(ValueError, match=f"{model} is damaged: .*({expected})"):
                load(model)


def test_prepare_fits_a_damaged_tokenizer_model_again_instead_of_reusing_it(tmp_path):
    from app.data.tokenizer import fit_tokenizers, load_tokenizer

    settings = {
        "source_vocab_size": 400,
        "target_vocab_size": 400,
        "model_type": "unigram",
        "character_coverage": 1.0,
        "max_training_sentences": None,
    }
    paths = fit_tokenizers(BIBLE_SAMPLE, tmp_path / "vocab", settings, log=lambda *_: None)
    paths["target"].write_bytes(paths["target"].read_bytes()[:1000])
    logged = []
    fit_tokenizers(BIBLE_SAMPLE, tmp_path / "vocab", settings, log=logged.append)
    assert not any("Reusing" in line for line in logged)
    assert load_tokenizer(paths["target"]).vocab_size > 300


# === 4. A saved config with missing settings is refused by name ===
def test_a_saved_config_missing_settings_is_refused_by_name(tmp_path):
    from app.config import load_config, load_saved_config, save_config

    path = tmp_path / "config.yaml"
    config = load_config("smoke", ["model.units=48"])
    save_config(config, path)
    assert path.read_text().startswith(f"# written by attend {__version__}\n")
    assert load_saved_config(path) == config
    text = path.read_text()
    path.write_text(text[: text.index("\nmodel:")] + "\n")  # still valid YAML: the later sections cut off
    with pytest.raises(ValueError) as refused:
        load_saved_config(path)
    message = str(refused.value)
    missing = message.split(";")[0]
    assert missing.startswith(f"{path}: missing model.") and " more" in missing  # model, train, decode
    assert "data." not in missing and "tokenizer." not in missing  # the sections that are whole
    assert f"it was written by attend {__version__}" in message
    assert load_config(str(path)).model.units != 48  # as a preset, the same file takes the defaults


def test_a_config_saved_by_an_earlier_release_takes_the_defaults_of_the_settings_added_since(tmp_path):
    """A run trained before a release added settings still loads; the same gap in a file written by
    the current release is damage, and is refused."""
    import yaml

    from app.config import SETTINGS_ADDED_IN, load_config, load_saved_config, save_config

    path = tmp_path / "config.yaml"
    config = load_config("smoke")
    save_config(config, path)
    values = yaml.safe_load(path.read_text())
    added = SETTINGS_ADDED_IN[(0, 2, 0)]
    for key in added:
        section, name = key.split(".")
        del values[section][name]
    body = yaml.safe_dump(values, sort_keys=False)
    path.write_text("# written by attend 0.1.0\n" + body)
    assert load_saved_config(path) == config  # the added settings' defaults do what 0.1.0 did
    path.write_text(body)  # a writer that noted no version is older still
    assert load_saved_config(path) == config
    path.write_text(f"# written by attend {__version__}\n" + body)
    with pytest.raises(ValueError, match="missing data.cmudict_stress"):
        load_saved_config(path)


# === 1. Divergence inside the first epoch ===
def test_the_divergence_guard_bounds_the_loss_by_an_untrained_models():
    import keras

    from app.recipe.callbacks import DivergenceGuard, TrainingDiverged, untrained_loss

    source = keras.Input((None,), dtype="int32")
    model = keras.Model(source, keras.layers.Dense(400)(keras.layers.Embedding(10, 4)(source)))
    assert untrained_loss(model) == pytest.approx(math.log(400))

    def guard() -> DivergenceGuard:
        watching = DivergenceGuard(3.0, None, lambda loss: None, untrained_loss=6.0)
        watching.on_epoch_begin(0)
        return watching

    learning = guard()
    for step, loss in enumerate([6.0, 9.0, 5.0, 2.0, 0.5, 0.2]):  # a noisy start, then learning
        learning.on_train_batch_end(step, {"loss": loss})
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: the training loss 4e\+20 is over 10 times"):
        exploding = guard()
        for step, loss in enumerate([7.2, 30.0, 4e20]):
            exploding.on_train_batch_end(step, {"loss": loss})
    with pytest.raises(TrainingDiverged, match="step 4: the training loss grew from 0.05 to 7 within 3"):
        growing = guard()
        for step, loss in enumerate([0.1, 0.05, 0.06, 7.0]):
            growing.on_train_batch_end(step, {"loss": loss})
    with pytest.raises(TrainingDiverged, match="at epoch 1: the dev loss 90 is over 10 times an untrained"):
        guard().on_epoch_end(0, {"val_loss": 90.0})  # the first epoch, which has no earlier one


@pytest.mark.slow
def test_a_run_diverging_inside_its_first_epoch_fails_and_is_not_exported(tmp_path):
    run = RunDir(tmp_path / "run")
    diverging = {"train.learning_rate": "1.0e+6", "train.warmup_steps": 0, "train.epochs": 1}
    failed = attend(*train_arguments(tmp_path, **diverging, **{"train.bleu_sentences": 0}))
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "training diverged at epoch 1, step" in failed.stderr and "Traceback" not in failed.stderr
    assert "no checkpoint was kept" in failed.stderr
    assert not run.export_dir.exists() and not run.is_trained and run.failure()["epoch"] == 1
    assert json.loads(run.metrics_path.read_text())["status"] == "diverged"


def damaged_copy(trained_run: Path, tmp_path: Path) -> RunDir:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return RunDir(copy)


def test_export_names_a_saved_config_with_missing_settings(trained_run, tmp_path):
    run = damaged_copy(trained_run, tmp_path)
    text = run.config_path.read_text()
    run.config_path.write_text(text[: text.index("\nmodel:")] + "\n")
    for command in (
        ["export", str(run)],
        ["evaluate", str(run), "--data-dir", str(trained_run.parent / "data")],
    ):
        refused = attend_here(*command)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert f"error: {run.config_path}: missing model." in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1  # one line, no Keras dump of weight arrays


def test_export_names_a_cut_short_tokenizer_model(trained_run, tmp_path):
    run = damaged_copy(trained_run, tmp_path)
    model = run.vocab_dir / "source.model"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    refused = attend_here("export", str(run))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"error: {model} is damaged: " in refused.stderr and "unexpected error" not in refused.stderr


def test_export_rebuilds_an_empty_model_card(trained_run, tmp_path):
    run = damaged_copy(trained_run, tmp_path)
    run.model_card_path.write_text("")
    exported = attend_here("export", str(run))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert f"Note: {run.model_card_path}: the file is empty; rebuilt it from the copy in" in exported.stdout
    card = json.loads(run.exported_model_card_path.read_text())
    assert card["config"] == json.loads((trained_run / "model_card.json").read_text())["config"]
    assert run.model_card()["data"] == json.loads((trained_run / "model_card.json").read_text())["data"]


# === 3. A full disk while writing a checkpoint ===
def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import keras

    from app.recipe.callbacks import CheckpointNotWritten, save_weights_whole

    source = keras.Input((3,))
    model = keras.Model(source, keras.layers.Dense(2)(source))
    path = tmp_path / "best.weights.h5"
    save_weights_whole(model, path)
    good = path.read_bytes()

    def full_disk(filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"\x89HDF\r\n")  # the start of a file that never ends
        raise OSError(errno.ENOSPC, "Can't synchronously write data (errno = 28, 'No space left on device')")

    monkeypatch.setattr(model, "save_weights", full_disk)
    with pytest.raises(CheckpointNotWritten, match=f"^No space left on device while writing {path}$"):
        save_weights_whole(model, path)
    assert path.read_bytes() == good and sorted(tmp_path.iterdir()) == [path]  # no truncated file

    monkeypatch.setattr("app.recipe.callbacks.shutil.disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(
        CheckpointNotWritten, match=r"No space left on device \(0.0 MiB free, [\d.]+ MiB needed"
    ):
        save_weights_whole(model, tmp_path / "other.weights.h5")  # checked before h5py starts writing


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_stops_the_run_with_one_line(tmp_path, monkeypatch):
    import keras

    save_weights = keras.Model.save_weights

    def full_disk_for_epochs(model, filepath, *args, **kwargs):
        if "epoch-" in str(filepath):
            raise OSError(errno.ENOSPC, "Can't synchronously write data (No space left on device)")
        return save_weights(model, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", full_disk_for_epochs)
    run = RunDir(tmp_path / "run")
    short = {"train.epochs": 1, "train.steps_per_epoch": 3, "train.bleu_sentences": 0}
    stopped = attend_here(*train_arguments(tmp_path, **short))
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"attend train: error: No space left on device while writing {run.epoch_weights(1)}; the last "
        f"good checkpoint is {run.best_weights} (epoch 1); free space and run the same command to resume"
    )
    assert (
        run.is_trained
        and not run.epoch_weights(1).exists()
        and not list(run.checkpoints_dir.glob("partial-*"))
    )
    assert run.failure() is None and not run.export_dir.exists()


# === 2. A kill after the last epoch: resume at the final evaluation or the export ===
def event_files(run: RunDir) -> dict[str, int]:
    return {str(path): path.stat().st_size for path in run.logs_dir.rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_a_run_killed_after_its_last_epoch_resumes_without_training_again(trained_run, tmp_path):
    run = damaged_copy(trained_run, tmp_path)
    data = trained_run.parent / "data"  # the fixture's: `train` of the same command, as its user gave it
    command = [
        "train",
        "--preset",
        "smoke",
        "--run-dir",
        str(run),
        "--data-dir",
        str(data),
        *tiny_overrides(),
    ]
    logged, best, metrics = event_files(run), run.best_weights.read_bytes(), run.metrics()
    assert run.training_finished() and logged

    # killed in its export (the staged copy half written): the same command exports, nothing else
    shutil.rmtree(run.export_dir)
    (run.path / "export.staging").mkdir()
    exported = attend_here(*command)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "finished training and its final evaluation earlier: nothing to train" in exported.stdout
    assert "Epoch 1/2" not in exported.stdout and (run.export_dir / "saved_model.pb").is_file()
    assert event_files(run) == logged and run.best_weights.read_bytes() == best and run.metrics() == metrics

    # killed after the last epoch's end was recorded, before the backup went and the final evaluation
    run.backup_dir.mkdir()
    run.metrics_path.unlink()
    evaluated = attend_here(*command[:1], "--no-export", *command[1:])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "resuming at its final evaluation" in evaluated.stdout and "Epoch 1/2" not in evaluated.stdout
    assert run.metrics()["status"] == "trained" and run.metrics()["epochs_this_session"] == 0
    assert run.metrics()["dev_loss"] == pytest.approx(metrics["dev_loss"], rel=1e-4)
    assert event_files(run) == logged and run.best_weights.read_bytes() == best
    assert not run.backup_dir.exists()
    assert RunDir.for_training(run.config(), run.path.parent).path != run.path  # exported: a new run next
