"""`RunDir`: the one owner of a run folder's layout, creation, resume rules and lock.

Every other module asks a `RunDir` for a path instead of spelling it, so that the layout
(see models/README.md) can change in one place:

    models/<name>-<timestamp>/
      config.yaml          the resolved config (`attend train --preset …/config.yaml` repeats it)
      vocab/               the SentencePiece models
      logs/                TensorBoard
      checkpoints/         best.weights.h5 and best.json (the score they reached)
      backup/              only while unfinished: BackupAndRestore state, so a restart resumes
      metrics.json, model_card.json
      evaluation/<name>/   what `attend evaluate` wrote
      export/              the SavedModel
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.config import Config, load_config, save_config

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

    @property
    def best_score_path(self) -> Path:
        return self.checkpoints_dir / "best.json"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def model_card_path(self) -> Path:
        return self.path / "model_card.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def evaluation_dir(self, name: str) -> Path:
        return self.path / "evaluation" / name

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    # === State ===
    @property
    def is_unfinished(self) -> bool:
        """Interrupted mid-training: `attend train` with the same settings resumes it."""
        return self.backup_dir.is_dir()

    @property
    def is_trained(self) -> bool:
        return self.best_weights.is_file()

    def config(self) -> Config:
        if not self.config_path.is_file():
            raise ValueError(f"{self.path} is not a run folder: it has no {self.config_path.name}")
        return load_config(str(self.config_path))

    def require_trained(self) -> None:
        if not self.is_trained:
            raise ValueError(
                f"{self.path} has no trained weights ({self.best_weights}); train it first: nothing to export"
            )

    def best_score(self) -> dict | None:
        """`{"monitor", "value", "epoch"}` of the best checkpoint so far, or None."""
        if not self.best_score_path.is_file():
            return None
        return json.loads(self.best_score_path.read_text())

    def write_best_score(self, monitor: str, value: float, epoch: int) -> None:
        record = {"monitor": monitor, "value": value, "epoch": epoch}
        _write_json(self.best_score_path, record)

    def write_metrics(self, metrics: dict) -> None:
        _write_json(self.metrics_path, metrics)

    def write_model_card(self, card: dict) -> None:
        _write_json(self.model_card_path, card)

    def model_card(self) -> dict:
        return json.loads(self.model_card_path.read_text()) if self.model_card_path.is_file() else {}

    # === Creation and resuming ===
    def check_resumable(self, config: Config) -> None:
        """A run folder continues only with the settings it started with; the error names the keys."""
        if not self.config_path.is_file():
            return
        differences = config_differences(self.config(), config)
        if differences:
            shown = "; ".join(
                f"{key}: {saved!r} in the folder, {wanted!r} now" for key, saved, wanted in differences
            )
            raise ValueError(
                f"{self.path} holds a run with a different config ({shown}). Pick a new --run-dir, or "
                f"train with exactly that config to resume it (--preset {self.config_path})"
            )

    def start(self, config: Config) -> None:
        """Creates the folder for `config` (already validated) or checks that it may be resumed."""
        self.check_resumable(config)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.config_path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the folder for one writer: a second `attend train` on it stops with the holder's pid.

        An OS file lock (flock): it ends with the process, so a killed run never leaves a stale lock.
        """
        self.path.mkdir(parents=True, exist_ok=True)
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

    # === Choosing a folder ===
    @classmethod
    def for_training(cls, preset: str, config: Config, models_dir: Path = MODELS_DIR) -> RunDir:
        """The newest unfinished run of this preset and config (`make train` again resumes it),
        else a new `models_dir/<preset>-<timestamp>/`."""
        name = Path(preset).stem
        for candidate in sorted(models_dir.glob(f"{name}-*"), reverse=True):
            run = cls(candidate)
            if (
                run.is_unfinished
                and run.config_path.is_file()
                and not config_differences(run.config(), config)
            ):
                return run
        return cls(models_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def config_differences(first: Config, second: Config) -> list[tuple[str, Any, Any]]:
    """`(section.key, first's value, second's value)` where two configs differ (their names aside)."""
    left = _flatten(dataclasses.asdict(dataclasses.replace(first, name="")))
    right = _flatten(dataclasses.asdict(dataclasses.replace(second, name="")))
    return [
        (key, left.get(key), right.get(key))
        for key in sorted(left.keys() | right.keys())
        if left.get(key) != right.get(key)
    ]


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _write_json(path: Path, value: dict) -> None:
    """Whole or not at all: a crash mid-write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    staging.replace(path)
