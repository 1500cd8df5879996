"""Ensembles (`app.models.ensemble`, `attend export --ensemble / --ensemble-last`) on the tiny trained
run, which keeps its two epochs' weights: an ensemble of one decodes exactly as its model, two copies
of one model as that model, two different members score by the renormalised mean of their
log-probabilities, mismatched vocabularies are refused, and the exported ensemble reloads and
translates."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the export's SentencePiece ops)

from app import cli
from app.export import ensemble_members
from app.models.decoding import DecodingStrategy
from app.models.ensemble import EnsembleDecoding
from app.models.search import max_output_lengths
from app.models.seq2seq import Seq2SeqDecoding
from app.run import RunDir
from app.special_tokens import START_ID
from app.translator import load_translator

pytestmark = pytest.mark.slow
SENTENCES = ["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.", "Hola", ""]
TARGETS = ["And Jesus wept.", "In the beginning God created the heavens and the earth.", "Hello", ""]


def epoch_members(run: RunDir, epochs=(1, 2)) -> list:
    return [(run.config(), run.epoch_weights(epoch)) for epoch in epochs]


@pytest.mark.parametrize("beam_width", [1, 3])
def test_an_ensemble_of_one_decodes_exactly_as_its_model(trained_run, beam_width):
    translator = load_translator(RunDir(trained_run))
    source_ids = translator.source_ids(tf.constant(SENTENCES))
    lengths = max_output_lengths(tf.reduce_sum(tf.cast(source_ids > 0, tf.int32), axis=1), 1.5, 10, 64)
    results = []
    for decoding in (Seq2SeqDecoding(translator.model), EnsembleDecoding([translator.model])):
        strategy = DecodingStrategy.from_settings(beam_width, 0.6, constant_keys=decoding.CONSTANT_KEYS)
        results.append(
            strategy.search(decoding.step, decoding.encode(source_ids), lengths, collect="attention")
        )
    single, ensemble = results
    np.testing.assert_array_equal(ensemble.tokens.numpy(), single.tokens.numpy())
    np.testing.assert_array_equal(ensemble.scores.numpy(), single.scores.numpy())
    np.testing.assert_array_equal(ensemble.collected.numpy(), single.collected.numpy())


def test_two_copies_of_one_model_translate_as_the_model(trained_run):
    run = RunDir(trained_run)
    single = load_translator(run)
    twice = load_translator(run, members=[(run.config(), run.best_weights)] * 2)
    assert len(twice.members) == 2 and twice.members[0] is not twice.members[1]
    text = tf.constant(SENTENCES)
    calls = {
        "translate": (text,),
        "translate_with_attention": (text,),
        "translate_with_alignment": (text,),
        "complete": (text, tf.constant(["And", "", "He", "The wo"])),
    }
    for signature, inputs in calls.items():
        expected, got = getattr(single, signature)(*inputs), getattr(twice, signature)(*inputs)
        for key, value in expected.items():
            if value.dtype == tf.string:
                assert got[key].numpy().tolist() == value.numpy().tolist(), (signature, key)
            else:
                np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=1e-5, err_msg=signature)
    nbest, nbest_twice = single.translate_nbest(text), twice.translate_nbest(text)
    assert nbest_twice["translations"].numpy().tolist() == nbest["translations"].numpy().tolist()
    source_ids = single.source_ids(text)
    ids, ids_twice = single.translate_ids(source_ids), twice.translate_ids(source_ids)
    np.testing.assert_array_equal(ids_twice["ids"].numpy(), ids["ids"].numpy())
    pairs = {"source": text, "target": tf.constant(TARGETS)}
    np.testing.assert_allclose(twice.score(**pairs)["score"], single.score(**pairs)["score"], atol=1e-4)


def test_two_members_score_by_the_renormalised_mean_of_their_log_probabilities(trained_run):
    """The ensemble's forced score of each target piece is the mean of the members' own forced scores
    of it (each member's `score` signature), less the step's normaliser log Σ_v Π_m p_m(v)^(1/M),
    which the members' Keras models give by hand; and the search's score of its own output is
    that forced score (ids, not text: a tiny model's text may not give back its pieces)."""
    run = RunDir(trained_run)
    members = epoch_members(run)
    ensemble = load_translator(run, members=members)
    alone = [load_translator(run, members=[member]) for member in members]
    pairs = {"source": tf.constant(SENTENCES), "target": tf.constant(TARGETS)}
    out = ensemble.score(**pairs)
    member_token_scores = [translator.score(**pairs)["token_scores"].numpy() for translator in alone]
    assert not np.allclose(*member_token_scores, atol=1e-3), "the two epochs should differ"

    source_ids, target_ids = ensemble.source_ids(pairs["source"]), ensemble.target_ids(pairs["target"])
    target_in = tf.concat([tf.fill([len(SENTENCES), 1], START_ID), target_ids[:, :-1]], axis=1)
    mean_log_probs = np.mean(
        [
            tf.nn.log_softmax(model([source_ids, target_in], training=False)).numpy()
            for model in ensemble.members
        ],
        axis=0,
    )  # [batch, tgt, vocab]
    normaliser = np.log(np.exp(mean_log_probs).sum(axis=-1))  # ≤ 0: the geometric mean sums to at most 1
    padding = target_ids.numpy() == 0
    expected = np.where(padding, 0.0, np.mean(member_token_scores, axis=0) - normaliser)
    np.testing.assert_allclose(out["token_scores"].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(out["score"].numpy(), expected.sum(axis=1), atol=1e-4)
    assert (normaliser[~padding] < 0).all()

    result = ensemble.search(source_ids)  # the searches' scores are the same renormalised mean
    forced = ensemble.forced_scores(source_ids, result.tokens).numpy().sum(axis=1)
    np.testing.assert_allclose(forced, result.scores.numpy(), atol=1e-4)


def test_members_must_share_the_run_s_vocabularies(trained_run, tmp_path):
    run = RunDir(trained_run)
    other = RunDir(tmp_path / "other")
    shutil.copytree(run.path, other.path, ignore=shutil.ignore_patterns("export", "logs", "*.lock"))
    assert [member.epoch for member in ensemble_members(run, [other.path])] == [
        run.best_score()["epoch"],
        other.best_score()["epoch"],
    ]
    with (other.vocab_dir / "target.vocab").open("a", encoding="utf-8") as vocab:
        vocab.write("extra\t0\n")
    with pytest.raises(ValueError, match=f"{other}.*target.vocab.*differs"):
        ensemble_members(run, [other.path])
    with pytest.raises(ValueError, match="keeps the weights of 2 epoch"):
        ensemble_members(run, last=3)


def test_attend_export_ensemble_last_reloads_and_translates(trained_run, tmp_path):
    run = RunDir(trained_run)
    out = tmp_path / "ensemble"
    assert cli.main(["export", str(run.path), "--ensemble-last", "2", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    recorded = card["export"]["ensemble"]["members"]
    assert [(m["epoch"], m["weights"]) for m in recorded] == [(e, str(run.epoch_weights(e))) for e in (1, 2)]
    assert "metrics" not in card

    exported = tf.saved_model.load(str(out))
    in_process = load_translator(run, members=epoch_members(run))  # referenced: tf.function holds it weakly
    expected = in_process.translate(tf.constant(SENTENCES))
    got = exported.signatures["serving_default"](text=tf.constant(SENTENCES))
    assert got["translation"].numpy().tolist() == expected["translation"].numpy().tolist()
    np.testing.assert_allclose(got["score"].numpy(), expected["score"].numpy(), atol=1e-4)
    ids = exported.signatures["translate_ids"](source_ids=tf.constant([[5, 6, 2]], tf.int32))
    assert ids["ids"].shape[0] == 1 and int(ids["lengths"][0]) >= 1

    assert cli.main(["export", str(run.path), "--ensemble-last", "3", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
