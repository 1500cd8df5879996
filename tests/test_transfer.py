"""Fine-tuning and transfer (`train.init_from`): a new run really starts from its parent's weights,
mapped piece by piece where the vocabularies differ, and refuses what cannot be reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.config import load_config
from app.data.prepare import prepare_data
from app.data.tokenizer import vocabulary
from app.recipe.transfer import initialize_from, read_parent
from app.run import RunDir
from app.translator import build_float32_model
from tests.conftest import tiny_overrides

SIDES = ("source", "target")


def child(tmp_path, **overrides):
    """A config differing from the trained_run's in its vocabularies (BPE pieces, not unigram; 350
    source pieces, not 400), prepared in tmp_path."""
    changed = {"tokenizer.source_vocab_size": 350, "tokenizer.model_type": "bpe", **overrides}
    config = load_config("smoke", tiny_overrides(**changed))
    data = prepare_data(config, tmp_path / "data", log=lambda *_: None)
    vocabularies = {side: vocabulary(data.vocab_dir / f"{side}.model") for side in SIDES}
    model = build_float32_model(len(vocabularies["source"]), len(vocabularies["target"]), config)
    return config, data, vocabularies, model


def test_weights_are_copied_and_embeddings_mapped_by_piece(trained_run, tmp_path):
    parent = read_parent(RunDir(trained_run))
    config, _, vocabularies, model = child(tmp_path)
    fresh = {weight.path: np.array(weight) for weight in model.weights}
    report = initialize_from(model, parent, "all", vocabularies)

    parent_model = build_float32_model(*(len(parent.vocabularies[side]) for side in SIDES), parent.config)
    parent_model.load_weights(str(parent.weights))
    old = {
        new.path: np.array(weight) for new, weight in zip(model.weights, parent_model.weights, strict=True)
    }
    new = {weight.path: np.array(weight) for weight in model.weights}
    # same sizes: copied exactly
    assert any(path.startswith("encoder/bidirectional/") for path in report["copied"])
    for path in report["copied"]:
        np.testing.assert_array_equal(new[path], old[path])
    # the vocabularies differ: rows (and the output projection's columns) move with their pieces
    assert "decoder/output_projection/kernel" in report["mapped"]
    path = "source_embedding/embeddings"
    assert report["mapped"][path]["vocabulary_size"] == 350 == new[path].shape[0]
    parent_ids = {piece: index for index, piece in enumerate(parent.vocabularies["source"])}
    shared = [(parent_ids[p], i) for i, p in enumerate(vocabularies["source"]) if p in parent_ids]
    assert report["mapped"][path]["shared_pieces"] == len(shared) and 100 < len(shared) < 350
    for parent_id, new_id in shared:
        np.testing.assert_array_equal(new[path][new_id], old[path][parent_id])
    unshared = [i for i, p in enumerate(vocabularies["source"]) if p not in parent_ids]
    assert unshared and all(np.array_equal(new[path][i], fresh[path][i]) for i in unshared)
    assert not report["fresh"]  # every weight came from the parent, copied or mapped


def test_init_parts_decoder_leaves_the_encoder_fresh(trained_run, tmp_path):
    _, _, vocabularies, model = child(tmp_path)
    fresh = {weight.path: np.array(weight) for weight in model.weights}
    report = initialize_from(model, read_parent(RunDir(trained_run)), "decoder", vocabularies)
    reused = [*report["copied"], *report["mapped"]]
    assert all(path.startswith(("decoder/", "target_embedding/")) for path in reused)
    assert "encoder/bridge/kernel" in report["fresh"] and "source_embedding/embeddings" in report["fresh"]
    encoder = next(weight for weight in model.weights if weight.path == "encoder/bridge/kernel")
    np.testing.assert_array_equal(np.array(encoder), fresh["encoder/bridge/kernel"])


def test_other_layer_sizes_are_refused_by_name(trained_run, tmp_path):
    _, _, vocabularies, model = child(tmp_path, **{"model.units": 48})
    before = [np.array(weight) for weight in model.weights]
    refused = r"the parent's encoder/.* is \(32, 96\), this model's \(32, 144\); only vocabulary-sized"
    with pytest.raises(ValueError, match=refused):
        initialize_from(model, read_parent(RunDir(trained_run)), "all", vocabularies)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights, strict=True))
    with pytest.raises(ValueError, match="not a trained run folder"):
        read_parent(RunDir(tmp_path))


@pytest.mark.slow
def test_a_fine_tuned_run_starts_from_the_parent_and_records_it(trained_run, tmp_path):
    from app.cli import main

    run = RunDir(tmp_path / "child")
    overrides = tiny_overrides(**{"tokenizer.source_vocab_size": 350, "train.epochs": 1})  # unigram
    argv = ["train", "--preset", "smoke", "--data-dir", str(tmp_path / "data"), "--run-dir", str(run.path)]
    assert main([*argv, "--no-export", "--init-from", str(trained_run), *overrides]) == 0
    card = json.loads(run.model_card_path.read_text())
    assert card["initialised_from"]["parent"] == str(trained_run)
    assert card["config"]["train"]["init_from"] == str(trained_run)
    assert "source_embedding/embeddings" in card["initialised_from"]["mapped"]
    # one epoch from the parent's weights ends nearer the parent than from scratch: its dev loss is
    # below the parent's first epoch's (a fresh tiny model's first epoch is far worse)
    parent_first_epoch = RunDir(trained_run).first_epoch_dev_loss()
    assert card["metrics"]["dev_loss"] < parent_first_epoch


@pytest.mark.slow
def test_frozen_pretrained_vectors_land_in_the_trained_embedding_matrix(tmp_path):
    from app.train import train

    rng = np.random.default_rng(0)
    words = {"the": rng.normal(size=32), "and": rng.normal(size=32), "zebra": rng.normal(size=32)}
    path = tmp_path / "vectors.txt"  # word2vec text format, the embedding dimension of the smoke preset
    lines = [f"{len(words)} 32", *(f"{word} {' '.join(map(str, vector))}" for word, vector in words.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = {"train.epochs": 1, "model.target_embeddings": str(path), "model.freeze_embeddings": "true"}
    config = load_config("smoke", tiny_overrides(**overrides))
    run = RunDir(tmp_path / "run")
    train(config, run.path, tmp_path / "data", log=lambda *_: None)

    coverage = run.model_card()["pretrained_embeddings"]["target"]
    pieces = vocabulary(run.vocab_dir / "target.model")
    # a piece that is a word takes its vector, as written or lower-cased ("▁And" → "and")
    found = {
        index: words.get(piece[1:], words.get(piece[1:].lower()))
        for index, piece in enumerate(pieces)
        if index > 3 and piece.startswith("\u2581") and piece[1:].lower() in words
    }
    assert coverage["pieces_found"] == len(found) >= 2 and "\u2581zebra" not in pieces  # not in this Bible
    model = build_float32_model(len(vocabulary(run.vocab_dir / "source.model")), len(pieces), config)
    model.load_weights(str(run.best_weights))
    matrix = np.array(model.get_layer("target_embedding").embeddings)
    for index, vector in found.items():  # frozen: still the file's vector (rescaled once) after training
        np.testing.assert_allclose(matrix[index], vector * coverage["scale"], rtol=1e-5)
