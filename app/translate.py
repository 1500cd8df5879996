"""`attend translate`: sentences (arguments or stdin) through an exported SavedModel, exactly as
another program would load it, optionally with attention heatmaps, word alignments, the beam's n-best
list, drawn from the model (`--sample`) instead of searched, or starting with a given target text
(`--prefix`, the `complete` signature).

Input is read and answered in batches as it arrives, so a long file or a pipe streams. On a
terminal, a bar on stderr counts the sentences done (with an ETA when their number is known);
stdout holds the translations and nothing else."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.plots import translation_heatmap
from app.progress import progress
from app.run import RunDir


def find_export(model: Path) -> Path:
    """A run folder's export, or an export folder itself."""
    run_export = RunDir(model).export_dir
    export_dir = run_export if run_export.is_dir() else model
    if not (export_dir / "saved_model.pb").is_file():
        raise ValueError(f"No SavedModel at {export_dir}; train and export a run first")
    return export_dir


@dataclass(frozen=True)
class Sampling:
    """`--sample`'s settings: None takes the export's `decode.sampling_temperature` / `sampling_topk`
    and, for the seed, a random one. Batch k of the input is drawn with `seed + k`."""

    temperature: float | None = None
    topk: int | None = None
    seed: int | None = None

    def inputs(self, export_dir: Path) -> dict:
        """The `sample` signature's inputs besides `text`, for the first batch."""
        import tensorflow as tf

        decode = json.loads((export_dir / "model_card.json").read_text(encoding="utf-8"))["config"]["decode"]
        temperature = (
            decode.get("sampling_temperature", 1.0) if self.temperature is None else self.temperature
        )
        topk = decode.get("sampling_topk", 0) if self.topk is None else self.topk
        if temperature <= 0 or topk < 0:
            raise ValueError(
                f"--temperature must be greater than 0 and --topk at least 0, got {temperature}, {topk}"
            )
        seed = secrets.randbelow(2**62) if self.seed is None else self.seed
        return {
            "seed": tf.constant(seed, tf.int64),
            "temperature": tf.constant(temperature, tf.float32),
            "topk": tf.constant(topk, tf.int32),
        }


def read_lines(stream: BinaryIO, name: str = "stdin") -> Iterator[str]:
    """Lines of UTF-8 text without their line ends; a line that is not UTF-8 stops the input with
    its number (the lines before it have been translated and printed by then)."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n").removeprefix("\ufeff" if number == 1 else "")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{name} line {number}: not valid UTF-8 ({error.reason} at byte {error.start}); "
                "the lines before it were translated, nothing after it"
            ) from None


def translate_sentences(
    model: Path,
    sentences: Iterable[str],
    batch_size: int = 64,
    plot: Path | None = None,
    nbest: int | None = None,
    sample: Sampling | None = None,
    align: bool = False,
    prefix: str | None = None,
) -> Iterator[str]:
    """Translations in input order, a batch at a time; with `plot`, heatmaps OUT.png, OUT-2.png, …;
    with `nbest` K, the K best of the beam per sentence as lines `index ||| translation ||| score`
    (Moses's and OpenNMT's n-best format: the sentence's 0-based index, its log-probability); with
    `sample`, translations drawn by the `sample` signature; with `align`, lines `translation |||
    alignment` (Pharaoh format: `source word-target word` pairs, 0-based); with `prefix`, each
    translation completed from that start (`complete`: a prefix ending inside a word is token-healed).

    Progress goes to stderr (`app.progress`: on a terminal, or with ATTEND_PROGRESS=1), but not
    while a person types the sentences at the terminal: there each answer is its own progress."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    chosen = [
        flag
        for flag, value in (
            ("--plot", plot),
            ("--nbest", nbest),
            ("--sample", sample),
            ("--align", align),
            ("--prefix", prefix is not None),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} cannot be combined; choose one")
    if plot:
        plot.parent.mkdir(parents=True, exist_ok=True)
    export_dir = find_export(model)
    signatures = tf.saved_model.load(str(export_dir)).signatures
    if nbest:
        yield from _nbest_lines(signatures, export_dir, sentences, batch_size, nbest)
        return
    modes = {
        "translate_with_attention": plot,
        "sample": sample,
        "translate_with_alignment": align,
        "complete": prefix is not None,
    }
    name = next((name for name, wanted in modes.items() if wanted), "serving_default")
    if name not in signatures:
        raise ValueError(
            f"The SavedModel at {export_dir} has no {name} signature (exported by an older version); "
            "export it again with `attend export RUN_DIR`"
        )
    translate, extra = signatures[name], sample.inputs(export_dir) if sample else {}
    total = len(sentences) if isinstance(sentences, Sized) else None
    enabled = False if total is None and stdin_is_terminal() else None  # typed sentences: no bar
    start = 0
    with progress(total=total, description="Translating", leave=False, enabled=enabled) as bar:
        for batch in batches(sentences, batch_size):
            if prefix is not None:  # the one prefix, for every sentence
                extra["prefix"] = tf.constant([prefix] * len(batch), tf.string)
            out = translate(text=tf.constant(batch, tf.string), **extra)
            if sample:
                extra["seed"] += 1  # the next batch's draws
            bar.update(len(batch))
            bar.clear()  # the caller prints these translations; the bar is drawn again below them
            for row, translation in enumerate(out["translation"].numpy()):
                if plot:
                    save_attention_plot(out, row, batch[row], numbered(plot, start + row))
                text = translation.decode("utf-8")
                yield f"{text} ||| {out['alignment'][row].numpy().decode('utf-8')}" if align else text
            bar.refresh()
            start += len(batch)


def _nbest_lines(signatures, export_dir: Path, sentences: Iterable[str], batch_size: int, k: int):
    """`translate_sentences`'s n-best lines; asking for more than the beam holds stops at the first
    batch, before anything is printed."""
    import numpy as np
    import tensorflow as tf

    if "translate_nbest" not in signatures:
        raise ValueError(
            f"The SavedModel at {export_dir} has no translate_nbest signature (exported by an older "
            "version); export it again with `attend export RUN_DIR`"
        )
    translate = signatures["translate_nbest"]
    start = 0
    for batch in batches(sentences, batch_size):
        out = translate(text=tf.constant(batch, tf.string))
        texts, scores = out["translations"].numpy(), out["scores"].numpy()
        if k > texts.shape[1]:
            raise ValueError(
                f"--nbest {k} asks for more hypotheses than the export's beam holds ({texts.shape[1]}); "
                f"train or export the run with decode.beam_width={k} or more"
            )
        for row in range(len(batch)):
            for text, score in zip(texts[row][:k], scores[row][:k], strict=True):
                if score != -np.inf:
                    yield f"{start + row} ||| {text.decode('utf-8')} ||| {score:.4f}"
        start += len(batch)


def stdin_is_terminal() -> bool:
    """Whether a person types the input (which `attend translate` then answers line by line)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stdin
        return False


def batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of `size` items as they arrive; when reading fails, the items read before the failure
    still come out as a last batch before the error."""
    batch: list[str] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
    except ValueError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def numbered(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


def save_attention_plot(out: dict, row: int, sentence: str, path: Path) -> None:
    tokens = (out[key][row].numpy() for key in ("source_tokens", "target_tokens", "attention"))
    path.write_bytes(translation_heatmap(*tokens, title=sentence))
    print(f"(attention heatmap: {path})", file=sys.stderr)
