"""Preparation: corpus splits plus fitted tokenizers, and what the length filter keeps of each split.

`prepare_data` is what `attend prepare` runs and what training, evaluation and the benchmark
start from; both halves are cached under `data/` and reused when unchanged. With `data.corpora`
the extra training corpora are prepared too (`app.data.corpora`), and the tokenizers are fitted on
the main corpus alone: its vocabulary is the in-domain one, and a run with extras shares the
tokenizers (and so the ids) of the run without them, which keeps their comparison to one change.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece

from app.config import SAMPLING_SETTINGS, Config
from app.data.corpora import SYNTHETIC_TAG, PreparedExtra, prepare_extra_corpora, tags_synthetic
from app.data.corpus import PreparedCorpus, prepare_corpus
from app.data.mixing import MixedCorpus
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
    extras: tuple[PreparedExtra, ...] = ()  # data.corpora, in order
    synthetic_tag_id: int | None = None  # the source piece of train.tag_synthetic, where it is on

    @property
    def tokenizers(self) -> tuple[SubwordTokenizer, SubwordTokenizer]:
        return self.source_tokenizer, self.target_tokenizer

    def tag_of(self, extra: PreparedExtra) -> int | None:
        """The id prepended to an extra corpus's sources (None: untagged)."""
        return self.synthetic_tag_id if extra.settings.synthetic else None

    def mixture(self, weight: float) -> list[MixedCorpus]:
        """The corpora for `app.data.mixing`: the main one (`weight`: data.weight), then the extras."""
        main = MixedCorpus(self.corpus.train_files, weight)
        return [main] + [
            MixedCorpus(extra.train_files, extra.settings.weight, self.tag_of(extra)) for extra in self.extras
        ]


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
    same `data_dir` (workers, or two commands) prepare it once: the others wait, then reuse.
    The extra corpora of `data.corpora` are prepared after the main corpus (whose dev and test
    sentences they must not contain), and listed in the log with their pairs and weights."""
    corpus = prepare_corpus(config, data_dir, log=log)
    extras = prepare_extra_corpora(config, corpus, data_dir, log)
    data = dataclasses.replace(prepare_tokenizers(config, corpus, log), extras=extras)
    if extras:
        for line in describe_corpora(corpora_report(config, data)):
            log(line)
    if config.train.tag_synthetic and not tags_synthetic(config):
        log("Note: train.tag_synthetic is on, but no corpus of data.corpora is synthetic: nothing is tagged")
    return data


def prepare_tokenizers(config: Config, corpus: PreparedCorpus, log: Log = print) -> PreparedData:
    """Fits (or reuses) the tokenizers of a prepared corpus and checks their round trip on dev."""
    settings = tokenizer_settings(config)
    types = [config.tokenizer.side_model_type(side) for side in ("source", "target")]
    kinds = types[0] if types[0] == types[1] == config.tokenizer.model_type else "-".join(types)
    vocab_name = f"vocab-{kinds}-{settings['source_vocab_size']}-{settings['target_vocab_size']}"
    vocab_name += "-joint" if config.tokenizer.joint else ""  # tokenizer.joint: one model for both sides
    tagged = tags_synthetic(config)
    vocab_dir = corpus.directory / (vocab_name + ("-tagged" if tagged else ""))
    paths = fit_tokenizers(corpus.train_files, vocab_dir, settings, log=log, seed=config.data.seed)
    tag_id = _piece_id(paths["source"], SYNTHETIC_TAG) if tagged else None
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
    return PreparedData(corpus, vocab_dir, source, target, failures, synthetic_tag_id=tag_id)


def _piece_id(model_path: Path, piece: str) -> int:
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    if not processor.is_control(processor.piece_to_id(piece)):
        raise ValueError(f"{model_path} has no control piece {piece}; delete {model_path.parent} to refit it")
    return processor.piece_to_id(piece)


def tokenizer_settings(config: Config) -> dict:
    """The TokenizerConfig as `fit_tokenizers` takes it; per-side model types only where set, so
    that the models of a config without them keep their fingerprint (and are reused); without the
    train pipeline's sampling settings, which do not change the models."""
    settings = {
        key: value
        for key, value in dataclasses.asdict(config.tokenizer).items()
        if key not in SAMPLING_SETTINGS
    }
    for side in ("source", "target"):
        if settings[f"{side}_model_type"] is None:
            del settings[f"{side}_model_type"]
    if not settings["joint"]:  # tokenizer.joint only where set: separate models keep their fingerprint
        del settings["joint"]
    if tags_synthetic(config):  # the source model's reserved tag, only where there is a corpus to tag
        settings["source_control_symbols"] = [SYNTHETIC_TAG]
    return settings


def corpora_report(config: Config, data: PreparedData, filtered: dict | None = None) -> list[dict]:
    """Each training corpus (the main one first) with its train pairs, weight and share of the draws;
    `filtered` (`filter_report`'s counts) adds the pairs the length filter keeps."""
    total = config.data.weight + sum(extra.settings.weight for extra in data.extras)
    rows = [
        {
            "corpus": config.corpus_name,
            "source": data.corpus.report.get("source"),
            "pairs": data.corpus.report["splits"]["train"],
            "weight": config.data.weight,
            "synthetic": False,
            "tagged": False,
            **({"kept_by_length_filter": filtered["train"].kept} if filtered else {}),
        }
    ]
    for extra in data.extras:
        kept = filtered[extra.label].kept if filtered and extra.label in filtered else None
        rows.append(
            {
                "corpus": extra.label,
                "source": extra.report["source"],
                "pairs": extra.report["pairs"],
                "weight": extra.settings.weight,
                "synthetic": extra.settings.synthetic,
                "tagged": data.tag_of(extra) is not None,
                **({"kept_by_length_filter": kept} if kept is not None else {}),
            }
        )
    return [{**row, "share": row["weight"] / total} for row in rows]


def describe_corpora(rows: list[dict]) -> list[str]:
    """The log's lines for `corpora_report`: one per corpus, its pairs, weight and share of the draws."""
    lines = ["Training corpora (each pair drawn from a corpus in proportion to its weight):"]
    for row in rows:
        kinds = [kind for kind in ("synthetic", "tagged") if row[kind]]
        lines.append(
            f"  {row['corpus']}: {row['pairs']:,} pairs, weight {row['weight']:g} ({row['share']:.1%} of the "
            f"draws){' [' + ', '.join(kinds) + ']' if kinds else ''}, from {row['source']}"
        )
    return lines


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
    """The length filter's counts for the splits a run trains and validates on, then for each extra
    corpus (by its label; a tagged one's sources count the tag, as the pipeline does)."""
    counts = {
        split: count_length_filter(
            split, data.corpus.split_files(split), data.vocab_dir, max_source_tokens, max_target_tokens
        )
        for split in splits
    }
    for extra in data.extras if "train" in splits else ():
        tagged = data.tag_of(extra) is not None
        counts[extra.label] = count_length_filter(
            extra.label, extra.train_files, data.vocab_dir, max_source_tokens - tagged, max_target_tokens
        )
    return counts
