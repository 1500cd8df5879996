"""The export's `score`, `sample` and `translate_with_alignment` signatures on the tiny trained run:
forced decoding agrees with teacher forcing and with the searches' own scores, the signatures load
with tensorflow + tensorflow_text alone, and users reach them through `attend score`, `attend
translate --sample / --align` and the server."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the export's SentencePiece ops)

from app import cli
from app.data.pipeline import read_pairs, to_model_inputs, tokenize_pairs
from app.processes import run_python_for_json
from app.run import RunDir
from app.translator import load_translator
from tests.conftest import BIBLE_SAMPLE
from tests.serving import Server, http
from tests.test_export import jit_compiled_functions

pytestmark = pytest.mark.slow
SENTENCES = ["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.", "Hola", ""]


def fixture_pairs(count: int) -> list[tuple[str, str]]:
    lines = BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()[:count]
    return [tuple(line.split("\t")[:2]) for line in lines]


@pytest.fixture(scope="module")
def export(trained_run):
    return tf.saved_model.load(str(trained_run / "export"))


def test_score_agrees_with_teacher_forcing_in_the_keras_model(trained_run, export, tmp_path):
    pairs = fixture_pairs(6) + [("Hola", "")]  # an empty target scores its end token alone
    translator = load_translator(RunDir(trained_run))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    dataset = tokenize_pairs(read_pairs([tsv]), *translator.tokenizers)
    out = export.signatures["score"](
        source=tf.constant([s for s, _ in pairs]), target=tf.constant([t for _, t in pairs])
    )
    for row, (source_ids, target_ids) in enumerate(dataset):
        (source, target_in), target_out = to_model_inputs(source_ids[None], target_ids[None])
        logits = translator.model([source, target_in], training=False)  # the training model's call
        expected = tf.gather(tf.nn.log_softmax(logits), target_out, batch_dims=2).numpy()[0]
        length = len(expected)  # target pieces + the end token
        assert int(out["tokens"][row]) == length
        np.testing.assert_allclose(out["token_scores"].numpy()[row, :length], expected, atol=1e-4)
        assert (out["token_scores"].numpy()[row, length:] == 0).all()
        assert float(out["score"][row]) == pytest.approx(expected.sum(), abs=1e-4)
        assert float(out["normalized_score"][row]) == pytest.approx(expected.sum() / length, abs=1e-4)


@pytest.mark.parametrize("beam_width", [1, 4])
def test_forced_scores_of_a_search_s_output_are_its_own_scores(trained_run, export, beam_width):
    translator = load_translator(RunDir(trained_run), beam_width=beam_width)
    source_ids = translator.source_ids(tf.constant(SENTENCES))
    result = translator.search(source_ids)
    forced = translator.forced_scores(source_ids, result.tokens).numpy().sum(axis=1)
    np.testing.assert_allclose(forced, result.scores.numpy(), atol=1e-4)
    # the same through the export's strings, where the translation's text gives back its pieces
    # (a tiny model's output may not: e.g. a trailing space, lost to the input normalisation)
    translations = translator.translate(tf.constant(SENTENCES))["translation"]
    scored = export.signatures["score"](source=tf.constant(SENTENCES), target=translations)
    round_trips = translator.target_ids(translations).numpy()
    for row, tokens in enumerate(result.tokens.numpy()):
        if round_trips.shape[1] >= len(tokens) and (round_trips[row, : len(tokens)] == tokens).all():
            assert float(scored["score"][row]) == pytest.approx(float(result.scores[row]), abs=1e-4)


def test_sampling_near_zero_temperature_is_the_greedy_translation(trained_run):
    greedy = load_translator(RunDir(trained_run), beam_width=1)
    text = tf.constant(SENTENCES)
    expected = greedy.translate(text)
    cold = greedy.sample(text, tf.constant(1, tf.int64), tf.constant(1e-6), tf.constant(0))
    assert cold["translation"].numpy().tolist() == expected["translation"].numpy().tolist()
    np.testing.assert_allclose(cold["score"].numpy(), expected["score"].numpy(), atol=1e-4)


# Runs in a fresh interpreter: the new signatures need nothing but tensorflow and tensorflow_text.
_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert not any(name == "app" or name.startswith("app.") for name in sys.modules), "imported project code"
signatures = tf.saved_model.load(sys.argv[1]).signatures
texts = tf.constant(json.loads(sys.stdin.read()))
score = signatures["score"](source=texts, target=texts)
draw = lambda seed: signatures["sample"](
    text=texts, seed=tf.constant(seed, tf.int64), temperature=tf.constant(1.0), topk=tf.constant(0)
)["translation"].numpy().tolist()
aligned = signatures["translate_with_alignment"](text=texts)
print(json.dumps({
    "score": score["score"].numpy().tolist(),
    "sample": [t.decode() for t in draw(5)], "sample_again": [t.decode() for t in draw(5)],
    "alignment": [a.decode() for a in aligned["alignment"].numpy()],
}))
"""


def test_the_new_signatures_load_with_tensorflow_alone_and_ask_for_no_xla(trained_run, export):
    fresh = run_python_for_json(
        ["-c", _FRESH, str(trained_run / "export")], "the fresh reload", json.dumps(SENTENCES)
    )
    texts = tf.constant(SENTENCES)
    here = export.signatures["score"](source=texts, target=texts)["score"].numpy()
    np.testing.assert_allclose(fresh["score"], here, atol=1e-4)
    assert fresh["sample"] == fresh["sample_again"]  # same seed, same batch: same draws
    alignment = export.signatures["translate_with_alignment"](text=texts)["alignment"].numpy()
    assert fresh["alignment"] == [a.decode() for a in alignment]
    assert jit_compiled_functions(trained_run / "export") == []


def test_translate_with_alignment_translates_like_serving_default(export):
    texts = tf.constant(SENTENCES)
    best = export.signatures["serving_default"](text=texts)
    out = export.signatures["translate_with_alignment"](text=texts)
    assert out["translation"].numpy().tolist() == best["translation"].numpy().tolist()
    rows = zip(SENTENCES, out["translation"].numpy(), out["alignment"].numpy(), strict=True)
    for source, translation, alignment in rows:
        pairs = [[int(index) for index in pair.split("-")] for pair in alignment.decode().split()]
        # one pair per target word, in order, each naming a source word (none for an empty source)
        words = len(translation.decode().split()) if source.split() else 0
        assert [target for _, target in pairs] == list(range(words))
        assert all(0 <= source_word < len(source.split()) for source_word, _ in pairs)


def run_cli(monkeypatch, capsys, *argv: str, stdin: str = "") -> list[str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_attend_score_prints_total_and_normalised_per_line(
    trained_run, export, tmp_path, monkeypatch, capsys
):
    pairs = fixture_pairs(3)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    from_file = run_cli(monkeypatch, capsys, "score", str(trained_run), str(tsv))
    from_stdin = run_cli(monkeypatch, capsys, "score", str(trained_run), "-", stdin=tsv.read_text())
    assert from_file == from_stdin and len(from_file) == 3
    out = export.signatures["score"](
        source=tf.constant([s for s, _ in pairs]), target=tf.constant([t for _, t in pairs])
    )
    for line, total, normalised in zip(
        from_file, out["score"].numpy(), out["normalized_score"].numpy(), strict=True
    ):
        printed = [float(value) for value in line.split("\t")]
        assert printed == pytest.approx([total, normalised], abs=1e-4)
    tsv.write_text("no tab here\n", encoding="utf-8")
    assert cli.main(["score", str(trained_run), str(tsv)]) == 2
    assert "line 1: expected `source<TAB>target`" in capsys.readouterr().err


def test_attend_translate_sample_and_align(trained_run, export, monkeypatch, capsys):
    sample = ["translate", str(trained_run), "--sample", "--seed", "9", "--topk", "20", *SENTENCES[:2]]
    first, again = run_cli(monkeypatch, capsys, *sample), run_cli(monkeypatch, capsys, *sample)
    assert first == again and len(first) == 2
    drawn = export.signatures["sample"](
        text=tf.constant(SENTENCES[:2]),
        seed=tf.constant(9, tf.int64),
        temperature=tf.constant(1.0),  # the smoke preset's decode.sampling_temperature
        topk=tf.constant(20),
    )["translation"]
    assert first == [t.decode() for t in drawn.numpy()]
    aligned = run_cli(monkeypatch, capsys, "translate", str(trained_run), "--align", SENTENCES[0])
    out = export.signatures["translate_with_alignment"](text=tf.constant(SENTENCES[:1]))
    assert aligned == [f"{out['translation'][0].numpy().decode()} ||| {out['alignment'][0].numpy().decode()}"]
    assert cli.main(["translate", str(trained_run), "--seed", "3", "Hola"]) == 2
    assert "--seed only apply with --sample" in capsys.readouterr().err
    # the n-best lines are exactly docs/serving.md's `INDEX ||| TRANSLATION ||| LOG-PROBABILITY`
    nbest = run_cli(monkeypatch, capsys, "translate", str(trained_run), "--nbest", "2", *SENTENCES[:2])
    assert len(nbest) == 4 and all(
        re.fullmatch(r"[01] \|\|\| .* \|\|\| -?\d+\.\d{4}", line) for line in nbest
    )


def test_the_server_lists_and_answers_score_and_sample(trained_run, export, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(trained_run / "export", base / "es-en" / "1")
    with Server("--model-base", str(base), "--model-name", "es-en", "--poll-seconds", "0") as server:
        url = f"{server.rest}/v1/models/es-en"
        status, metadata = http("GET", f"{url}/metadata")
        assert status == 200
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
        assert {"score", "sample", "translate_with_alignment"} <= set(signatures)
        assert signatures["sample"]["inputs"]["seed"]["dtype"] == "DT_INT64"
        request = {
            "signature_name": "score",
            "inputs": {"source": SENTENCES[:2], "target": ["Jesus wept.", "In"]},
        }
        status, scored = http("POST", f"{url}:predict", request)
        assert status == 200, scored
        expected = export.signatures["score"](
            source=tf.constant(SENTENCES[:2]), target=tf.constant(["Jesus wept.", "In"])
        )
        np.testing.assert_allclose(scored["outputs"]["score"], expected["score"].numpy(), atol=1e-4)
        inputs = {"text": SENTENCES[:2], "seed": 4, "temperature": 0.8, "topk": 0}
        status, drawn = http("POST", f"{url}:predict", {"signature_name": "sample", "inputs": inputs})
        assert status == 200, drawn
        here = export.signatures["sample"](
            text=tf.constant(SENTENCES[:2]),
            seed=tf.constant(4, tf.int64),
            temperature=tf.constant(0.8),
            topk=tf.constant(0),
        )
        assert drawn["outputs"]["translation"] == [t.decode() for t in here["translation"].numpy()]
        assert server.stop() == 0, server.log()


def test_empty_batches_and_bad_inputs(export):
    empty = tf.constant([], tf.string)
    assert export.signatures["score"](source=empty, target=empty)["score"].shape == (0,)
    assert export.signatures["translate_with_alignment"](text=empty)["alignment"].shape == (0,)
    seed, temperature, topk = tf.constant(1, tf.int64), tf.constant(1.0), tf.constant(0)
    assert export.signatures["sample"](text=empty, seed=seed, temperature=temperature, topk=topk)[
        "translation"
    ].shape == (0,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="source and target batch sizes differ"):
        export.signatures["score"](source=tf.constant(["a"]), target=tf.constant(["a", "b"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be greater than 0"):
        export.signatures["sample"](
            text=tf.constant(["a"]), seed=seed, temperature=tf.constant(0.0), topk=topk
        )
