"""Pretrained word vectors: the three file formats, their errors, and their rows in a built model."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from app.config import ModelConfig
from app.data.tokenizer import SubwordTokenizer, read_side, train_sentencepiece
from app.data.word_vectors import map_onto_vocabulary, read_word_vectors
from app.models.seq2seq import build_model
from app.recipe.embeddings import apply_pretrained_embeddings, vocabulary_pieces
from tests.conftest import BIBLE_SAMPLE

# float32-exact values, so that text and binary files read to identical vectors
VECTORS = {"casa": [0.5, -1.25, 2.0], "perro": [0.0, 3.5, -0.125], "niño": [1.0, 1.0, -8.0]}


def write_text(path: Path, vectors: dict, header: bool) -> Path:
    lines = [f"{word} " + " ".join(map(str, values)) for word, values in vectors.items()]
    if header:
        lines.insert(0, f"{len(vectors)} {len(next(iter(vectors.values())))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary(path: Path, vectors: dict, newline: bool) -> Path:
    records = [
        word.encode() + b" " + struct.pack(f"<{len(values)}f", *values) + (b"\n" if newline else b"")
        for word, values in vectors.items()
    ]
    path.write_bytes(f"{len(vectors)} {len(next(iter(vectors.values())))}\n".encode() + b"".join(records))
    return path


WRITERS = {
    "word2vec-text": lambda path: write_text(path, VECTORS, header=True),
    "glove": lambda path: write_text(path, VECTORS, header=False),
    "word2vec-binary": lambda path: write_binary(path, VECTORS, newline=True),
    "word2vec-binary no newlines": lambda path: write_binary(path, VECTORS, newline=False),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_each_format_is_detected_and_reads_to_the_same_vectors(tmp_path, kind):
    vectors = read_word_vectors(WRITERS[kind](tmp_path / "vectors"))
    assert vectors.format == kind.split(" ")[0]
    assert (vectors.dimension, vectors.words_in_file) == (3, 3)
    assert {word: vector.tolist() for word, vector in vectors.vectors.items()} == VECTORS
    assert all(vector.dtype == np.float32 for vector in vectors.vectors.values())


def test_keep_holds_only_the_words_asked_for_but_counts_the_whole_file(tmp_path):
    vectors = read_word_vectors(WRITERS["word2vec-binary"](tmp_path / "vectors.bin"), keep={"niño", "gato"})
    assert list(vectors.vectors) == ["niño"]
    assert vectors.words_in_file == 3


BINARY_HEADER = b"2 3\na " + struct.pack("<3f", 1, 2, 3)
BAD_FILES = {
    "empty": (b"", "is empty"),
    "ragged GloVe": (b"a 1 2 3\nb 1 2\n", "line 2 has 2 values, expected 3"),
    "ragged word2vec text": (b"2 3\na 1 2 3\nb 1 2 3 4\n", "line 3 has 4 values, expected 3"),
    "header dimension wrong": (b"1 4\na 1 2 3\n", "line 2 has 3 values, expected 4"),
    "fewer vectors than the header": (b"3 3\na 1 2 3\n", "holds 1 vectors, its header announces 3"),
    "not numbers": (b"a 1 x 3\n", "line 1: the values are not all numbers"),
    "not UTF-8": (b"\xff\xfe 1 2\n", "line 1 is not UTF-8"),
    "word without values": (b"a\n", "line 1 holds a word and no values"),
    "truncated binary": (BINARY_HEADER + b"b " + struct.pack("<f", 1), "ends inside record 2 of the 2"),
}


@pytest.mark.parametrize("contents, message", BAD_FILES.values(), ids=BAD_FILES)
def test_bad_files_raise_a_value_error_that_says_what_is_wrong(tmp_path, contents, message):
    path = tmp_path / "vectors.txt"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match=message):
        read_word_vectors(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"No word-vector file at {tmp_path / 'nothing.vec'}"):
        read_word_vectors(tmp_path / "nothing.vec")


# ids 0-3 reserved; "▁casa" at id 2 too, to show that a reserved id is never overwritten
PIECES = ["<pad>", "<s>", "▁casa", "<unk>", "▁casa", "▁Perro", "sa", "▁", "▁nada", "<0x41>"]


def initial_matrix(rows: int, dimension: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.05, 0.05, (rows, dimension)).astype(np.float32)


def test_word_pieces_take_their_words_vectors_and_the_others_keep_theirs(tmp_path):
    vectors = read_word_vectors(WRITERS["glove"](tmp_path / "glove.txt"))
    initial = initial_matrix(len(PIECES))
    matrix, coverage = map_onto_vocabulary(PIECES, vectors, initial, rescale=False)
    assert matrix[4].tolist() == VECTORS["casa"]
    assert matrix[5].tolist() == VECTORS["perro"]  # "Perro" found lower-cased
    unchanged = [0, 1, 2, 3, 6, 7, 8, 9]
    np.testing.assert_array_equal(matrix[unchanged], initial[unchanged])
    assert coverage.as_dict() == {
        "file": str(tmp_path / "glove.txt"),
        "format": "glove",
        "dimension": 3,
        "words_in_file": 3,
        "vocabulary_size": 10,
        "word_pieces": 3,  # ▁casa, ▁Perro, ▁nada (not "▁" alone, not the reserved id 2)
        "pieces_found": 2,
        "scale": 1.0,
        "share": 0.2,
    }


def root_mean_square(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values.astype(np.float64)))))


def test_rescaling_gives_the_found_rows_the_initial_rows_size_with_one_factor(tmp_path):
    vectors = read_word_vectors(WRITERS["glove"](tmp_path / "glove.txt"))
    initial = initial_matrix(len(PIECES))
    matrix, coverage = map_onto_vocabulary(PIECES, vectors, initial)
    found = np.array([VECTORS["casa"], VECTORS["perro"]])
    expected_scale = root_mean_square(initial[4:]) / root_mean_square(found)
    assert coverage.scale == pytest.approx(expected_scale, rel=1e-6)
    np.testing.assert_allclose(matrix[[4, 5]], found * expected_scale, rtol=1e-6)
    assert root_mean_square(matrix[[4, 5]]) == pytest.approx(root_mean_square(initial[4:]), rel=1e-5)


def test_a_dimension_other_than_the_models_is_refused_naming_the_setting(tmp_path):
    vectors = read_word_vectors(WRITERS["glove"](tmp_path / "glove.txt"))
    with pytest.raises(ValueError, match=r"dimension 3, the model's embeddings 4: set model.embedding_dim=3"):
        map_onto_vocabulary(PIECES, vectors, initial_matrix(len(PIECES), 4))


# === In a built model, with a real SentencePiece vocabulary ===

DIMENSION = 4
# "the" also matches "▁The" (lower-cased); "zebra" is no piece of this vocabulary
ENGLISH = {
    "the": [1.0, 2.0, 3.0, 4.0],
    "Moses": [-1.0, 0.5, 0.25, 2.0],
    "children": [0.0, -3.0, 1.0, 1.0],
    "zebra": [9.0, 9.0, 9.0, 9.0],
}


@pytest.fixture(scope="module")
def tokenizers() -> SimpleNamespace:
    """A PreparedData stand-in: the two tokenizers `apply_pretrained_embeddings` reads."""
    # seeded first: seeding clears TF's eager kernel cache, and with it the tokenizers' resources
    keras.utils.set_random_seed(0)
    return SimpleNamespace(
        source_tokenizer=SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, 0), 400)),
        target_tokenizer=SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, 1), 400)),
    )


def small_model(data: SimpleNamespace) -> keras.Model:
    return build_model(
        data.source_tokenizer.vocab_size,
        data.target_tokenizer.vocab_size,
        embedding_dim=DIMENSION,
        units=8,
        attention_units=8,
        readout_units=8,
    )


def embeddings(model: keras.Model, side: str) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.get_layer(f"{side}_embedding").embeddings).copy()


@pytest.fixture
def english_vectors(tmp_path) -> Path:
    return write_text(tmp_path / "english.vec", ENGLISH, header=True)


def test_a_files_vector_lands_in_its_pieces_row_and_nothing_else_changes(tokenizers, english_vectors):
    model = small_model(tokenizers)
    source_before, target_before = embeddings(model, "source"), embeddings(model, "target")
    config = ModelConfig(embedding_dim=DIMENSION, target_embeddings=str(english_vectors))
    records = apply_pretrained_embeddings(model, config, tokenizers)

    pieces = vocabulary_pieces(tokenizers.target_tokenizer)
    rows = {piece: pieces.index(piece) for piece in ("▁the", "▁The", "▁Moses", "▁children")}
    assert "▁zebra" not in pieces and all(row >= 4 for row in rows.values())
    target = embeddings(model, "target")
    scale = records["target"]["scale"]
    assert scale != 1.0
    for piece, word in [("▁the", "the"), ("▁The", "the"), ("▁Moses", "Moses"), ("▁children", "children")]:
        np.testing.assert_allclose(target[rows[piece]], np.array(ENGLISH[word]) * scale, rtol=1e-6)
    others = [row for row in range(len(pieces)) if row not in rows.values()]
    np.testing.assert_array_equal(target[others], target_before[others])  # reserved ids 0-3 among them
    np.testing.assert_array_equal(embeddings(model, "source"), source_before)  # no source file set
    assert list(records) == ["target"]
    word_pieces = sum(piece.startswith("▁") and len(piece) > 1 for piece in pieces[4:])
    assert {key: records["target"][key] for key in ("vocabulary_size", "word_pieces", "pieces_found")} == {
        "vocabulary_size": 400,
        "word_pieces": word_pieces,
        "pieces_found": 4,
    }
    assert records["target"]["share"] == 4 / 400
    assert (records["target"]["format"], records["target"]["words_in_file"]) == ("word2vec-text", 4)


def test_no_file_set_changes_nothing_and_returns_no_record(tokenizers):
    model = small_model(tokenizers)
    before = embeddings(model, "target")
    assert apply_pretrained_embeddings(model, ModelConfig(freeze_embeddings=True), tokenizers) == {}
    np.testing.assert_array_equal(embeddings(model, "target"), before)
    assert model.get_layer("target_embedding").trainable


def test_a_wrong_dimension_names_the_side_and_both_settings(tokenizers, english_vectors):
    model = build_model(
        tokenizers.source_tokenizer.vocab_size, tokenizers.target_tokenizer.vocab_size, embedding_dim=6
    )
    config = ModelConfig(embedding_dim=6, target_embeddings=str(english_vectors))
    with pytest.raises(
        ValueError,
        match=rf"model.target_embeddings={english_vectors}: .*dimension 4, the model's embeddings 6: "
        r"set model.embedding_dim=4",
    ):
        apply_pretrained_embeddings(model, config, tokenizers)


def test_freezing_keeps_the_pretrained_matrix_through_a_training_step(tokenizers, english_vectors):
    model = small_model(tokenizers)
    config = ModelConfig(
        embedding_dim=DIMENSION, target_embeddings=str(english_vectors), freeze_embeddings=True
    )
    apply_pretrained_embeddings(model, config, tokenizers)
    assert not model.get_layer("target_embedding").trainable
    assert model.get_layer("source_embedding").trainable  # no vectors there: not frozen
    trainable = {id(variable) for variable in model.trainable_variables}
    assert id(model.get_layer("target_embedding").embeddings) not in trainable

    target_before, source_before = embeddings(model, "target"), embeddings(model, "source")
    model.compile(
        optimizer=keras.optimizers.SGD(1.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    source_ids = np.array([[5, 6, 7, 2], [8, 9, 2, 0]], dtype=np.int32)
    target_ids = np.array([[1, 270, 300, 2], [1, 280, 2, 0]], dtype=np.int32)
    model.train_on_batch([source_ids, target_ids[:, :-1]], target_ids[:, 1:])
    np.testing.assert_array_equal(embeddings(model, "target"), target_before)
    assert not np.array_equal(embeddings(model, "source"), source_before)  # the step did train
