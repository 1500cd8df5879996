"""Pretrained word vectors: a streaming reader of the three common formats, and their mapping onto a
subword vocabulary (the pieces that are whole words get the vector of that word).

Formats, told apart by the file's first line:
- word2vec text (also fastText's `.vec`): a header line `count dimension`, then `word v1 … vd` lines;
- word2vec binary (`-binary 1`): the same header, then records `word<space><d float32 little-endian>`,
  each optionally followed by a newline;
- GloVe text: no header, `word v1 … vd` lines from the first.
A first line of exactly two integers is a word2vec header (a GloVe line has a word and at least one
value, so it has two integer fields only for a 1-dimensional vector of a number-word: not a case worth
supporting). After a header the second line tells text from binary: it is text when it decodes as
UTF-8 into a word and `d` numbers, binary otherwise (`d` raw float32 values that all happen to spell
decimal numbers in ASCII do not occur for any useful `d`).

Why not gensim's `KeyedVectors`: it reads these formats too, but it is a large package that pulls in
scipy, and it holds the whole file in memory; the application needs only these three formats, read
once, keeping only the vocabulary's words, which this reader does in a few dozen lines with numpy.
To train vectors of your own, gensim's `Word2Vec(...).wv.save_word2vec_format(path)` writes a file
this reader reads (gensim is not a dependency of Attend).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.special_tokens import FIRST_PIECE_ID

WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a word
FORMATS = ("word2vec-text", "word2vec-binary", "glove")
_BINARY_FLOAT = np.dtype("<f4")


@dataclass(frozen=True)
class WordVectors:
    """The vectors read from one file (`vectors[word]`: float32 `[dimension]`), possibly a subset."""

    path: Path
    format: str  # one of FORMATS
    dimension: int
    words_in_file: int
    vectors: dict[str, np.ndarray] = field(repr=False)


def read_word_vectors(path: Path | str, keep: Collection[str] | None = None) -> WordVectors:
    """Reads a word2vec (text or binary) or GloVe file, streaming; with `keep`, only those words' vectors
    are held in memory (the first occurrence of a word counts). Raises `ValueError` for a missing, empty,
    truncated or ragged file, naming the line (text) or record (binary) at fault."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No word-vector file at {path}")
    with open(path, "rb") as handle:
        first = handle.readline()
        if not first.strip():
            raise ValueError(f"{path} is empty: expected word2vec (text or binary) or GloVe vectors")
        header = _parse_header(first)
        if header is None:
            handle.seek(0)
            return _collect(path, "glove", None, _text_records(path, handle, None, 1), keep)
        count, dimension = header
        start = handle.tell()
        text = _is_text_record(handle.readline())
        handle.seek(start)
        if text:
            records = _text_records(path, handle, dimension, 2)
            return _collect(path, "word2vec-text", count, records, keep)
        return _collect(path, "word2vec-binary", count, _binary_records(path, handle, count, dimension), keep)


def _parse_header(line: bytes) -> tuple[int, int] | None:
    fields = line.split()
    if len(fields) != 2 or not all(value.isdigit() for value in fields):
        return None
    count, dimension = map(int, fields)
    if dimension < 1:
        raise ValueError(f"word2vec header {line.decode(errors='replace').strip()!r} gives dimension 0")
    return count, dimension


def _is_text_record(line: bytes) -> bool:
    """Whether a line reads as `word v1 …` (its count of values is checked later, naming the line)."""
    try:
        fields = line.decode("utf-8").rstrip().split(" ")
        np.asarray(fields[1:], dtype=np.float32)
    except (UnicodeDecodeError, ValueError):
        return False
    return len(fields) > 1


def _text_records(
    path: Path, handle: io.BufferedReader, dimension: int | None, first_number: int
) -> Iterator[tuple[str, np.ndarray]]:
    """`(word, vector)` of each `word v1 … vd` line; the first line sets the dimension where no header did."""
    for number, raw in enumerate(handle, start=first_number):
        try:
            fields = raw.decode("utf-8").rstrip().split(" ")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} line {number} is not UTF-8 text ({error.reason})") from error
        if fields == [""]:
            continue  # a blank line (a trailing one, typically)
        if len(fields) < 2:
            raise ValueError(f"{path} line {number} holds a word and no values: {raw[:80]!r}")
        dimension = dimension or len(fields) - 1
        if len(fields) - 1 != dimension:
            raise ValueError(
                f"{path} line {number} has {len(fields) - 1} values, expected {dimension} "
                "(ragged dimensions: the file is damaged or not word vectors)"
            )
        try:
            yield fields[0], np.asarray(fields[1:], dtype=np.float32)
        except ValueError as error:
            raise ValueError(f"{path} line {number}: the values are not all numbers ({error})") from error


def _binary_records(
    path: Path, handle: io.BufferedReader, count: int, dimension: int
) -> Iterator[tuple[str, np.ndarray]]:
    size = dimension * _BINARY_FLOAT.itemsize
    for number in range(1, count + 1):
        word = _read_word(handle)
        values = handle.read(size)
        if not word or len(values) < size:
            raise ValueError(
                f"{path} ends inside record {number} of the {count} its header announces (a truncated file)"
            )
        try:
            yield word.decode("utf-8"), np.frombuffer(values, dtype=_BINARY_FLOAT).astype(np.float32)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} record {number}: the word is not UTF-8 ({error.reason})") from error


def _read_word(handle: io.BufferedReader) -> bytes:
    """The bytes up to the next space, skipping the newline that may end the previous record."""
    word = bytearray()
    while (byte := handle.read(1)) and byte != b" ":
        if byte != b"\n" or word:
            word += byte
    return bytes(word)


def _collect(
    path: Path,
    format: str,
    count: int | None,
    records: Iterator[tuple[str, np.ndarray]],
    keep: Collection[str] | None,
) -> WordVectors:
    vectors: dict[str, np.ndarray] = {}
    words, dimension = 0, None
    for word, vector in records:
        words, dimension = words + 1, len(vector)
        if (keep is None or word in keep) and word not in vectors:
            vectors[word] = vector
    if count is not None and words != count:
        raise ValueError(f"{path} holds {words} vectors, its header announces {count} (a truncated file?)")
    if dimension is None:
        raise ValueError(f"{path} holds no vectors")
    return WordVectors(path, format, dimension, words, vectors)


# === Mapping onto a subword vocabulary ===


@dataclass(frozen=True)
class Coverage:
    """How much of a vocabulary a file of word vectors covered."""

    file: str
    format: str
    dimension: int
    words_in_file: int
    vocabulary_size: int  # every piece, the reserved and byte pieces included
    word_pieces: int  # ordinary pieces that are a whole word ("▁casa"), the ones a vector can match
    pieces_found: int
    scale: float  # the factor the found vectors were multiplied by (1.0: not rescaled)

    @property
    def share(self) -> float:
        """Pieces found / vocabulary size."""
        return self.pieces_found / self.vocabulary_size if self.vocabulary_size else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "share": self.share}


def piece_word(piece: str) -> str | None:
    """The word a piece stands for when it begins a word ("▁casa" → "casa"), else None."""
    return piece[1:] if piece.startswith(WORD_START) and len(piece) > 1 else None


def candidate_words(pieces: Sequence[str]) -> set[str]:
    """The words (as written and lower-cased) worth keeping from a vector file for these pieces."""
    words = {word for word in map(piece_word, pieces[FIRST_PIECE_ID:]) if word}
    return words | {word.lower() for word in words}


def map_onto_vocabulary(
    pieces: Sequence[str], vectors: WordVectors, initial: np.ndarray, *, rescale: bool = True
) -> tuple[np.ndarray, Coverage]:
    """A copy of `initial` (`[len(pieces), d]`, the embedding matrix as initialised; row = id) in which
    each ordinary piece that is a word takes that word's vector (as written, else lower-cased); other
    pieces keep their rows, and the reserved ids (padding, start, end, unknown) are never overwritten.

    With `rescale`, the vectors found are multiplied by one factor so that their root mean square value
    equals that of the initial matrix's ordinary rows: pretrained vectors are often ten times larger
    than Keras's uniform(-0.05, 0.05) initialisation, and rows of such different norms would start the
    found and the other pieces at very different effective learning rates. One factor for all keeps
    the geometry of the vectors (their cosines and relative norms)."""
    if initial.shape != (len(pieces), initial.shape[1]):
        raise ValueError(f"the matrix has {initial.shape[0]} rows for a vocabulary of {len(pieces)} pieces")
    if vectors.dimension != initial.shape[1]:
        raise ValueError(
            f"the word vectors in {vectors.path} have dimension {vectors.dimension}, the model's embeddings "
            f"{initial.shape[1]}: set model.embedding_dim={vectors.dimension} to use them"
        )
    rows, found = _matches(pieces, vectors)
    matrix = np.array(initial, dtype=np.float32, copy=True)
    scale = _scale(initial[FIRST_PIECE_ID:], found) if rescale and rows else 1.0
    if rows:
        matrix[rows] = found * scale
    coverage = Coverage(
        file=str(vectors.path),
        format=vectors.format,
        dimension=vectors.dimension,
        words_in_file=vectors.words_in_file,
        vocabulary_size=len(pieces),
        word_pieces=sum(piece_word(piece) is not None for piece in pieces[FIRST_PIECE_ID:]),
        pieces_found=len(rows),
        scale=float(scale),
    )
    return matrix, coverage


def _matches(pieces: Sequence[str], vectors: WordVectors) -> tuple[list[int], np.ndarray]:
    rows, found = [], []
    for index in range(FIRST_PIECE_ID, len(pieces)):
        word = piece_word(pieces[index])
        vector = None if word is None else vectors.vectors.get(word, vectors.vectors.get(word.lower()))
        if vector is not None:
            rows.append(index)
            found.append(vector)
    return rows, np.stack(found) if found else np.zeros((0, vectors.dimension), np.float32)


def _root_mean_square(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))


def _scale(initial_rows: np.ndarray, found: np.ndarray) -> float:
    found_size = _root_mean_square(found)
    return _root_mean_square(initial_rows) / found_size if found_size else 1.0
