"""Subword tokenization: SentencePiece models trained by `sentencepiece`, run in-graph by tensorflow-text.

Why SentencePiece and not WordPiece: with the identity normalisation and byte fallback its
detokenizer restores the text exactly (case, accents, apostrophes, no space before a full
stop), and any input, emoji or unseen script included, maps to byte pieces instead of
`[UNK]`. The TensorFlow tutorial's lowercased, accent-stripped "youve won ." costs about 14
BLEU on its own test set; this costs nothing.

Reserved ids (`app/special_tokens.py`), the same in both languages: 0 padding, 1 start, 2 end, 3 unknown.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text

from app.data.lock import exclusive_lock
from app.special_tokens import END_ID, PAD_ID, START_ID, UNKNOWN_ID

FORMAT_VERSION = 2  # 2: a seeded sample of all train files instead of the first lines of one
_HASH_CHUNK = 1 << 20
_BYTE_PIECES = 256
_MINIMUM_VOCAB_SIZE = _BYTE_PIECES + 4 + 32
CLOSED_MODEL_TYPES = ("char", "word")  # one piece per character / whitespace-separated word


# Exactly the code points Python's `str.isspace()` accepts (so where `str.split()` splits): tab to
# carriage return, U+001C-U+001F, space, U+0085, and the Unicode separators (category Z). RE2's `\s`
# is only [\t\n\f\r ], so without this a no-break, thin or ideographic space would survive serving
# while corpus preparation (`app.data.corpus.normalize_text`) turned it into a space.
WHITESPACE_RUN = (
    r"[\x{09}-\x{0D}\x{1C}-\x{20}\x{85}\x{A0}\x{1680}"
    r"\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]+"
)


def normalize(text: tf.Tensor) -> tf.Tensor:
    """The one normalisation applied to every input string: NFC, whitespace runs collapsed, stripped.

    Same steps, order and whitespace as `app.data.corpus.normalize_text`, so that the model is
    served the text it was trained on.
    """
    composed = tf_text.normalize_utf8(text, "NFC")
    return tf.strings.strip(tf.strings.regex_replace(composed, WHITESPACE_RUN, " "))


class SubwordTokenizer(tf.Module):
    """A SentencePiece model run by tensorflow-text, exportable inside a SavedModel.

    Args:
        model_proto: the serialized SentencePiece model (`.model` file contents).

    `tokenize` returns ragged int32 ids without start/end markers; `detokenize` takes ragged or
    0-padded dense ids and ignores the reserved ids, so decoder output can go in unchanged.

    Example:
        >>> tokenizer = SubwordTokenizer(Path("vocab/source.model").read_bytes())
        >>> tokenizer.detokenize(tokenizer.tokenize(["¿Dónde está?"]))  # [b"¿Dónde está?"]
    """

    def __init__(self, model_proto: bytes, name: str | None = None):
        super().__init__(name=name)
        # Kernel resources are shared by name inside a process: name each after its model's content
        # so that two tokenizers (or two loaded exports) never swap models.
        resource_name = f"sentencepiece_{hashlib.sha256(model_proto).hexdigest()[:16]}"
        self._sentencepiece = tf_text.SentencepieceTokenizer(
            model=model_proto, out_type=tf.int32, name=resource_name
        )
        processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = int(processor.get_piece_size())
        self._check_reserved_ids(processor)

    @staticmethod
    def _check_reserved_ids(processor: sentencepiece.SentencePieceProcessor) -> None:
        expected = {PAD_ID: processor.pad_id(), START_ID: processor.bos_id(), END_ID: processor.eos_id()}
        if any(wanted != actual for wanted, actual in expected.items()) or processor.unk_id() != UNKNOWN_ID:
            raise ValueError("SentencePiece model was not trained with pad=0, start=1, end=2, unknown=3")

    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self._sentencepiece.tokenize(normalize(text))

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids, padding=PAD_ID)
        keep = ids > UNKNOWN_ID  # drop padding, start and end; unknown never occurs with byte fallback
        return self._sentencepiece.detokenize(tf.ragged.boolean_mask(ids, keep))

    def pieces(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor | tf.RaggedTensor:
        """Subword strings of ids, for attention plots."""
        return self._sentencepiece.id_to_string(ids)

    def sampling(self, nbest_size: int, alpha: float) -> SampledTokenizer:
        """This model drawing one segmentation per call, for subword regularisation (Kudo, 2018).

        `nbest_size`: draw from the n best segmentations, -1 from all of them (forward-filtering
        backward-sampling over the lattice); `alpha`: the inverse temperature of the draw (a bpe
        model reads it as BPE-dropout's merge-dropout probability and ignores `nbest_size`). The
        sampler shares this tokenizer's SentencePiece kernel resource (nbest_size and alpha are
        inputs of each tokenize op, not of the model), and this tokenizer keeps the best segmentation.
        """
        sampler = copy.copy(self._sentencepiece)  # same model resource; no second copy of the model
        sampler.nbest_size, sampler.alpha = nbest_size, alpha
        return SampledTokenizer(sampler)


class SampledTokenizer:
    """A SubwordTokenizer's model sampling its segmentations (`SubwordTokenizer.sampling`): for the
    train pipeline only, never a tf.Module, so nothing of it can reach an export. The draws come from
    SentencePiece's own per-thread generator inside the tensorflow-text kernel, seeded from the
    operating system: TensorFlow's seeds do not reach it (tensorflow-text offers no way to seed it)."""

    def __init__(self, sentencepiece: tf_text.SentencepieceTokenizer):
        self._sentencepiece = sentencepiece

    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self._sentencepiece.tokenize(normalize(text))


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    control_symbols: Sequence[str] = (),
) -> bytes:
    """Trains a SentencePiece model and returns its serialized bytes.

    Subword models (unigram, bpe) fall back to bytes for unseen characters. `char` and `word` models
    have a closed vocabulary (letters of words, phone symbols) and no byte pieces: 256 pieces that
    never occur would cost a g2p model more softmax than its 39 phones; what they never saw is
    unknown (id 3), which `detokenize` drops.
    """
    if model_type in CLOSED_MODEL_TYPES:
        if vocab_size < 5:
            raise ValueError(f"vocab size {vocab_size} is too small: the reserved ids take 4 pieces")
    elif vocab_size < _MINIMUM_VOCAB_SIZE:
        raise ValueError(
            f"vocab size {vocab_size} is too small: byte fallback alone needs {_BYTE_PIECES} pieces; "
            f"use at least {_MINIMUM_VOCAB_SIZE}"
        )
    model = io.BytesIO()
    try:
        _train(sentences, model, vocab_size, model_type, character_coverage, control_symbols)
    except RuntimeError as error:
        if "required_chars" in str(error):  # every character of the text needs its own piece
            raise ValueError(f"vocab size {vocab_size} is too small for this text: {error}") from error
        raise
    return model.getvalue()


def _train(
    sentences: Iterable[str],
    model: io.BytesIO,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    control_symbols: Sequence[str] = (),
) -> None:
    # control symbols (train.tag_synthetic's tag): pieces with an id that no text ever tokenizes to
    reserved = {"control_symbols": ",".join(control_symbols)} if control_symbols else {}
    sentencepiece.SentencePieceTrainer.train(
        **reserved,
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        normalization_rule_name="identity",  # inputs are NFC already; keep every character as written
        byte_fallback=model_type not in CLOSED_MODEL_TYPES,
        pad_id=PAD_ID,
        bos_id=START_ID,
        eos_id=END_ID,
        unk_id=UNKNOWN_ID,
        hard_vocab_limit=False,  # tiny corpora may not support the full size
        num_threads=2,
        minloglevel=2,  # errors only: no page of C++ log lines per model; fit_tokenizers logs the time
    )


def read_side(tsv_paths: Path | Sequence[Path], column: int, limit: int | None = None) -> Iterator[str]:
    """One side (0 = source, 1 = target) of prepared `source<TAB>target` files, one after the other."""
    for line in itertools.islice(read_lines(tsv_paths), limit):
        yield line.split("\t")[column]


def read_lines(tsv_paths: Path | Sequence[Path]) -> Iterator[str]:
    """The lines (without their end) of one file, or of several in turn (a sharded train split)."""
    for path in as_paths(tsv_paths):
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                yield line.rstrip("\n")


def as_paths(tsv_paths: Path | str | Sequence[Path]) -> tuple[Path, ...]:
    """One path or a sequence of paths, as a tuple of paths."""
    if isinstance(tsv_paths, (str, os.PathLike)):
        return (Path(tsv_paths),)
    return tuple(Path(path) for path in tsv_paths)


def sample_lines(tsv_paths: Path | Sequence[Path], limit: int, seed: int) -> list[str]:
    """A seeded uniform sample of at most `limit` lines of the files, in one pass and `limit` lines of
    memory (reservoir sampling). Files of at most `limit` lines come back whole, in their order."""
    chosen: list[str] = []
    generator = random.Random(seed)
    for number, line in enumerate(read_lines(tsv_paths)):
        if number < limit:
            chosen.append(line)
        else:
            slot = generator.randrange(number + 1)
            if slot < limit:
                chosen[slot] = line
    return chosen


def round_trip_failures(
    tokenizer: SubwordTokenizer, sentences: list[str], batch_size: int = 4096
) -> list[tuple[str, str]]:
    """(expected, got) for each sentence whose detokenize(tokenize(x)) differs from NFC(x)."""
    failures = []
    for start in range(0, len(sentences), batch_size):
        batch = tf.constant(sentences[start : start + batch_size])
        expected = normalize(batch).numpy()
        restored = tokenizer.detokenize(tokenizer.tokenize(batch)).numpy()
        failures += [
            (want.decode(), got.decode()) for want, got in zip(expected, restored, strict=True) if want != got
        ]
    return failures


def _fingerprint(train_files: tuple[Path, ...], settings: dict, seed: int) -> str:
    """The settings, the sample's seed and every train file's bytes, read in chunks."""
    header = {"format": FORMAT_VERSION, "seed": seed, **settings}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for path in train_files:
        digest.update(f"\x00{path.name}\x00".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def fit_tokenizers(
    train_files: Path | Sequence[Path], vocab_dir: Path, settings: dict, log=print, *, seed: int = 0
) -> dict[str, Path]:
    """Trains source and target models on the train split into `vocab_dir`, reusing them when unchanged.

    `train_files` is the train split's file, or its shards. `settings` holds `source_vocab_size`,
    `target_vocab_size`, `model_type` (and, where a side differs, `source_model_type` /
    `target_model_type`), `character_coverage` and `max_training_sentences` (the TokenizerConfig
    as a dict, `app.data.prepare.tokenizer_settings`): both models train on the same seeded sample
    of at most that many pairs, drawn from all the files (None: every pair). With `joint` (true) one
    model of `source_vocab_size` trains on both sides' text, and `target.*` are copies of `source.*`,
    so that every reader and an export's assets keep their two files. Returns the `.model`
    paths. Holds a lock beside `vocab_dir`, so that a second process fitting the same models waits,
    then reuses them.
    Logs a line before and after each model, with its time and size (a tiny corpus may support
    fewer pieces than asked for); the trainer's own log is silenced (`minloglevel` in `_train`).
    """
    train_files = as_paths(train_files)
    lock = vocab_dir.parent / f".{vocab_dir.name}.lock"
    with exclusive_lock(lock, f"the tokenizers in {vocab_dir}", log):
        fingerprint = _fingerprint(train_files, settings, seed)
        paths = {side: vocab_dir / f"{side}.model" for side in ("source", "target")}
        manifest = vocab_dir / "manifest.json"
        same = manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint
        if same and all(path.is_file() and not _damaged(path) for path in paths.values()):
            log(f"Reusing tokenizers in {vocab_dir}")
            return paths
        _fit_into(vocab_dir, _training_lines(train_files, settings, seed, log), settings, fingerprint, log)
        return paths


def _training_lines(
    train_files: tuple[Path, ...], settings: dict, seed: int, log
) -> Callable[[], Iterator[str]]:
    """The pairs both models train on: a seeded sample held in memory, or every line streamed."""
    limit = settings["max_training_sentences"]
    if limit is None:
        return lambda: read_lines(train_files)
    started = time.perf_counter()
    sample = sample_lines(train_files, limit, seed)
    log(f"Sampled {len(sample):,} pairs for the tokenizers in {time.perf_counter() - started:.1f} s")
    return lambda: iter(sample)


def _fit_into(
    vocab_dir: Path, lines: Callable[[], Iterator[str]], settings: dict, fingerprint: str, log
) -> None:
    staging = vocab_dir.with_name(vocab_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    joint = settings.get("joint", False)  # tokenizer.joint: one model of both sides, as source and target
    for column, side in enumerate(("source", "target")):
        if joint and side == "target":  # copies, so that every reader of target.* reads the joint model
            for suffix in ("model", "vocab"):
                shutil.copyfile(staging / f"source.{suffix}", staging / f"target.{suffix}")
            break
        name = "joint" if joint else side
        log(f"Training the {name} SentencePiece model ({settings[f'{side}_vocab_size']} pieces) ...")
        started = time.perf_counter()
        proto = train_sentencepiece(
            _side_lines(lines, column, joint),
            settings[f"{side}_vocab_size"],
            settings.get(f"{side}_model_type") or settings["model_type"],
            settings["character_coverage"],
            control_symbols=_control_symbols(settings, ("source", "target") if joint else (side,)),
        )
        pieces = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
        log(f"  done in {time.perf_counter() - started:.1f} s ({pieces} pieces)")
        (staging / f"{side}.model").write_bytes(proto)
        _write_vocab_listing(proto, staging / f"{side}.vocab")
    (staging / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint, **settings}, indent=2))
    shutil.rmtree(vocab_dir, ignore_errors=True)
    staging.rename(vocab_dir)


def _side_lines(lines: Callable[[], Iterator[str]], column: int, joint: bool) -> Iterator[str]:
    """One side of the pairs (0 = source, 1 = target), or with a joint model both: each pair's source,
    then its target."""
    for line in lines():
        sides = line.split("\t")
        yield from sides[:2] if joint else (sides[column],)


def _control_symbols(settings: dict, sides: tuple[str, ...]) -> list[str]:
    """The reserved pieces of the model of `sides` (a joint model holds both sides' ones)."""
    symbols = [symbol for side in sides for symbol in settings.get(f"{side}_control_symbols", ())]
    return list(dict.fromkeys(symbols))


def _write_vocab_listing(model_proto: bytes, path: Path) -> None:
    """A human-readable `piece<TAB>score` listing beside the binary model."""
    processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
    lines = (
        f"{processor.id_to_piece(i)}\t{processor.get_score(i)}" for i in range(processor.get_piece_size())
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _damaged(model_path: Path) -> bool:
    """Whether a fitted model is damaged (fitting again replaces it)."""
    return model_problem(model_path.read_bytes(), model_path.with_suffix(".vocab")) is not None


def vocabulary(model_path: Path) -> list[str]:
    """The pieces of a SentencePiece model file, by id."""
    processor = sentencepiece.SentencePieceProcessor(model_proto=read_model(model_path))
    return [processor.id_to_piece(index) for index in range(processor.get_piece_size())]


def load_tokenizer(model_path: Path, name: str | None = None) -> SubwordTokenizer:
    return SubwordTokenizer(read_model(model_path), name=name)


def read_model(model_path: Path) -> bytes:
    """A SentencePiece model file's bytes, checked first: a damaged one (cut short by a full disk or a
    copy stopped halfway) is named with what is wrong, instead of SentencePiece's "an unexpected
    error" at its first use."""
    if not model_path.is_file():
        raise ValueError(f"No tokenizer model at {model_path}; run `attend prepare` or `attend train` first")
    proto = model_path.read_bytes()
    problem = model_problem(proto, model_path.with_suffix(".vocab"))
    if problem:
        raise ValueError(
            f"{model_path} is damaged: {problem}. Restore it (a run's export holds a copy in "
            "export/assets/), or train again"
        )
    return proto


def model_problem(proto: bytes, listing: Path | None = None) -> str | None:
    """What is wrong with a serialized SentencePiece model (None: nothing seen). `listing`: its
    `piece<TAB>score` listing (`_write_vocab_listing`), whose line count is the model's piece count."""
    if not proto:
        return "the file is empty"
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:
        return f"its {len(proto):,} bytes are not a SentencePiece model (cut short or overwritten)"
    pieces = processor.get_piece_size()
    if listing is not None and listing.is_file():
        listed = listing.read_bytes().count(b"\n")  # one line per piece, each ending with "\n"
        if listed != pieces:
            return f"it holds {pieces} pieces, its listing {listing.name} {listed} (cut short)"
    reserved = (processor.pad_id(), processor.bos_id(), processor.eos_id(), processor.unk_id())
    if reserved != (PAD_ID, START_ID, END_ID, UNKNOWN_ID):
        return f"its reserved ids (pad, start, end, unknown) are {reserved}, not (0, 1, 2, 3) (cut short?)"
    return None
