"""Read finished runs from disk: their evaluations, judge verdicts, report and recipe.

Used by `compare`, `sweep` and a judge whose baseline is another run. Only finished stage
folders count (they have a `manifest.json` and no `.partial` suffix); when a run directory
holds several finished folders of one stage (older fingerprints), the newest wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clo_recipes.errors import CloError

MANIFEST = "manifest.json"


def finished_stage_dirs(run_dir: Path, kind: str) -> list[Path]:
    """Finished folders of one stage kind, newest first."""
    found = [
        path for path in run_dir.glob(f"{kind}*")
        if path.is_dir() and not path.name.endswith(".partial") and (path / MANIFEST).is_file()
    ]
    return sorted(found, key=lambda path: (path / MANIFEST).stat().st_mtime, reverse=True)


def evaluation_dirs(run_dir: Path) -> dict[str, Path]:
    """Model label ("base", "clo", "sft", ...) -> its newest finished evaluate folder."""
    found: dict[str, Path] = {}
    for path in finished_stage_dirs(run_dir, "evaluate-"):
        metrics = path / "metrics.json"
        if metrics.is_file():
            found.setdefault(json.loads(metrics.read_text(encoding="utf-8"))["model"], path)
    return found


@dataclass
class FinishedRun:
    run_dir: Path
    name: str
    language: str | None
    evaluations: dict[str, Path]
    report: dict | None
    recipe: dict = field(default_factory=dict)  # recipe.resolved.yaml's `recipe`, if present

    @property
    def trained_models(self) -> list[str]:
        return [label for label in self.evaluations if label != "base"]

    @property
    def method(self) -> str | None:
        """The run's own method (not its baselines)."""
        if self.report:
            return self.report.get("method")
        return (self.recipe.get("method") or {}).get("name")

    def main_model(self) -> str:
        """The label of the run's trained model: its method, or its only trained model."""
        if self.method in self.evaluations:
            return self.method
        if len(self.trained_models) == 1:
            return self.trained_models[0]
        raise CloError(f"{self.run_dir}: cannot tell which trained model to use from {self.trained_models}")

    def answers(self, label: str) -> list[dict]:
        from clo_recipes.files import read_jsonl

        path = self.evaluations[label] / "answers.jsonl"
        return list(read_jsonl(path)) if path.is_file() else []


def load_run(run_dir: Path, *, require_trained: bool = True) -> FinishedRun:
    """A finished run; a folder without a trained, evaluated model is a `CloError`."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise CloError(f"run directory not found: {run_dir}")
    evaluations = evaluation_dirs(run_dir)
    reports = finished_stage_dirs(run_dir, "report")
    report = None
    if reports and (reports[0] / "report.json").is_file():
        report = json.loads((reports[0] / "report.json").read_text(encoding="utf-8"))
    recipe: dict = {}
    resolved = run_dir / "recipe.resolved.yaml"
    if resolved.is_file():
        import yaml

        recipe = (yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}).get("recipe", {})
    run = FinishedRun(
        run_dir=run_dir,
        name=(report or {}).get("name") or recipe.get("name") or run_dir.name,
        language=(report or {}).get("language") or recipe.get("language"),
        evaluations=evaluations,
        report=report,
        recipe=recipe,
    )
    if require_trained and not run.trained_models:
        trained = finished_stage_dirs(run_dir, "train-")
        detail = ("it has a trained model but no finished evaluation of it" if trained
                  else "it holds no finished train stage")
        raise CloError(
            f"{run_dir} is not a run with a trained model: {detail}",
            hint="pass the folder `clo-recipe run` wrote (runs/<name>/) after its train and evaluate stages finished",
        )
    return run
