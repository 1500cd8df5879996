"""Preparation: corpus splits plus fitted tokenizers, and what the length filter keeps of each split.

`prepare_data` is what `attend prepare` runs and what training, evaluation and the benchmark
start from; both halves are cached under `data/` and reused when unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece

from app.config import Config
from app.data.corpus import PreparedCorpus, prepare_corpus
from app.data.tokenizer import (
    SubwordTokenizer,
    fit_tokenizers,
    load_tokenizer,
    read_lines,
    read_side,
    round_trip_failures,
)

ROUND_TRIP_SAMPLE = 2000
LENGTH_CHUNK = 10_000
Log = Callable[[str], object]


@dataclass(frozen=True)
class PreparedData:
    corpus: PreparedCorpus
    vocab_dir: Path
    source_tokenizer: SubwordTokenizer
    target_tokenizer: SubwordTokenizer
    round_trip_failures: dict[str, int]

    @property
    def tokenizers(self) -> tuple[SubwordTokenizer, SubwordTokenizer]:
        return self.source_tokenizer, self.target_tokenizer


MANY_DROPPED = 0.2  # a length filter dropping more than this share of the train pairs is worth a note
FEW_PAIRS = 10_000  # fewer train pairs than this make a model for trying the tool, not for translating


@dataclass(frozen=True)
class LengthFilterCounts:
    """What `train.max_source_tokens` / `max_target_tokens` keep of one split.

    A pair too long on both sides counts as `source_too_long`.
    """

    split: str
    pairs: int
    kept: int
    source_too_long: int
    target_too_long: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        dropped = self.pairs - self.kept
        text = f"{self.split}: {self.kept:,} of {self.pairs:,} pairs kept"
        if dropped:
            text += (
                f"; the length filter dropped {dropped:,} ({self.source_too_long:,} source too long, "
                f"{self.target_too_long:,} target too long)"
            )
        return text

    def warnings(self) -> list[str]:
        """What a person should know before trusting a run on these pairs (train split only)."""
        if self.split != "train":
            return []
        found = []
        if self.pairs and (self.pairs - self.kept) / self.pairs > MANY_DROPPED:
            found.append(
                f"the length filter dropped {self.pairs - self.kept:,} of {self.pairs:,} train pairs "
                f"({(self.pairs - self.kept) / self.pairs:.0%}); raise train.max_source_tokens / "
                "train.max_target_tokens or use larger tokenizer vocabularies to keep them"
            )
        if self.kept < FEW_PAIRS:
            found.append(
                f"training on only {self.kept:,} pairs: enough to check that everything works, too few for "
                f"good translations (which take tens of thousands)"
            )
        return found


def prepare_data(config: Config, data_dir: Path, log: Log = print) -> PreparedData:
    """Prepared splits plus fitted tokenizers, both cached under `data_dir` and reused when unchanged.

    Each half holds its own file lock while it works, so that processes started at once with the
    same `data_dir` (workers, or two commands) prepare it once: the others wait, then reuse."""
    return prepare_tokenizers(config, prepare_corpus(config, data_dir, log=log), log)


def prepare_tokenizers(config: Config, corpus: PreparedCorpus, log: Log = print) -> PreparedData:
    """Fits (or reuses) the tokenizers of a prepared corpus and checks their round trip on dev."""
    settings = tokenizer_settings(config)
    types = [config.tokenizer.side_model_type(side) for side in ("source", "target")]
    kinds = types[0] if types[0] == types[1] == config.tokenizer.model_type else "-".join(types)
    vocab_name = f"vocab-{kinds}-{settings['source_vocab_size']}-{settings['target_vocab_size']}"
    vocab_dir = corpus.directory / vocab_name
    paths = fit_tokenizers(corpus.train_files, vocab_dir, settings, log=log, seed=config.data.seed)
    source = load_tokenizer(paths["source"], "source_tokenizer")
    target = load_tokenizer(paths["target"], "target_tokenizer")
    failures = {}
    for column, (side, tokenizer) in enumerate((("source", source), ("target", target))):
        sample = list(read_side(corpus.dev, column, ROUND_TRIP_SAMPLE))
        bad = round_trip_failures(tokenizer, sample)
        failures[side] = len(bad)
        log(
            f"{side} tokenizer: {tokenizer.vocab_size} pieces; round trip exact on {len(sample) - len(bad)}"
            f"/{len(sample)} dev sentences" + (f"; first failure: {bad[0]}" if bad else "")
        )
    return PreparedData(corpus, vocab_dir, source, target, failures)


def tokenizer_settings(config: Config) -> dict:
    """The TokenizerConfig as `fit_tokenizers` takes it; per-side model types only where set, so
    that the models of a config without them keep their fingerprint (and are reused)."""
    settings = dataclasses.asdict(config.tokenizer)
    for side in ("source", "target"):
        if settings[f"{side}_model_type"] is None:
            del settings[f"{side}_model_type"]
    return settings


def token_lengths(tsv_paths: Path | Sequence[Path], vocab_dir: Path) -> tuple[list[int], list[int]]:
    """Per pair of prepared files: source length with its end marker, target length with its end
    marker (without the start marker) — the lengths the pipeline's filter compares.

    Counted by the `sentencepiece` package on the same models (the prepared text is normalised
    already): a second tensorflow-text pipeline, made and dropped beside the training one, takes
    the SentencePiece kernel resource they share with it (TF Text 2.21)."""
    lengths: tuple[list[int], list[int]] = ([], [])
    for sources, targets in _length_chunks(tsv_paths, vocab_dir):
        lengths[0].extend(sources)
        lengths[1].extend(targets)
    return lengths


def _length_chunks(
    tsv_paths: Path | Sequence[Path], vocab_dir: Path
) -> Iterator[tuple[list[int], list[int]]]:
    """`token_lengths` LENGTH_CHUNK pairs at a time, so that a split of millions is never held whole."""
    processors = [
        sentencepiece.SentencePieceProcessor(model_file=str(vocab_dir / f"{side}.model"))
        for side in ("source", "target")
    ]
    lines = read_lines(tsv_paths)
    while chunk := list(itertools.islice(lines, LENGTH_CHUNK)):
        sides = zip(*(line.split("\t")[:2] for line in chunk), strict=True)
        yield tuple(
            [len(ids) + 1 for ids in processor.encode(list(side))]
            for processor, side in zip(processors, sides, strict=True)
        )


def count_length_filter(
    split: str,
    tsv_paths: Path | Sequence[Path],
    vocab_dir: Path,
    max_source_tokens: int,
    max_target_tokens: int,
) -> LengthFilterCounts:
    """The length filter's counts over one split's file(s), streamed."""
    pairs = source_long = target_long = 0
    for sources, targets in _length_chunks(tsv_paths, vocab_dir):
        pairs += len(sources)
        source_long += sum(length > max_source_tokens for length in sources)
        target_long += sum(
            target > max_target_tokens and source <= max_source_tokens
            for source, target in zip(sources, targets, strict=True)
        )
    return LengthFilterCounts(split, pairs, pairs - source_long - target_long, source_long, target_long)


def check_enough_pairs(counts: LengthFilterCounts, batch_size: int) -> None:
    """Stops before training when the length filter leaves the train split under one batch, or any
    other split empty (a dev split smaller than a batch still validates correctly)."""
    minimum = batch_size if counts.split == "train" else 1
    if counts.kept >= minimum:
        return
    if counts.pairs < minimum:
        raise ValueError(
            f"The {counts.split} split has {counts.pairs:,} pairs; train.batch_size is {batch_size:,}, so "
            "the corpus is too small for one training batch. Use a larger corpus or lower train.batch_size."
        )
    raise ValueError(
        f"After the length filter the {counts.split} split has {counts.kept:,} of {counts.pairs:,} pairs "
        f"({counts.source_too_long:,} with a source over train.max_source_tokens, "
        f"{counts.target_too_long:,} with a target over train.max_target_tokens); it needs at least "
        f"{minimum:,}{' (train.batch_size)' if minimum > 1 else ''}. Raise train.max_source_tokens / "
        "train.max_target_tokens, use larger tokenizer vocabularies (fewer pieces per sentence), or lower "
        "train.batch_size."
    )


def filter_report(
    data: PreparedData,
    max_source_tokens: int,
    max_target_tokens: int,
    splits: tuple[str, ...] = ("train", "dev"),
) -> dict[str, LengthFilterCounts]:
    """The length filter's counts for the splits a run trains and validates on."""
    return {
        split: count_length_filter(
            split, data.corpus.split_files(split), data.vocab_dir, max_source_tokens, max_target_tokens
        )
        for split in splits
    }
