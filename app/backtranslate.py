"""`attend backtranslate`: target-language sentences → `synthetic_source TAB real_target` pairs, made by
a run trained in the reverse direction (Sennrich et al., 2016), to add to a forward run's training.

Each non-blank input line, normalised as the corpus cleaner does, becomes one output line: its
translation by the reverse run, a tab, the line itself. Blank lines are skipped (and counted): a
pair with an empty side would only be dropped by `attend prepare`. The translation comes from the
run's export, as another program would call it: drawn by its `sample` signature (`--sample`,
Edunov et al., 2018: sampled sources teach more than beam ones), or searched by `serving_default`
(the run's own `decode.beam_width`); a `--beam` width other than the export's rebuilds the run's
Translator with that width, as `attend evaluate --beam` does.

Resumable (the writer of `app.data.resumable`, shared with `attend distill`): the output is written
a batch at a time, flushed and fsynced, so a killed run leaves whole lines plus at most one partial
line. Started again, the partial line is cut away, the whole lines are checked against the input
(their targets must be its first lines) and that many input lines are skipped; nothing is written
twice. Batches are anchored to line numbers (batch b holds
the non-blank lines b·N … b·N + N − 1) and batch b is drawn with seed + b, so that a resumed run
writes the same lines as one that was never stopped, given the same --batch-size and --seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from app.data.resumable import Decoder, TranslationFileReport, write_translations
from app.data.resumable import complete_lines as complete_lines  # re-exported: part of this module's face
from app.run import RunDir

BacktranslationReport = TranslationFileReport


class ExportDecoder:
    """One signature of the export: `serving_default`, or `sample` with its seed advanced per batch."""

    def __init__(self, export_dir: Path, sampling: dict | None = None):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

        name = "sample" if sampling is not None else "serving_default"
        signatures = tf.saved_model.load(str(export_dir)).signatures
        if name not in signatures:
            raise ValueError(
                f"The SavedModel at {export_dir} has no {name} signature (exported by an older version); "
                "export it again with `attend export RUN_DIR`"
            )
        self._signature, self._sampling = signatures[name], sampling

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        import tensorflow as tf

        extra = {}
        if self._sampling is not None:
            extra = {**self._sampling, "seed": self._sampling["seed"] + batch_index}
        out = self._signature(text=tf.constant(texts, tf.string), **extra)
        return [text.decode("utf-8") for text in out["translation"].numpy()]


class RebuiltBeamDecoder:
    """The run's Translator rebuilt with another beam width (the export's search is fixed)."""

    def __init__(self, run_dir: Path, beam: int, data_dir: Path):
        from app.translator import load_translator

        self._translator = load_translator(RunDir(run_dir), beam_width=beam, data_dir=data_dir)

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        return self._translator.translate_texts(texts, batch_size=len(texts))


def export_beam_width(export_dir: Path) -> int:
    """The beam width of the export's `serving_default` (its run's `decode.beam_width`)."""
    card = json.loads((export_dir / "model_card.json").read_text(encoding="utf-8"))
    return int(card["config"]["decode"]["beam_width"])


def make_decoder(
    model: Path,
    export_dir: Path,
    sampling: dict | None = None,
    beam: int | None = None,
    data_dir: Path = Path("data"),
) -> Decoder:
    """`sampling` (the `sample` signature's seed, temperature and topk tensors) draws; `beam` K searches
    with width K: the export's serving_default where K is its width, else the run rebuilt."""
    if sampling is not None and beam is not None:
        raise ValueError("--sample and --beam cannot be combined; choose one")
    if beam is None or beam == export_beam_width(export_dir):
        return ExportDecoder(export_dir, sampling)
    if not RunDir(model).best_weights.is_file():
        width = export_beam_width(export_dir)
        raise ValueError(
            f"--beam {beam} differs from the export's decode.beam_width ({width}) and {model} is not a "
            f"trained run folder to rebuild the search from; give the run folder, or --beam {width}"
        )
    return RebuiltBeamDecoder(model, beam, data_dir)


def backtranslate(
    lines: Iterable[str],
    decoder: Decoder,
    out: Path,
    batch_size: int = 64,
    total: int | None = None,
    log: Callable[[str], object] = print,
) -> BacktranslationReport:
    """Writes (or completes) `out`: `translation TAB line` for each non-blank line of `lines`.
    `total`: the input's line count, for the progress bar's ETA."""
    return write_translations(
        lines,
        decoder,
        out,
        translation_first=True,
        batch_size=batch_size,
        total=total,
        description="Back-translating",
        log=log,
    )
