"""`RunDir`: the one owner of a run folder's layout, creation, resume rules and lock.

Every other module asks a `RunDir` for a path instead of spelling it, so that the layout
(see models/README.md) can change in one place:

    models/<name>-<timestamp>/
      config.yaml          the resolved config (`attend train --preset …/config.yaml` repeats it)
      vocab/               the SentencePiece models
      logs/                TensorBoard
      checkpoints/         best.weights.h5 and best.json (the score they reached), first_epoch.json
                           (the first epoch's dev loss, the yardstick of divergence), finished.json (every
                           epoch done: a restart resumes at the final evaluation), epoch-NNN.weights.h5
                           (the last train.keep_last_epochs epochs, for `attend average`),
                           time_budget.json (under train.max_minutes: the epochs' seconds, the plan)
      backup/              only while unfinished: BackupAndRestore state, so a restart resumes
      failure.json         only after a failed run: what went wrong, when, what remains good
      init_from.json       only for a run started from another's weights: what it reused
      metrics.json, model_card.json
      evaluation/<name>/   what `attend evaluate` wrote
      export/              the SavedModel
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.config import Config, load_saved_config, save_config

MODELS_DIR = Path("models")


class RunDir:
    """A run folder: its paths, whether it may be resumed, and who may write it.

    Args:
        path: the folder (created by `start`).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # === Layout ===
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def vocab_dir(self) -> Path:
        return self.path / "vocab"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_weights(self) -> Path:
        return self.checkpoints_dir / "best.weights.h5"

    def epoch_weights(self, epoch: int) -> Path:
        """The weights at the end of `epoch` (1-based), kept for the last `train.keep_last_epochs`."""
        return self.checkpoints_dir / f"epoch-{epoch:03d}.weights.h5"

    def kept_epochs(self) -> dict[int, Path]:
        """`{epoch: weights}` of the epochs whose weights are kept, in epoch order."""
        found = {
            int(path.name.split(".")[0].removeprefix("epoch-")): path
            for path in self.checkpoints_dir.glob("epoch-[0-9][0-9][0-9].weights.h5")
        }
        return dict(sorted(found.items()))

    @property
    def best_score_path(self) -> Path:
        return self.checkpoints_dir / "best.json"

    @property
    def first_epoch_path(self) -> Path:
        return self.checkpoints_dir / "first_epoch.json"

    @property
    def time_budget_path(self) -> Path:
        return self.checkpoints_dir / "time_budget.json"

    @property
    def training_finished_path(self) -> Path:
        return self.checkpoints_dir / "finished.json"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def init_report_path(self) -> Path:
        return self.path / "init_from.json"

    @property
    def failure_path(self) -> Path:
        return self.path / "failure.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def model_card_path(self) -> Path:
        return self.path / "model_card.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def exported_model_card_path(self) -> Path:
        return self.export_dir / "model_card.json"

    def evaluation_dir(self, name: str) -> Path:
        return self.path / "evaluation" / name

    def distilled_train_path(self, beam: int) -> Path:
        """`attend distill`: this run's (the teacher's) beam-`beam` translations of its train split."""
        return self.path / "distill" / f"train-beam{beam}.tsv"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    # === State ===
    @property
    def is_unfinished(self) -> bool:
        """Interrupted mid-training: `attend train` with the same settings resumes it."""
        return self.backup_dir.is_dir()

    @property
    def is_resumable(self) -> bool:
        """Whether `attend train` continues this run: interrupted mid-training, or after its last epoch
        (in its final evaluation, or before its export was in place)."""
        return self.is_unfinished or (self.training_finished_path.is_file() and not self.export_dir.is_dir())

    @property
    def is_trained(self) -> bool:
        return self.best_weights.is_file()

    @property
    def has_trained_epoch(self) -> bool:
        """Whether any epoch's work is kept here (a best checkpoint or a backup to resume)."""
        return self.is_trained or self.is_unfinished

    def require_exists(self) -> None:
        if not self.path.is_dir():
            raise ValueError(f"no run folder at {self.path}")

    def config(self) -> Config:
        self.require_exists()
        if not self.config_path.is_file():
            raise ValueError(f"{self.path} is not a run folder: it has no {self.config_path.name}")
        return load_saved_config(self.config_path)

    def require_trained(self) -> None:
        if not self.is_trained:
            raise ValueError(
                f"{self.path} has no trained weights ({self.best_weights}); train it first: nothing to export"
            )

    def best_score(self) -> dict | None:
        """`{"monitor", "value", "epoch", "metrics"}` of the best checkpoint so far, or None."""
        if not self.best_score_path.is_file():
            return None
        return _read_json(self.best_score_path)

    def write_best_score(self, monitor: str, value: float, epoch: int, metrics: dict | None = None) -> None:
        """`metrics`: the epoch's other dev metrics (`val_loss`, …), shown beside the kept checkpoint."""
        record = {"monitor": monitor, "value": value, "epoch": epoch, "metrics": metrics or {}}
        _write_json(self.best_score_path, record)

    def first_epoch_dev_loss(self) -> float | None:
        """The first epoch's dev loss (divergence is measured against it), or None before it."""
        if not self.first_epoch_path.is_file():
            return None
        return _read_json(self.first_epoch_path)["dev_loss"]

    def write_first_epoch_dev_loss(self, dev_loss: float) -> None:
        _write_json(self.first_epoch_path, {"dev_loss": dev_loss})

    def time_budget(self) -> dict | None:
        """The epochs' seconds and the planned epoch count of a run under `train.max_minutes`."""
        return _read_json(self.time_budget_path) if self.time_budget_path.is_file() else None

    def write_time_budget(self, state: dict) -> None:
        _write_json(self.time_budget_path, state)

    def training_finished(self) -> dict | None:
        """Set once every epoch is done (written before the backup goes): a run killed after that, in
        its final evaluation or its export, resumes there instead of training again. None before."""
        return _read_json(self.training_finished_path) if self.training_finished_path.is_file() else None

    def write_training_finished(self, record: dict) -> None:
        _write_json(self.training_finished_path, record)

    def init_report(self) -> dict | None:
        """What the run's weights were initialised from (`app.recipe.transfer`), or None."""
        return _read_json(self.init_report_path) if self.init_report_path.is_file() else None

    def write_init_report(self, report: dict) -> None:
        _write_json(self.init_report_path, report)

    def failure(self) -> dict | None:
        """What stopped the last training of this folder (`write_failure`), or None."""
        if not self.failure_path.is_file():
            return None
        return _read_json(self.failure_path)

    def write_failure(self, failure: dict) -> None:
        _write_json(self.failure_path, failure)

    def clear_failure(self) -> None:
        self.failure_path.unlink(missing_ok=True)

    def write_metrics(self, metrics: dict) -> None:
        _write_json(self.metrics_path, metrics)

    def write_model_card(self, card: dict) -> None:
        _write_json(self.model_card_path, card)

    def model_card(self) -> dict:
        """The run's model card ({} before training ends); a damaged one raises, naming the file."""
        return _read_json(self.model_card_path) if self.model_card_path.is_file() else {}

    def metrics(self) -> dict | None:
        """The final metrics (or the failure) of the last training, None before its end."""
        return _read_json(self.metrics_path) if self.metrics_path.is_file() else None

    # === Creation and resuming ===
    def check_resumable(self, config: Config) -> list[tuple[str, Any, Any]]:
        """A run folder continues only with the settings it started with; the error names the keys.

        A folder whose run never finished an epoch has nothing to lose: any settings may reuse it.
        Returns how `config` differs from the folder's (empty for a new folder or a resumed run).
        """
        if not self.config_path.is_file():
            return []
        differences = config_differences(self.config(), config)
        if differences and self.has_trained_epoch:
            raise ValueError(
                f"{self.path} holds a run with a different config ({_describe(differences)}). Pick a "
                f"new --run-dir, or train with exactly that config to resume it (--preset {self.config_path})"
            )
        return differences

    def start(self, config: Config, log=print) -> None:
        """Creates the folder for `config` (already validated), resumes it, or reuses a folder whose
        run never finished an epoch (its logs and failure record go: they describe other settings)."""
        differences = self.check_resumable(config)
        if differences:
            log(
                f"{self.path} held a run that never finished an epoch; reusing it with the new settings "
                f"({_describe(differences)})"
            )
            shutil.rmtree(self.logs_dir, ignore_errors=True)
            shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
            self.clear_failure()
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.config_path)

    @contextlib.contextmanager
    def lock(self, create: bool = False) -> Iterator[None]:
        """Holds the folder for one writer (train, export, evaluate): a second one stops at once with
        the holder's pid.

        An OS file lock (flock): it ends with the process, so a killed run never leaves a stale lock.
        With `create`, a missing folder is made, and removed again if nothing but the lock was
        written in it (settings refused before training leave no trace).
        """
        created = create and not self.path.exists()
        if created:
            self.path.mkdir(parents=True)
        self.require_exists()
        handle = open(self.lock_path, "a+")  # noqa: SIM115  (held open for the lock's lifetime)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise ValueError(
                    f"{self.path} is in use by another attend process (pid {holder}); wait for it to "
                    "finish or pick another --run-dir"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()
            if created and [entry.name for entry in self.path.iterdir()] == [self.lock_path.name]:
                self.lock_path.unlink()
                self.path.rmdir()

    # === Workers that are not the chief ===
    def scratch_for_worker(self, index: int) -> RunDir:
        """A folder of this run's layout for a worker that is not the chief (multi-worker training).

        Only the chief writes the run folder. Every other worker runs the same callbacks, which write
        the same files, so it gets a scratch folder in the system's temporary directory instead, seeded
        with the chief's resumable state (backup and checkpoints), so that it resumes from the same
        epoch and compares with the same best score. `remove` deletes it at the end; its name is fixed
        (the run's name, a digest of its path, the worker's index), so that a killed worker's scratch
        folder is replaced when the worker starts again.
        """
        scratch = RunDir(self.worker_scratch_path(index))
        scratch.remove()
        scratch.path.mkdir(parents=True)
        for folder in ("backup_dir", "checkpoints_dir"):
            source = getattr(self, folder)
            if source.is_dir():
                shutil.copytree(source, getattr(scratch, folder))
        return scratch

    def worker_scratch_path(self, index: int) -> Path:
        digest = hashlib.sha256(str(self.path.resolve()).encode("utf-8")).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"attend-{self.name}-{digest}-worker{index}"

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # === Choosing a folder ===
    @classmethod
    def for_training(cls, config: Config, models_dir: Path = MODELS_DIR) -> RunDir:
        """The newest resumable run of this config (`make train` again resumes it), else a new
        `models_dir/<config name>-<timestamp>/`: the preset's name, also when the config comes
        from a run's saved `config.yaml` (which keeps the name of the preset it started from)."""
        name = config.name
        for candidate in sorted(models_dir.glob(f"{name}-*"), reverse=True):
            run = cls(candidate)
            if (
                run.is_resumable
                and run.config_path.is_file()
                and not config_differences(run.config(), config)
            ):
                return run
        return cls(models_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


# Settings that say where a run trains, not what it learns (N replicas train like one device, see
# app/models/losses.py): an interrupted run may resume with others, e.g. on more GPUs or machines.
WHERE_IT_TRAINS = ("train.distribution", "train.tpu", "train.steps_per_execution")


def config_differences(first: Config, second: Config) -> list[tuple[str, Any, Any]]:
    """`(section.key, first's value, second's value)` where two configs differ (their names and
    `WHERE_IT_TRAINS` aside)."""
    left = _flatten(dataclasses.asdict(dataclasses.replace(first, name="")))
    right = _flatten(dataclasses.asdict(dataclasses.replace(second, name="")))
    return [
        (key, left.get(key), right.get(key))
        for key in sorted(left.keys() | right.keys())
        if left.get(key) != right.get(key) and key not in WHERE_IT_TRAINS
    ]


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _describe(differences: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{key}: {saved!r} in the folder, {wanted!r} now" for key, saved, wanted in differences)


def _read_json(path: Path) -> dict:
    """One of the folder's JSON records; an empty, cut-short or hand-broken one (a full disk, an
    editor) is a ValueError that names the file, not a bare "Expecting value: line 1 column 1"."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        problem = "the file is empty" if not text.strip() else f"not valid JSON ({error})"
        raise ValueError(f"{path}: {problem}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _write_json(path: Path, value: dict) -> None:
    """Whole or not at all: a crash mid-write never leaves half a file. Valid JSON always: a NaN or
    infinite number (a diverged loss) is written as null, which every JSON reader accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    text = json.dumps(_finite_or_null(value), indent=2, ensure_ascii=False, allow_nan=False)
    staging.write_text(text + "\n", encoding="utf-8")
    staging.replace(path)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value
