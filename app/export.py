"""`attend export`: a trained run's Translator, rebuilt from its best weights, saved as the
run's SavedModel (staged, checked in a fresh process, then renamed into place)."""

from __future__ import annotations

from pathlib import Path

from app.run import RunDir
from app.translator import load_translator, save_translator

# Any text serves the reload check (it compares the reloaded export with this process's translations).
CHECK_SENTENCES = ["Hola.", "", "Y lloró Jesús.", "In the beginning God created the heavens and the earth."]


def export_run(
    run_dir: Path, check_sentences: list[str] | None = None, log=print, force: bool = False
) -> Path:
    """Exports a trained run to its `export/` folder, holding the run's lock while it writes.

    Refuses a run without trained weights, and a run whose training failed (diverged) unless
    `force`: then the last good checkpoint is exported, and the model card says what failed."""
    run = RunDir(run_dir)
    with run.lock():
        failure = run.failure()
        if failure and not force:
            raise ValueError(
                f"{run}'s training failed ({failure['message']}); nothing is exported. "
                f"`attend export --force {run}` exports its last good checkpoint"
                + (f" (epoch {failure['last_good']['epoch']})" if failure.get("last_good") else "")
            )
        translator = load_translator(run)
        card = {**run.model_card(), **({"training_failure": failure} if failure else {})}
        return save_translator(translator, run.export_dir, card, check_sentences or CHECK_SENTENCES, log=log)
