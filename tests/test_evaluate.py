"""BLEU/chrF the standard way, multi-reference, by length; `evaluate_run` on a trained run."""

from __future__ import annotations

import json
import math

import pytest
from nltk.translate.bleu_score import corpus_bleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from app.evaluate import evaluate_run
from app.run import RunDir
from app.scoring import bleu_by_length, corpus_scores, read_references

HYPOTHESES = [
    "In the beginning God created the heavens and the earth.",
    "Jesus wept bitterly.",
    "And God said, let there be light, and there was light.",
]
REFERENCES = [
    ["In the beginning God created the heavens and the earth."],
    ["Jesus wept."],
    ['God said, "Let there be light," and there was light.'],
]


def test_bleu_agrees_with_nltk_on_the_same_tokens():
    """nltk serves as an independent implementation: same 13a tokens, same corpus BLEU."""
    tokenize = Tokenizer13a()
    nltk_bleu = corpus_bleu(
        [[tokenize(r).split() for r in refs] for refs in REFERENCES],
        [tokenize(h).split() for h in HYPOTHESES],
    )
    scores = corpus_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == pytest.approx(100 * nltk_bleu, abs=0.01)
    assert "tok:13a" in scores["signature"]["bleu"] and "chrF" not in scores["signature"]["bleu"]
    assert 0 < scores["chrf"] < 100


def test_a_second_reference_is_used():
    single = corpus_scores(HYPOTHESES, REFERENCES)["bleu"]
    multiple = corpus_scores(
        HYPOTHESES, [refs + [hyp] for refs, hyp in zip(REFERENCES, HYPOTHESES, strict=True)]
    )
    assert single < 100 and multiple["bleu"] == 100.0 and "nrefs:2" in multiple["signature"]["bleu"]


def test_references_are_grouped_by_source(tmp_path):
    tsv = tmp_path / "split.tsv"
    tsv.write_text("uno\tone\ndos\ttwo\nuno\tone, a single\n", encoding="utf-8")
    assert read_references(tsv) == (["uno", "dos"], [["one", "one, a single"], ["two"]])
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv:1"):
        read_references(bad)


def test_bleu_by_length_buckets_sentences_by_source_words():
    sources = ["a " * 5, "a " * 15, "a " * 16, "a " * 60]
    rows = bleu_by_length(sources, HYPOTHESES + ["x"], REFERENCES + [["y"]])
    counts = {row["bucket"]: row["sentences"] for row in rows}
    assert counts == {"1-10": 1, "11-20": 2, "21-30": 0, "31-40": 0, "41-50": 0, "51+": 1}
    assert next(row for row in rows if row["bucket"] == "51+")["bleu"] == 0.0


@pytest.mark.slow
def test_evaluate_run_writes_scores_hypotheses_and_a_plot(trained_run, tmp_path):
    data_dir = trained_run.parent / "data"
    metrics = evaluate_run(trained_run, "test", beam=1, data_dir=data_dir, log=lambda *_: None)
    folder = trained_run / "evaluation" / "test-beam1"
    saved = json.loads((folder / "metrics.json").read_text())
    assert {"bleu", "chrf", "exact_match", "split", "beam", "sentences", "signature"} <= set(saved)
    # teacher-forced test perplexity: the model card's (written at the end of training) is the same
    card = json.loads((trained_run / "model_card.json").read_text())
    assert saved["perplexity"] == pytest.approx(card["metrics"]["test_perplexity"], rel=1e-4)
    assert saved["perplexity"] == pytest.approx(math.exp(saved["cross_entropy"]))
    assert 1 < saved["perplexity"] < card["tokenizers"]["target_vocab_size"]  # better than uniform
    assert saved["target_tokens"] > saved["sentences"]
    assert saved["beam"] == 1 and saved["split"] == "test" and saved["sentences"] == metrics["sentences"] > 0
    hypotheses = (folder / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == saved["sentences"]
    assert (folder / "bleu_by_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    own = tmp_path / "mine.tsv"
    own.write_text("Y lloró Jesús.\tJesus wept.\n", encoding="utf-8")
    scored = evaluate_run(trained_run, source_file=own, log=lambda *_: None)
    assert scored["split"] == "mine" and scored["sentences"] == 1 and scored["beam"] > 1


def test_average_of_two_epochs_is_their_mean_and_evaluates_like_a_run(trained_run, tmp_path):
    import numpy as np

    from app.average import average_run
    from app.cli import main
    from app.translator import build_float32_model

    run = RunDir(trained_run)
    kept = run.kept_epochs()
    epochs = run.config().train.epochs
    assert list(kept) == list(range(max(1, epochs - 4), epochs + 1))  # the last 5 at most, in order
    averaged = average_run(trained_run, 2, tmp_path / "avg2", log=lambda *_: None)
    card = run.model_card()["tokenizers"]
    model = build_float32_model(card["source_vocab_size"], card["target_vocab_size"], run.config())

    def weights_of(path):
        model.load_weights(str(path))
        return model.get_weights()

    last_two = [weights_of(kept[epoch]) for epoch in list(kept)[-2:]]
    mean = [(first + second) / 2 for first, second in zip(*last_two, strict=True)]
    for got, expected in zip(weights_of(averaged.best_weights), mean, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(last_two[0][0], last_two[1][0])  # the two epochs really differ
    assert averaged.model_card()["averaged"]["epochs"] == list(kept)[-2:]
    metrics = evaluate_run(
        averaged.path, "test", beam=1, data_dir=trained_run.parent / "data", log=lambda *_: None
    )
    assert metrics["sentences"] > 0 and metrics["perplexity"] > 1

    assert main(["average", str(trained_run), "--last", "99"]) == 2  # more epochs than it keeps
    assert main(["average", str(trained_run), "--last", "2", "--out", str(averaged.path)]) == 2  # exists
