"""Inputs the product must refuse or repair rather than answer wrongly: malformed tensors sent to the
reloaded SavedModel, ids outside the vocabulary, invalid UTF-8, and control characters in a corpus.

The SavedModel tests load the export the way another program does (`tf.saved_model.load`), because a
reloaded signature does not check its inputs as the in-process `tf.function` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from tests.conftest import BIBLE_SAMPLE
from tests.test_cli import attend_here

TEXT_SIGNATURES = ["serving_default", "translate_with_attention"]
REJECTED_ERRORS = (TypeError, ValueError, tf.errors.InvalidArgumentError)


@pytest.fixture(scope="module")
def export(trained_run) -> tuple[object, dict]:
    """The reloaded SavedModel (kept referenced: its signatures hold it weakly) and its model card."""
    directory = trained_run / "export"
    card = json.loads((directory / "model_card.json").read_text(encoding="utf-8"))
    return tf.saved_model.load(str(directory)), card


# === Text signatures: shape ===


@pytest.mark.slow
@pytest.mark.parametrize("name", TEXT_SIGNATURES)
@pytest.mark.parametrize(
    "text",
    [tf.constant([["Hola"], ["mundo"]]), tf.constant("Hola")],
    ids=["matrix", "scalar"],
)
def test_text_signatures_reject_anything_but_a_vector(export, name, text):
    """Flattened, a `[2, 1]` batch would come back with a shape the caller did not send."""
    loaded, _ = export
    with pytest.raises(REJECTED_ERRORS):
        loaded.signatures[name](text=text)


@pytest.mark.slow
@pytest.mark.parametrize("name", TEXT_SIGNATURES)
def test_text_signatures_keep_their_input_spec(export, name):
    _, inputs = export[0].signatures[name].structured_input_signature
    assert inputs == {"text": tf.TensorSpec([None], tf.string, name="text")}


# === translate_ids: id range ===


@pytest.mark.slow
@pytest.mark.parametrize("where", ["negative", "vocab_size"])
def test_translate_ids_rejects_ids_outside_the_source_vocabulary(export, where):
    loaded, card = export
    vocab_size = card["tokenizers"]["source_vocab_size"]
    bad_id = -1 if where == "negative" else vocab_size
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"must be in \[0, {vocab_size}\)"):
        loaded.signatures["translate_ids"](source_ids=tf.constant([[5, 6, 2], [5, bad_id, 2]], tf.int32))


@pytest.mark.slow
def test_translate_ids_still_translates_valid_ids(export):
    loaded, card = export
    highest = card["tokenizers"]["source_vocab_size"] - 1
    out = loaded.signatures["translate_ids"](source_ids=tf.constant([[5, highest, 2], [7, 2, 0]], tf.int32))
    assert out["ids"].dtype == tf.int32 and out["ids"].shape == (2, card["decoding"]["max_output_tokens"])
    assert out["lengths"].dtype == tf.int32 and (out["lengths"].numpy() > 0).all()
    assert out["score"].dtype == tf.float32


@pytest.mark.slow
def test_translate_ids_keeps_its_signature_without_the_jit_attribute(export):
    signature = export[0].signatures["translate_ids"]
    _, inputs = signature.structured_input_signature
    assert inputs == {"source_ids": tf.TensorSpec([None, None], tf.int32, name="source_ids")}
    assert {name: spec.dtype for name, spec in signature.structured_outputs.items()} == {
        "ids": tf.int32,
        "lengths": tf.int32,
        "score": tf.float32,
    }
    functions = signature.graph.as_graph_def().library.function
    assert not any(function.attr["_XlaMustCompile"].b for function in functions)  # stock TF Serving runs it


# === Text signatures: invalid UTF-8 ===


@pytest.mark.slow
@pytest.mark.parametrize("name", TEXT_SIGNATURES)
def test_invalid_utf8_translates_as_replacement_characters(export, name):
    """Each invalid byte sequence reads as one U+FFFD, as in Python's `decode("utf-8", "replace")`.

    Untranscoded, SentencePiece replaced bytes by its own rule: a truncated emoji became three U+FFFD.
    """
    invalid = [
        b"Hola \xff mundo",
        b"Hola \xff\xfe mundo",
        b"Hola \xf0\x9f\x98 mundo",  # an emoji cut short: one U+FFFD
        b"a\xc3",
        b"\xed\xa0\x80 \xc0\xaf",  # an encoded surrogate, an overlong "/"
    ]
    replaced = [text.decode("utf-8", "replace").encode("utf-8") for text in invalid]
    assert replaced[0] == "Hola \ufffd mundo".encode()
    out = export[0].signatures[name](text=tf.constant(invalid + replaced))
    translations, scores = out["translation"].numpy(), out["score"].numpy()
    count = len(invalid)
    assert list(translations[:count]) == list(translations[count:])
    assert scores[:count] == pytest.approx(scores[count:], abs=1e-5)
    for text in translations:
        text.decode("utf-8")
    if name == "translate_with_attention":  # the model saw exactly the replaced text
        pieces = out["source_tokens"].numpy()
        assert (pieces[:count] == pieces[count:]).all()


# === Corpus: control characters and a directory as the TSV (through the CLI) ===


def prepare_arguments(data_dir: Path, tsv: Path) -> list[str]:
    return [
        "prepare",
        "--preset",
        "smoke",
        "--data-dir",
        str(data_dir),
        "data.corpus=tsv",
        f"data.tsv_path={tsv}",
        "data.dev_size=10",
        "data.test_size=10",
        "tokenizer.source_vocab_size=400",  # 200 lines need about 330: 256 bytes + their characters
        "tokenizer.target_vocab_size=400",
    ]


def test_prepare_counts_control_characters_and_keeps_them_out_of_the_splits(tmp_path):
    lines = BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()[:200]
    lines.insert(50, "Un byte\x00 nulo.\tA null\x00 byte.")  # line 51
    lines.insert(120, "\x1b[31mRojo\x1b[0m como la sangre.\tRed as blood.")  # line 121, ANSI colours
    tsv = tmp_path / "controls.tsv"
    tsv.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

    result = attend_here(*prepare_arguments(tmp_path / "data", tsv))

    assert result.returncode == 0, result.stderr
    corpus = tmp_path / "data" / "tsv-controls-pairs3000-dev10-test10"
    report = json.loads((corpus / "report.json").read_text(encoding="utf-8"))
    assert report["bad"]["control_chars"] == {"count": 2, "locations": [51, 121]}
    assert "control_chars 2 (at 51, 121)" in result.stdout
    for split in ("train", "dev", "test"):
        prepared = (corpus / f"{split}.tsv").read_bytes()
        assert b"\x00" not in prepared and b"\x1b" not in prepared


def test_prepare_with_a_directory_as_tsv_path_fails_with_a_clear_error(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    result = attend_here(*prepare_arguments(tmp_path / "data", folder))
    assert result.returncode == 2
    assert f"{folder} is a directory; data.tsv_path must be a file" in result.stderr
    assert "Traceback" not in result.stderr
