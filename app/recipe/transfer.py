"""Fine-tuning and cross-lingual transfer: a new run starts from another run's best weights.

`train.init_from=RUN_DIR` (`attend train --init-from RUN_DIR`) copies the parent's weights into
the new model before the first step, for the parts named by `train.init_parts`:

    all         every layer
    encoder     the source embedding and the encoder (a new target language or task)
    decoder     the target embedding and the decoder, output projection included (a new source
                language into the same target: the seeds' cross-lingual case)
    embeddings  both embeddings

A weight of the same shape is copied as it is. The weights whose size is a vocabulary's (both
embeddings' rows, the output projection's columns and bias) are mapped piece by piece when the
vocabularies differ: a piece the two vocabularies share gets the parent's row (another language
shares names, numbers, punctuation and many subwords), the others keep their fresh initial values
(OpenNMT-tf's `update_vocab` does the same). Any other difference of shape (other layer sizes,
another cell) cannot be reused, and stops training with the layer, both shapes and the settings
to align; so does another `model.tie_embeddings` where the parts hold a weight that tying removes
(the output projection's kernel; with `all`, the source embedding's matrix). The report says
exactly what was copied, mapped and left fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import keras
import numpy as np

from app.config import Config
from app.data.tokenizer import vocabulary
from app.models.seq2seq import build_model
from app.models.tying import tying_of, untied_layers

PART_LAYERS = {
    "all": ("source_embedding", "target_embedding", "encoder", "decoder"),
    "encoder": ("source_embedding", "encoder"),
    "decoder": ("target_embedding", "decoder"),
    "embeddings": ("source_embedding", "target_embedding"),
}
# weight path → (which vocabulary its size follows, the axis that does)
VOCABULARY_AXES = {
    "source_embedding/embeddings": ("source", 0),
    "target_embedding/embeddings": ("target", 0),
    "decoder/output_projection/kernel": ("target", 1),
    "decoder/output_projection/bias": ("target", 0),
}
SIDES = ("source", "target")


class Parent(NamedTuple):
    """What a run is initialised from: another run folder's settings, vocabularies and best weights."""

    path: Path
    config: Config
    vocabularies: dict[str, list[str]]  # side → its pieces, by id
    weights: Path


class ParentRun(Protocol):
    """A run folder to start from (`app.run.RunDir` is one: the owner of its layout)."""

    path: Path
    config_path: Path
    vocab_dir: Path
    best_weights: Path

    @property
    def is_trained(self) -> bool: ...

    def config(self) -> Config: ...


def read_parent(run: ParentRun) -> Parent:
    """The run folder `run` as a parent, or a ValueError saying what it lacks."""
    if not run.config_path.is_file() or not run.is_trained:
        needs = [path.relative_to(run.path).as_posix() for path in (run.config_path, run.best_weights)]
        raise ValueError(
            f"train.init_from={run.path}: not a trained run folder (it needs {' and '.join(needs)}: "
            "train it first, or give the folder `attend train` printed)"
        )
    vocabularies = {side: vocabulary(run.vocab_dir / f"{side}.model") for side in SIDES}
    return Parent(run.path, run.config(), vocabularies, run.best_weights)


def initialize_from(
    model: keras.Model, parent: Parent, parts: str, vocabularies: dict[str, list[str]]
) -> dict:
    """Copies (or maps) `parent`'s weights of `parts` into `model`, whose vocabularies' pieces are
    `vocabularies`; returns the report (also for the model card). Raises ValueError for a weight
    that cannot be reused; `model` is unchanged then."""
    source = _parent_model(parent)
    _check_tying(parent, tying_of(source), tying_of(model), parts)
    same = {side: parent.vocabularies[side] == vocabularies[side] for side in SIDES}
    shared = {side: _shared_pieces(parent.vocabularies[side], vocabularies[side]) for side in SIDES}
    new_values, report = {}, {"parent": str(parent.path), "parts": parts, "copied": [], "mapped": {}}
    for layer_name in PART_LAYERS[parts]:
        # in the same order for the same architecture (their paths may differ: Keras numbers the
        # names of unnamed sublayers, `forward_gru_2`, when a process builds a second model)
        parent_weights, weights = source.get_layer(layer_name).weights, model.get_layer(layer_name).weights
        if len(parent_weights) != len(weights):
            raise ValueError(_mismatch(layer_name, len(parent_weights), len(weights), parent, "weights"))
        for parent_weight, weight in zip(parent_weights, weights, strict=True):
            old, side = np.asarray(parent_weight), VOCABULARY_AXES.get(weight.path, ("",))[0]
            if side and not same[side]:
                axis = VOCABULARY_AXES[weight.path][1]
                new_values[weight.path] = _mapped(old, np.asarray(weight), axis, shared[side])
                report["mapped"][weight.path] = _mapping_record(shared[side], len(vocabularies[side]))
            elif old.shape == tuple(weight.shape):
                new_values[weight.path] = old
                report["copied"].append(weight.path)
            else:
                raise ValueError(_mismatch(weight.path, old.shape, tuple(weight.shape), parent))
    for weight in model.weights:
        if weight.path in new_values:
            weight.assign(new_values[weight.path])
    report["fresh"] = [weight.path for weight in model.weights if weight.path not in new_values]
    return report


def describe(report: dict) -> list[str]:
    """The log lines of an initialisation report."""
    lines = [
        f"Initialised from {report['parent']} (train.init_parts={report['parts']}): "
        f"{len(report['copied'])} weights copied, {len(report['mapped'])} mapped by piece, "
        f"{len(report['fresh'])} left fresh"
    ]
    for path, record in report["mapped"].items():
        lines.append(
            f"  {path}: {record['shared_pieces']:,} of {record['vocabulary_size']:,} pieces from the parent, "
            f"{record['vocabulary_size'] - record['shared_pieces']:,} fresh"
        )
    if report["fresh"]:
        lines.append(f"  fresh: {', '.join(report['fresh'])}")
    return lines


def _parent_model(parent: Parent) -> keras.Model:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        sizes = (len(parent.vocabularies[side]) for side in SIDES)
        model = build_model(*sizes, **parent.config.model.architecture())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.load_weights(str(parent.weights))
    return model


def _shared_pieces(parent_pieces: list[str], pieces: list[str]) -> np.ndarray:
    """`[n, 2]` (parent id, new id) of the pieces both vocabularies hold, new ids ascending."""
    parent_ids = {piece: index for index, piece in enumerate(parent_pieces)}
    pairs = [(parent_ids[piece], index) for index, piece in enumerate(pieces) if piece in parent_ids]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _mapped(old: np.ndarray, initial: np.ndarray, axis: int, shared: np.ndarray) -> np.ndarray:
    """`initial` with the shared pieces' slices along `axis` taken from `old`."""
    values = np.array(initial, copy=True)
    moved = np.moveaxis(values, axis, 0)  # a view: writing it writes `values`
    moved[shared[:, 1]] = np.moveaxis(old, axis, 0)[shared[:, 0]]
    return values


def _mapping_record(shared: np.ndarray, size: int) -> dict:
    return {"shared_pieces": int(shared.shape[0]), "vocabulary_size": size}


def _check_tying(parent: Parent, parent_tying: str, tying: str, parts: str) -> None:
    """Refuses parts holding a weight that exists under one `model.tie_embeddings` and not the other."""
    differing = untied_layers(parent_tying, tying)
    if not differing & set(PART_LAYERS[parts]):
        return
    usable = [name for name, layers in PART_LAYERS.items() if not differing & set(layers)]
    raise ValueError(
        f"train.init_from={parent.path}: the parent has model.tie_embeddings={parent_tying}, this model "
        f"{tying}, so their {' and '.join(sorted(differing))} weights differ; use model.tie_embeddings="
        f"{parent_tying}" + (f" or train.init_parts={' or '.join(usable)}" if usable else "")
    )


def _mismatch(path: str, old, new, parent: Parent, what: str = "") -> str:
    return (
        f"train.init_from={parent.path}: the parent's {path} {'has' if what else 'is'} {old}{what and ' '}"
        f"{what}, this model's {new}; only vocabulary-sized weights can be mapped: use the parent's "
        f"layer sizes (its model section: {_model_settings(parent.config)}) or a narrower train.init_parts"
    )


def _model_settings(config: Config) -> str:
    return " ".join(f"model.{key}={value}" for key, value in config.model.architecture().items())
