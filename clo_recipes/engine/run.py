"""Execute a plan stage by stage: skip what is done, resume what was interrupted, record
a manifest for every finished stage, and never leave a half stage that looks finished."""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CloError
from ..files import disk_error, stage_failure, write_text_atomic
from ..recipe.resolve import Resolved
from ..secrets import redact, redact_files
from .context import StageContext
from .manifest import package_versions, stage_manifest
from .plan import Plan, PlannedStage

# Set for launched ranks: their parent holds the run directory's claim.
CLAIM_HELD = "CLO_RECIPES_CLAIM_HELD"


@dataclass
class StageOutcome:
    id: str
    status: str  # ran | cached | skipped | failed | interrupted
    seconds: float = 0.0
    directory: Path | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[StageOutcome]

    @property
    def ok(self) -> bool:
        return all(o.status in ("ran", "cached", "skipped") for o in self.outcomes)


def resolved_document(resolved: Resolved) -> dict[str, Any]:
    """The resolved recipe as written to `recipe.resolved.yaml`: values, provenance, versions.
    Secrets never reach it: the recipe holds only env-var names, and `redact` masks any
    secret value pasted into a field."""
    return redact({
        "recipe": resolved.recipe.model_dump(mode="json"),
        "provenance": resolved.provenance,
        "hardware_profile": resolved.profile,
        "source_file": str(resolved.source.path),
        "versions": package_versions(),
    })


def write_resolved(plan: Plan) -> Path:
    import yaml

    path = plan.run_dir / "recipe.resolved.yaml"
    text = yaml.safe_dump(resolved_document(plan.resolved), sort_keys=False, allow_unicode=True)
    write_text_atomic(path, text)
    return path


def select_stages(plan: Plan, only: list[str] | None, from_stage: str | None) -> tuple[set[str], set[str]]:
    """(stages to consider, stages to redo even if done). Names match a stage id or a kind."""
    ids = [s.id for s in plan.stages]

    def matching(name: str) -> list[str]:
        found = [s.id for s in plan.stages if name in (s.id, s.kind)]
        if not found:
            raise CloError(f"no stage named '{name}' in this plan", hint=f"stages: {', '.join(ids)}")
        return found

    if only:
        chosen = {sid for name in only for sid in matching(name)}
        return chosen, set()
    if from_stage:
        first = ids.index(matching(from_stage)[0])
        chosen = set(ids[first:])
        return chosen, chosen
    return set(ids), set()


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _run_stage(plan: Plan, stage: PlannedStage, options: dict[str, Any], console) -> StageOutcome:
    store = plan.store
    inputs = {dep: plan.stage_dir(plan.stage(dep)) for dep in stage.deps}
    missing = [dep for dep, path in inputs.items() if not (path / "manifest.json").exists()]
    if missing:
        raise CloError(f"stage {stage.id} needs {', '.join(missing)} to be finished first",
                       hint=f"run without --only/--from, or with --only {' '.join(missing)}")
    work_dir, resumed = store.begin(stage.id, stage.fingerprint)
    context = StageContext(stage_id=stage.id, kind=stage.kind, arm=stage.arm, work_dir=work_dir,
                           recipe=stage.view, inputs=inputs, run_dir=plan.run_dir,
                           cache_dir=plan.cache_dir, options=dict(options))
    if console is not None:
        verb = "resuming" if resumed else "running"
        console.print(f"[bold cyan]▶ {stage.id}[/] {verb}: {stage.spec.summary}  [dim]{work_dir.name}[/]")
    module = importlib.import_module(stage.spec.module)
    started = time.time()
    outputs = module.run(context) or {}
    seconds = time.time() - started
    if _rank() != 0:  # in a multi-process launch only rank 0 finishes the stage folder
        return StageOutcome(stage.id, "ran", seconds, work_dir, outputs, resumed)
    masked = redact_files(work_dir)
    manifest = stage_manifest(plan, stage, outputs=outputs, started=started, seconds=seconds, resumed=resumed,
                              secrets_masked_in=masked)
    final = store.finish(stage.id, stage.fingerprint, manifest)
    stage.status = "done"
    return StageOutcome(stage.id, "ran", seconds, final, outputs, resumed)


def _launch_stage(plan: Plan, stage: PlannedStage, launcher, console) -> StageOutcome:
    """Run one stage in a multi-process launch (`accelerate launch`); its rank 0 finishes the
    stage folder, this process only checks that it did."""
    if console is not None:
        console.print(f"[bold cyan]▶ {stage.id}[/] launching on {launcher.world_size} processes")
    started = time.time()
    launcher.run_stage(stage)
    if not plan.store.is_done(stage.id, stage.fingerprint):
        raise CloError(f"the launched {stage.id} exited without finishing its stage folder",
                       hint="see the launcher's output above; re-run to resume from its last checkpoint")
    stage.status = "done"
    directory = plan.stage_dir(stage)
    outputs = json.loads((directory / "manifest.json").read_text()).get("outputs", {})
    return StageOutcome(stage.id, "ran", time.time() - started, directory, outputs)


def execute(plan: Plan, *, only: list[str] | None = None, from_stage: str | None = None,
            force: bool = False, console=None, options: dict[str, Any] | None = None,
            launcher=None, after_stage: Callable[[PlannedStage], None] | None = None) -> RunResult:
    """Run the selected stages in order. Interrupted or failed stages keep their work folder
    (`*.partial`), so the next call resumes them. `launcher` (runner.launch) takes over the
    stages it wants (reference and training on several processes); data stages always run
    here, once, on machine 0; other machines only `join` the launched stages.
    `after_stage(stage)` hears of each stage this call ran (rank 0), before the next starts:
    it may stop the run by raising (a lock's sampled ids checked once the source has run)."""
    if launcher is not None and not launcher.is_main_machine:
        return join(plan, launcher, only=only, from_stage=from_stage, console=console)
    chosen, redo = select_stages(plan, only, from_stage)
    if force:
        redo = set(chosen)
    outcomes: list[StageOutcome] = []
    claims = _rank() == 0 and not os.environ.get(CLAIM_HELD)
    try:
        if claims:
            plan.store.claim()
    except OSError as error:  # a read-only or full run folder: one screen, not a traceback
        raise disk_error(error, plan.run_dir) from None
    try:
        if _rank() == 0:
            write_resolved(plan)
        for stage in plan.stages:
            if stage.id not in chosen:
                outcomes.append(StageOutcome(stage.id, "skipped"))
                continue
            if stage.status == "done" and stage.id not in redo:
                directory = plan.stage_dir(stage)
                outputs = json.loads((directory / "manifest.json").read_text()).get("outputs", {})
                outcomes.append(StageOutcome(stage.id, "cached", 0.0, directory, outputs))
                if console is not None:
                    console.print(f"[green]✓ {stage.id}[/] already done [dim]{directory.name}[/]")
                continue
            try:
                if launcher is not None and launcher.wants(stage):
                    outcome = _launch_stage(plan, stage, launcher, console)
                else:
                    outcome = _run_stage(plan, stage, options or {}, console)
            except KeyboardInterrupt:
                outcomes.append(StageOutcome(stage.id, "interrupted"))
                raise
            except Exception as error:
                partial = plan.store.partial_dir(stage.id, stage.fingerprint)
                disk = stage_failure(error, partial if partial.is_dir() else plan.run_dir)
                if disk is None:
                    raise
                raise disk from None  # full or read-only disk: finished stages stay, this one resumes
            outcomes.append(outcome)
            if console is not None:
                console.print(f"[green]✓ {stage.id}[/] done in {outcome.seconds:.1f}s")
            if after_stage is not None and _rank() == 0:
                after_stage(stage)
    finally:
        if claims:
            plan.store.release()
    return RunResult(plan.run_dir, outcomes)


def join(plan: Plan, launcher, *, only: list[str] | None = None, from_stage: str | None = None,
         console=None, poll_seconds: float = 2.0) -> RunResult:
    """A machine other than 0 in a multi-node run: it runs no data stage, takes no lock and
    writes nothing of its own; for each launched stage (reference, training) it waits until
    machine 0 has finished that stage's inputs on the shared run folder, then starts its
    share of the processes, which meet machine 0's in the launcher's rendezvous."""
    chosen, _ = select_stages(plan, only, from_stage)
    outcomes: list[StageOutcome] = []
    for stage in plan.stages:
        if stage.id not in chosen or not launcher.wants(stage):
            outcomes.append(StageOutcome(stage.id, "skipped"))
            continue
        waiting = [plan.stage(dep) for dep in stage.deps]
        told = False
        while not all(plan.store.is_done(dep.id, dep.fingerprint) for dep in waiting):
            if console is not None and not told:
                names = ", ".join(dep.id for dep in waiting if not plan.store.is_done(dep.id, dep.fingerprint))
                console.print(f"[dim]machine {launcher.machine_rank}: waiting for machine 0 to finish {names}[/]")
                told = True
            time.sleep(poll_seconds)
        if plan.store.is_done(stage.id, stage.fingerprint):
            outcomes.append(StageOutcome(stage.id, "cached", 0.0, plan.stage_dir(stage)))
            continue
        if console is not None:
            console.print(f"[bold cyan]▶ {stage.id}[/] joining on machine {launcher.machine_rank} "
                          f"({launcher.processes} of {launcher.world_size} processes)")
        started = time.time()
        launcher.run_stage(stage)
        outcomes.append(StageOutcome(stage.id, "ran", time.time() - started))
    return RunResult(plan.run_dir, outcomes)
