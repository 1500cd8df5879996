"""`attend export`: a trained run's Translator, rebuilt from its best weights, saved as the
run's SavedModel (staged, checked in a fresh process, then renamed into place)."""

from __future__ import annotations

from pathlib import Path

from app.run import RunDir
from app.translator import load_translator, save_translator

# Any text serves the reload check (it compares the reloaded export with this process's translations).
CHECK_SENTENCES = ["Hola.", "", "Y lloró Jesús.", "In the beginning God created the heavens and the earth."]


def export_run(run_dir: Path, check_sentences: list[str] | None = None, log=print) -> Path:
    """Exports a trained run to its `export/` folder; refuses a run without trained weights."""
    run = RunDir(run_dir)
    translator = load_translator(run)
    return save_translator(
        translator, run.export_dir, run.model_card(), check_sentences or CHECK_SENTENCES, log=log
    )
