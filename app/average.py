"""`attend average`: the mean of a run's last epochs' weights, as a run folder of its own.

Averaging the parameters of the last checkpoints (Vaswani et al. 2017; OpenNMT-tf's
`average-checkpoints`, Marian's `--average`) smooths out the noise of the last updates, and often
scores better than any one of them. The average is written as a new run folder beside the parent
(config, vocabularies and the averaged weights as its `best.weights.h5`), so that `attend evaluate`,
`attend export` and `attend serve` take it like any trained run, and the parent stays untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from app.config import Config
from app.data.tokenizer import load_tokenizer
from app.run import RunDir
from app.translator import build_float32_model

SIDES = ("source", "target")


def average_run(run_dir: Path, last: int, output: Path | None = None, log=print) -> RunDir:
    """Writes the average of `run_dir`'s last `last` kept epochs into `output` (default: a sibling
    folder `<run>-avg<last>`) and returns it. Refuses when fewer epochs are kept, or `output` exists."""
    parent = RunDir(run_dir)
    config = parent.config()
    kept = parent.kept_epochs()
    if len(kept) < last:
        available = ", ".join(map(str, kept)) or "none"
        raise ValueError(
            f"{parent} keeps the weights of {len(kept)} epoch(s) (epochs: {available}), fewer than --last "
            f"{last}; train.keep_last_epochs sets how many a run keeps"
        )
    epochs = list(kept)[-last:]
    averaged = RunDir(output or parent.path.with_name(f"{parent.name}-avg{last}"))
    if averaged.path.exists():
        raise ValueError(f"{averaged} exists already; pick another --out or remove it")
    with parent.lock():
        weights = mean_weights([kept[epoch] for epoch in epochs], parent, config)
        write_averaged_run(parent, averaged, weights, epochs)
    log(f"Averaged epochs {', '.join(map(str, epochs))} of {parent} into {averaged}")
    log(f"  Score it:  attend evaluate {averaged} --split test   (beside: attend evaluate {parent})")
    return averaged


def mean_weights(paths: list[Path], run: RunDir, config: Config) -> list[np.ndarray]:
    """The element-wise mean (accumulated in float64) of the weights in `paths`, in the model's order."""
    model = _model_of(run, config)
    total: list[np.ndarray] = []
    for path in paths:
        model.load_weights(str(path))
        values = [np.asarray(value, np.float64) for value in model.get_weights()]
        total = [*map(np.add, total, values)] if total else values
    return [(value / len(paths)).astype(np.float32) for value in total]


def write_averaged_run(
    parent: RunDir, averaged: RunDir, weights: list[np.ndarray], epochs: list[int]
) -> None:
    """The averaged run folder, staged beside its final name and renamed into place whole."""
    staging = RunDir(averaged.path.with_name(f".{averaged.name}.staging"))
    staging.remove()
    try:
        staging.checkpoints_dir.mkdir(parents=True)
        shutil.copy2(parent.config_path, staging.config_path)
        shutil.copytree(parent.vocab_dir, staging.vocab_dir)
        model = _model_of(parent, parent.config())
        model.set_weights(weights)
        model.save_weights(str(staging.best_weights))
        card = parent.model_card()
        card["averaged"] = {"parent": str(parent), "epochs": epochs, "method": "mean of the epochs' weights"}
        card.pop("metrics", None)  # the parent's scores are not the average's: `attend evaluate` it
        staging.write_model_card(card)
        staging.path.rename(averaged.path)
    except BaseException:
        staging.remove()
        raise


def _model_of(run: RunDir, config: Config):
    """The run's model, built in float32 (its weights are float32 under every precision policy)."""
    sizes = (
        load_tokenizer(run.vocab_dir / f"{side}.model", side).vocab_size for side in ("source", "target")
    )
    return build_float32_model(*sizes, config)
