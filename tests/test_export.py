"""The SavedModel contract: reloads with only tensorflow + tensorflow_text, survives odd input,
and a failed export never replaces a good one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from app import translator as translator_module
from app.evaluate import evaluate_run
from app.export import export_run
from app.run import RunDir
from app.special_tokens import END_PIECE
from app.translator import XLA_MAX_BATCH, load_translator, reload_and_translate
from tests.conftest import tiny_overrides

SENTENCES = ["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.", "Hola"]
AWKWARD = [
    "",
    "   ",
    "palabra " * 600,
    "😀🎉 ¡Fiesta!",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "\u0301",
    "a\tb\nc",
]


@pytest.mark.slow
def test_reloaded_export_translates_like_the_trained_model(trained_run):
    translator = load_translator(
        RunDir(trained_run)
    )  # keep a reference: tf.function methods hold `self` weakly
    in_process = translator.translate(tf.constant(SENTENCES))
    reloaded = reload_and_translate(trained_run / "export", SENTENCES)  # fresh interpreter, no project code
    assert reloaded["translation"] == [t.decode() for t in in_process["translation"].numpy()]
    assert reloaded["score"] == pytest.approx(in_process["score"].numpy().tolist(), rel=1e-4, abs=1e-4)
    assert all(score <= 0 for score in reloaded["score"])  # log-probabilities


@pytest.mark.slow
def test_odd_inputs_come_back_as_strings(trained_run):
    serving = tf.saved_model.load(str(trained_run / "export")).signatures["serving_default"]
    out = serving(text=tf.constant(AWKWARD))
    assert out["translation"].dtype == tf.string and out["translation"].shape == (len(AWKWARD),)
    assert out["score"].dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(out["score"])))
    for text in out["translation"].numpy():
        text.decode("utf-8")  # valid UTF-8 even for truncated and byte-fallback inputs
    # whitespace alone normalises to the empty input: the same translation and score
    assert out["translation"][0].numpy() == out["translation"][1].numpy()
    assert float(out["score"][0]) == pytest.approx(float(out["score"][1]), abs=1e-5)
    # each sentence translates as it does alone (odd neighbours change nothing)
    for index in (3, 4, 5):
        alone = serving(text=tf.constant([AWKWARD[index]]))
        assert alone["translation"][0].numpy() == out["translation"][index].numpy()
    assert serving(text=tf.constant([], tf.string))["translation"].shape == (0,)


@pytest.mark.slow
def test_long_sources_are_truncated_not_rejected_by_the_export_and_evaluate(trained_run, tmp_path):
    limit = RunDir(trained_run).config().decode.max_input_tokens
    long_source = "palabra " * 600  # far more than `limit` pieces
    loaded = tf.saved_model.load(str(trained_run / "export"))
    out = loaded.signatures["translate_with_attention"](text=tf.constant([long_source, "Hola"]))
    pieces = [piece for piece in out["source_tokens"].numpy()[0] if piece]
    assert len(pieces) == limit and pieces[-1] == END_PIECE.encode()  # cut, end marker kept
    served = loaded.signatures["serving_default"](text=tf.constant([long_source]))["translation"]
    own = tmp_path / "long.tsv"
    own.write_text(f"{long_source}\tword\nHola\tHello\n", encoding="utf-8")
    metrics = evaluate_run(trained_run, source_file=own, log=lambda *_: None)
    assert metrics["sentences"] == 2
    folder = trained_run / "evaluation" / f"long-beam{metrics['beam']}"
    hypotheses = (folder / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert hypotheses[0] == served.numpy()[0].decode()


@pytest.mark.slow
def test_export_carries_vocabularies_and_a_model_card(trained_run):
    directory = trained_run / "export"
    assert {"source.model", "target.model", "source.vocab", "target.vocab"} <= {
        path.name for path in (directory / "assets").iterdir()
    }
    card = json.loads((directory / "model_card.json").read_text())
    assert card["source_language"] == "es" and card["target_language"] == "en"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert (
        card["metrics"]["dev_loss"] == metrics["dev_loss"]
        and card["versions"]["tensorflow"] == tf.__version__
    )
    assert card["decoding"]["beam_width"] == RunDir(trained_run).config().decode.beam_width
    assert set(tf.saved_model.load(str(directory)).signatures) == {
        "serving_default",
        "translate_with_attention",
        "translate_ids",
        "translate_nbest",
        "translate_with_alignment",
        "score",
        "sample",
        "complete",
    }


@pytest.mark.slow
def test_failed_export_keeps_the_previous_one(trained_run, monkeypatch):
    saved_model = trained_run / "export" / "saved_model.pb"
    before = saved_model.read_bytes()

    def broken_check(*args, **kwargs):
        raise RuntimeError("simulated failure while checking the export")

    monkeypatch.setattr(translator_module, "check_export", broken_check)
    with pytest.raises(RuntimeError, match="simulated failure"):
        export_run(trained_run, log=lambda *_: None)
    assert saved_model.read_bytes() == before
    assert not (trained_run / "export.staging").exists()


def test_untrained_run_is_not_exported(tmp_path):
    with pytest.raises(ValueError, match="nothing to export"):
        export_run(tmp_path)


@pytest.mark.slow
def test_a_sentence_translates_the_same_alone_and_in_a_padded_batch(trained_run):
    translator = load_translator(RunDir(trained_run))  # the run's beam search
    assert translator.beam_width > 1
    batch = SENTENCES + ["Y dijo Dios: Sea la luz; y fué la luz."]
    together = translator.translate(tf.constant(batch))
    for index, sentence in enumerate(batch):
        alone = translator.translate(tf.constant([sentence]))
        assert alone["translation"][0].numpy() == together["translation"][index].numpy()
        assert float(alone["score"][0]) == pytest.approx(float(together["score"][index]), abs=1e-4)


@pytest.mark.slow
def test_translate_with_attention_returns_a_plot_ready_matrix(trained_run):
    signature = tf.saved_model.load(str(trained_run / "export")).signatures["translate_with_attention"]
    out = signature(text=tf.constant(["Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra."]))
    attention = out["attention"].numpy()
    source_tokens, target_tokens = out["source_tokens"].numpy(), out["target_tokens"].numpy()
    assert attention.shape == (2, target_tokens.shape[1], source_tokens.shape[1])
    for row in range(2):
        source_length = int((source_tokens[row] != b"").sum())
        target_length = int((target_tokens[row] != b"").sum())
        assert source_tokens[row, source_length - 1] == b"</s>"  # the source's end marker is attended too
        assert (attention[row, :target_length, source_length:] == 0).all()  # padding: exactly zero
        np.testing.assert_allclose(attention[row, :target_length].sum(axis=-1), 1.0, rtol=1e-4)


def jit_compiled_functions(export_dir: Path) -> list[str]:
    """Names of the SavedModel's functions that carry the `jit_compile` attribute (`_XlaMustCompile`)."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    library = saved_model.meta_graphs[0].graph_def.library.function
    return [function.signature.name for function in library if function.attr["_XlaMustCompile"].b]


@pytest.mark.slow
def test_translate_ids_matches_greedy_text_decoding_and_compiles_with_xla_after_reloading(trained_run):
    greedy = load_translator(RunDir(trained_run), beam_width=1)
    source_ids = greedy.source_ids(tf.constant(SENTENCES))
    expected = greedy.search(source_ids)
    loaded = tf.saved_model.load(str(trained_run / "export"))
    out = loaded.signatures["translate_ids"](source_ids=source_ids)
    max_output = RunDir(trained_run).config().decode.max_output_tokens
    assert out["ids"].shape == (len(SENTENCES), max_output)
    width = expected.tokens.shape[1]
    np.testing.assert_array_equal(out["ids"].numpy()[:, :width], expected.tokens.numpy())
    assert (out["ids"].numpy()[:, width:] == 0).all()
    np.testing.assert_array_equal(out["lengths"].numpy(), expected.lengths.numpy())
    # servable by stock TF Serving: no function of the default export asks for XLA …
    assert jit_compiled_functions(trained_run / "export") == []
    # … yet the id-level path compiles whole with XLA once reloaded, to the same output
    compiled = tf.function(lambda ids: loaded.signatures["translate_ids"](source_ids=ids), jit_compile=True)
    out_xla = compiled(source_ids)
    np.testing.assert_array_equal(out_xla["ids"].numpy(), out["ids"].numpy())
    np.testing.assert_array_equal(out_xla["lengths"].numpy(), out["lengths"].numpy())
    np.testing.assert_allclose(out_xla["score"].numpy(), out["score"].numpy(), rtol=1e-4, atol=1e-4)
    hlo = compiled.experimental_get_compiler_ir(source_ids)(stage="hlo")
    assert "while" in hlo  # the whole search loop went to XLA


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 4])
def test_the_xla_path_translates_like_the_uncompiled_search_at_every_batch_size(trained_run, beam_width):
    """With `xla`, batches of up to XLA_MAX_BATCH sentences go through the compiled fixed-shape
    search (greedy or beam) on padded shapes; larger ones through the uncompiled one. Both give the
    reference's translations."""
    reference = load_translator(RunDir(trained_run), beam_width=beam_width)
    compiled = load_translator(RunDir(trained_run), beam_width=beam_width, xla=True)
    graph = compiled.translate.get_concrete_function().graph.as_graph_def()
    assert any(function.attr["_XlaMustCompile"].b for function in graph.library.function)
    sentences = SENTENCES + AWKWARD  # 11, one of them truncated to max_input_tokens
    for size in (1, 3, len(sentences), XLA_MAX_BATCH["greedy" if beam_width == 1 else "beam"] + 1):
        batch = tf.constant((sentences * (1 + size // len(sentences)))[:size])
        want, got = reference.translate(batch), compiled.translate(batch)
        assert got["translation"].numpy().tolist() == want["translation"].numpy().tolist(), size
        np.testing.assert_allclose(got["score"].numpy(), want["score"].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 1), (1, 1), (2, 2), (3, 4), (8, 8), (9, 16), (1000, 1024)]
)
def test_padded_sizes_are_powers_of_two(value, expected):
    assert int(translator_module._power_of_two_at_least(tf.constant(value))) == expected


@pytest.mark.slow
def test_beam_log_probability_is_never_below_greedy_on_a_trained_model(trained_run):
    sentences = SENTENCES + ["Y dijo Dios: Sea la luz; y fué la luz.", "Jesús lloró.", "¿Quién eres tú?"]
    greedy_translator = load_translator(
        RunDir(trained_run), beam_width=1
    )  # referenced: tf.function holds it weakly
    beam_translator = load_translator(RunDir(trained_run), beam_width=4, length_penalty_alpha=0.0)
    greedy = greedy_translator.translate(tf.constant(sentences))["score"].numpy()
    beam = beam_translator.translate(tf.constant(sentences))["score"].numpy()
    assert (beam >= greedy - 1e-4).all(), (beam, greedy)


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"model.attention_style": "luong", "model.cell": "lstm", "model.input_feeding": "true"},
        {"model.attention_style": "none", "model.cell": "lstm"},
    ],
    ids=["luong-lstm-input-feeding", "none-lstm"],
)
def test_other_styles_with_an_lstm_train_and_export(tmp_path, settings):
    from app.config import load_config
    from app.train import train

    brief = {"train.epochs": 1, "train.steps_per_epoch": 3, "train.bleu_sentences": 0}  # shape, not quality
    config = load_config("smoke", tiny_overrides(**{**brief, **settings}))
    train(config, tmp_path / "run", tmp_path / "data", log=lambda *_: None)
    export_run(tmp_path / "run", check_sentences=SENTENCES, log=lambda *_: None)  # reloads in a fresh process
    card = json.loads((tmp_path / "run" / "export" / "model_card.json").read_text())
    assert card["config"]["model"]["attention_style"] == settings["model.attention_style"]
    assert card["config"]["model"]["cell"] == "lstm"
    attention = tf.saved_model.load(str(tmp_path / "run" / "export")).signatures["translate_with_attention"]
    weights = attention(text=tf.constant(SENTENCES[:1]))["attention"].numpy()[0]
    if settings["model.attention_style"] == "none":
        assert (weights == 0).all()  # nothing is attended
    else:
        rows = weights[(weights.sum(axis=-1) > 0)]
        np.testing.assert_allclose(rows.sum(axis=-1), 1.0, rtol=1e-4)


@pytest.mark.slow
def test_nbest_gives_the_beam_s_distinct_hypotheses_best_first_in_a_fresh_export(trained_run):
    from app.translate import translate_sentences

    loaded = tf.saved_model.load(str(trained_run / "export"))
    sentences = ["Y lloró Jesús.", "En el principio creó Dios los cielos y la tierra.", ""]
    out = loaded.signatures["translate_nbest"](text=tf.constant(sentences))
    width = RunDir(trained_run).config().decode.beam_width
    assert out["translations"].shape == (3, width) and out["scores"].shape == (3, width)
    best = loaded.signatures["serving_default"](text=tf.constant(sentences))
    for row in range(2):
        hypotheses = [text.decode("utf-8") for text in out["translations"].numpy()[row]]
        ranked = out["normalized_scores"].numpy()[row]
        assert hypotheses[0] == best["translation"].numpy()[row].decode("utf-8")
        assert out["scores"].numpy()[row, 0] == pytest.approx(best["score"].numpy()[row], abs=1e-4)
        assert (np.diff(ranked) <= 1e-6).all() and np.isfinite(ranked).all()
    lines = list(translate_sentences(trained_run, sentences[:2], nbest=2))
    assert [line.split(" ||| ")[0] for line in lines] == ["0", "0", "1", "1"]
    first = lines[0].split(" ||| ")
    assert first[1] == best["translation"].numpy()[0].decode("utf-8")
    assert float(first[2]) == pytest.approx(best["score"].numpy()[0], abs=1e-3)
    with pytest.raises(ValueError, match=f"more hypotheses than the export's beam holds \\({width}\\)"):
        list(translate_sentences(trained_run, sentences[:1], nbest=width + 1))
