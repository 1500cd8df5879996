"""BLEU/chrF the standard way, multi-reference, by length; `evaluate_run` on a trained run."""

from __future__ import annotations

import json

import pytest
from nltk.translate.bleu_score import corpus_bleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from app.evaluate import evaluate_run
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
    assert {"bleu", "chrf", "split", "beam", "sentences", "signature"} <= set(saved)
    assert saved["beam"] == 1 and saved["split"] == "test" and saved["sentences"] == metrics["sentences"] > 0
    hypotheses = (folder / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == saved["sentences"]
    assert (folder / "bleu_by_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    own = tmp_path / "mine.tsv"
    own.write_text("Y lloró Jesús.\tJesus wept.\n", encoding="utf-8")
    scored = evaluate_run(trained_run, source_file=own, log=lambda *_: None)
    assert scored["split"] == "mine" and scored["sentences"] == 1 and scored["beam"] > 1
