"""`attend distill`: sequence-level knowledge distillation (Kim & Rush, 2016). A trained teacher's
beam search translates the source side of its own train split, and a smaller student (the `fast`
preset by default) trains on those translations instead of the references: the teacher's outputs
are easier to fit than human translations, so a small model learns more of what a large one knows.

Two steps. The teacher's outputs, `source TAB translation` a train pair a line, in
`TEACHER_RUN/distill/train-beamK.tsv`: written resumably by the writer `attend backtranslate` uses
(`app.data.resumable`: batched, fsynced per batch, a killed run continued, nothing written twice, a
file of another input refused), and reused whole by a second call; the decoder (the export's
`serving_default`, or the run rebuilt with another width, `app.backtranslate.make_decoder`) is
handed in by the command line and built only if a line is left to write. Then the student's config:
the preset, the teacher's data section (the same corpus and splits, so that dev and test score
against the real references and the student's tokenizers learn the same text), `data.weight` =
the references' weight (0 by default: the main corpus gives dev, test and the tokenizers' text
only) and one extra corpus, the teacher's file; the command line trains and exports it as `attend
train` does. The student's saved config names the teacher: the file's path is the teacher's run
folder and the beam width, `data.weight` the references' share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.config import Config, apply_overrides, from_dict, load_config
from app.data.corpus import PreparedCorpus, prepare_corpus
from app.data.resumable import Decoder, TranslationFileReport, write_translations
from app.data.tokenizer import read_lines
from app.run import RunDir

Log = Callable[[str], object]


@dataclass(frozen=True)
class Distillation:
    """A teacher run, its config, and the beam width its translations are searched with."""

    teacher: RunDir
    config: Config
    beam: int

    @classmethod
    def of(cls, teacher: Path, beam: int | None = None) -> Distillation:
        """`beam` None: the teacher's own `decode.beam_width` (its export's serving_default)."""
        run = RunDir(teacher)
        config = run.config()
        if not (run.export_dir / "saved_model.pb").is_file():
            raise ValueError(
                f"{teacher} has no export ({run.export_dir}); the teacher's SavedModel translates its "
                f"train split: export it first with `attend export {teacher}`"
            )
        return cls(run, config, beam or config.decode.beam_width)

    @property
    def path(self) -> Path:
        """The teacher's translations of its train split: the student's training corpus."""
        return self.teacher.distilled_train_path(self.beam)

    def train_split(self, data_dir: Path, log: Log = print) -> PreparedCorpus:
        """The teacher's prepared corpus (reused, or prepared again from its data section)."""
        return prepare_corpus(self.config, data_dir, log=log)

    def student_config(self, preset: str = "fast", references: float = 0.0, overrides=()) -> Config:
        """The preset, then the teacher's data section with `data.weight=references` and the teacher's
        file as the one extra corpus (the teacher's own extras are not the student's), then
        `overrides` (`section.key=value`, as `attend train` takes them)."""
        values = load_config(preset).to_dict()
        corpus = {"corpus": "tsv", "tsv_path": str(self.path.resolve()), "weight": 1.0}
        values["data"] = {**self.config.to_dict()["data"], "weight": references, "corpora": [corpus]}
        return from_dict(apply_overrides(values, overrides))


def write_teacher_outputs(
    distillation: Distillation,
    make_decoder: Callable[[], Decoder],
    data_dir: Path,
    batch_size: int = 64,
    log: Log = print,
) -> TranslationFileReport:
    """Writes (or completes, or checks and reuses) `distillation.path`: `source TAB translation` for
    every pair of the teacher's train split, in order. `make_decoder` is called once, at the first
    batch that has a line left to write."""
    corpus = distillation.train_split(data_dir, log)
    sources = (line.split("\t", 1)[0] for line in read_lines(corpus.train_files))
    return write_translations(
        sources,
        _Lazy(make_decoder),
        distillation.path,
        translation_first=False,
        batch_size=batch_size,
        total=corpus.report["splits"]["train"],
        description=f"Distilling (beam {distillation.beam})",
        log=log,
    )


class _Lazy:
    """A decoder made at its first call: a finished file is checked without loading the teacher."""

    def __init__(self, make: Callable[[], Decoder]):
        self._make, self._decoder = make, None

    def __call__(self, texts: list[str], batch_index: int) -> list[str]:
        if self._decoder is None:
            self._decoder = self._make()
        return self._decoder(texts, batch_index)
