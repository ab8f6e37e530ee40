"""The one door of every run: what the user named is loaded (a recipe file, a shipped
recipe's name, a lock file, a bundle), resolved, planned, held to its lock, seeded from a
bundle and run, its model passes launched on several processes where the hardware asks.
Every command, the sweep, `doctor --smoke` and the tests' helpers come through here, so
`--profile`, `--set`, the lock check and the memory check mean the same everywhere.

    prepared = prepare("thai_llama", ["train.epochs=1"], profile="cpu")   # runs no stage
    result = run(prepared, console=console)

Planning runs no stage. A lock that pins the sampled ids is held to them as soon as the
source stage is done: at once when it is (seeded, or an earlier run), else right after it
runs, before translation starts. `--relock` re-pins the lock at once, and again after the
source stage has run, so the sampled ids get pinned too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.plan import Plan, PlannedStage, make_plan
from ..engine.run import CLAIM_HELD, RunResult, execute
from ..engine.stages import DATA_KINDS
from ..engine.store import RunStore
from ..errors import CloError
from ..recipe.load import LoadedRecipe
from ..recipe.resolve import resolve
from ..share.bundle import ExportResult, SeedOutcome, export_bundle, seed_from_bundle
from ..share.lock import Difference, LockMismatch, blocking, lock_plan, verify_pins, verify_samples
from ..share.lockfile import LOCK_SUFFIX, lock_path_for
from .launch import Launcher, die_with_launcher
from .target import Opened, open_target


def _print(console, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


def plan_recipe(loaded: LoadedRecipe, profile: str | None = None) -> Plan:
    """Resolve and plan: the one place a loaded recipe becomes a plan. Runs no stage."""
    return make_plan(resolve(loaded, profile_override=profile))


@dataclass
class Prepared:
    """A planned run, held to its lock and seeded, ready for `run`."""

    plan: Plan
    opened: Opened
    overrides: list[str]
    profile: str | None = None
    differences: list[Difference] = field(default_factory=list)  # against the lock
    relock: bool = False  # asked for: re-pin the lock where it differs
    relocked: bool = False  # the lock was re-pinned here (again once the source stage has run)
    varied: tuple[str, ...] = ()  # fields a sweep sets on purpose: not held to the lock

    @property
    def checks_samples(self) -> bool:
        """The lock pins sampled ids that this run must reproduce."""
        lock = self.opened.lock
        return (lock is not None and not self.relocked and "ids_sha256" in (lock.pins.get("samples") or {})
                and not any(_under(key, "data") for key in self.varied))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def describe_seeding(outcomes: list[SeedOutcome]) -> list[str]:
    return [f"{o.stage}: {o.action}" + (f" ({o.detail})" if o.detail else "") for o in outcomes]


def prepare(target: str | Path, overrides: list[str] | tuple[str, ...] = (), *, profile: str | None = None,
            relock: bool = False, from_bundle: str | Path | None = None, dry_run: bool = False, console=None,
            varied: tuple[str, ...] | list[str] = (), strict: bool = True) -> Prepared:
    """Load, resolve and plan `target`; hold it to its lock (refuse on a blocking difference
    unless `relock`); seed its data stages from a bundle (`from_bundle`, or the bundle it is).
    `strict=False` (for `plan` and `lock --check`) records lock differences instead of refusing."""
    overrides = list(overrides)
    opened = open_target(target, overrides)
    plan = plan_recipe(opened.loaded, profile)
    prepared = Prepared(plan, opened, overrides, profile, relock=relock, varied=tuple(varied))
    if opened.lock is not None:
        prepared.differences = [d for d in verify_pins(plan.resolved, opened.lock)
                                if not any(_under(d.field, key) for key in prepared.varied)]
        _settle(prepared, prepared.differences, dry_run=dry_run, console=console, strict=strict)
    bundle = from_bundle or opened.bundle
    if bundle is not None:
        for line in describe_seeding(seed_from_bundle(plan, Path(bundle), DATA_KINDS, dry_run=dry_run)):
            _print(console, f"[cyan]bundle[/] {line}")
    if prepared.checks_samples:  # a finished source stage (seeded, or an earlier run) is checked now
        _check_samples(prepared, dry_run=dry_run, console=console, strict=strict)
    return prepared


def _settle(prepared: Prepared, differences: list[Difference], *, dry_run: bool, console, strict: bool) -> None:
    """Note non-blocking differences; refuse, relock or (not strict) just record blocking ones."""
    for difference in differences:
        if not difference.blocking:
            _print(console, f"[yellow]note[/] {difference.render()}")
    shown = blocking(differences)
    if not shown:
        return
    lock = prepared.opened.lock
    if not prepared.relock:
        if strict:
            raise LockMismatch(lock.path, differences)
        return
    why = "; ".join(d.render() for d in shown)
    if dry_run:
        _print(console, f"[yellow]would relock {lock.path.name}[/]: {why}")
        prepared.relocked = True
        return
    _relock(prepared)
    _print(console, f"[yellow]relocked {lock.path.name}[/]: {why}")


def _relock(prepared: Prepared) -> None:
    lock = prepared.opened.lock
    lock_plan(prepared.plan, lock.path, locked_from=lock.meta.get("locked_from"))
    prepared.relocked = True


def _check_samples(prepared: Prepared, *, dry_run: bool = False, console=None, strict: bool = True) -> None:
    """The finished source stage's sampled ids against the lock's (nothing while it has not run)."""
    differences = verify_samples(prepared.plan, prepared.opened.lock)
    prepared.differences += differences
    _settle(prepared, differences, dry_run=dry_run, console=console, strict=strict)


def launcher_for(prepared: Prepared) -> Launcher | None:
    """The multi-process launcher when the resolved hardware asks for more than one process."""
    return Launcher.for_plan(prepared.plan, prepared.opened.path, prepared.overrides, profile=prepared.profile)


def memory_estimate(plan: Plan):
    """The hardware subsystem's fit check, or None when it cannot tell (config unknown offline)."""
    from ..hardware.memory import check_fit

    return check_fit(plan.resolved.recipe)


def check_memory(plan: Plan, estimate=None) -> None:
    """Refuse a run that does not fit in memory (the caller skips this for `--force`)."""
    estimate = estimate if estimate is not None else memory_estimate(plan)
    if estimate is not None and not estimate.fits:
        raise CloError(f"this run needs about {estimate.total_gb:.1f} GiB per GPU and does not fit "
                       f"(largest: {estimate.largest})",
                       hint=(estimate.suggestion or "") + " — or pass --force to try anyway")


def _is_launched_rank() -> bool:
    return bool(os.environ.get(CLAIM_HELD)) and "LOCAL_RANK" in os.environ


def run(prepared: Prepared, *, only: list[str] | None = None, from_stage: str | None = None, force: bool = False,
        console=None, launch: bool = True, launcher: Launcher | None = None,
        options: dict[str, Any] | None = None) -> RunResult:
    """Run the prepared plan: the memory check (not with `force`), the launcher for the stages
    the stage table marks `launched` (`launch=False`: already inside one), and the lock's
    sampled ids held once the source stage has run."""
    if _is_launched_rank():
        die_with_launcher()  # no orphan training on after a kill -9 of the run
    if not force:
        check_memory(prepared.plan)
    if launch and launcher is None:
        launcher = launcher_for(prepared)

    def after(stage: PlannedStage) -> None:
        if stage.kind != "source" or prepared.opened.lock is None:
            return
        if prepared.relocked:  # re-pin, now with the sampled ids
            _relock(prepared)
            _print(console, f"[yellow]relocked {prepared.opened.lock.path.name}[/] with the sampled ids")
        elif prepared.checks_samples:
            _check_samples(prepared, console=console)

    return execute(prepared.plan, only=only, from_stage=from_stage, force=force, console=console,
                   options=options, launcher=launcher if launch else None, after_stage=after)


def run_recipe(target: str | Path, overrides: list[str] | tuple[str, ...] = (), *, profile: str | None = None,
               console=None, only: list[str] | None = None, from_stage: str | None = None,
               force: bool = False) -> RunResult:
    """Prepare and run `target` (what `clo-recipe run TARGET` does)."""
    prepared = prepare(target, overrides, profile=profile, console=console)
    return run(prepared, only=only, from_stage=from_stage, force=force, console=console)


# --------------------------------------------------------------------------- locks
def lock_recipe(target: str | Path, overrides: list[str] | tuple[str, ...] = (), *, output: Path | None = None,
                profile: str | None = None, run_source: bool = False,
                console=None) -> tuple[Path, dict[str, Any]]:
    """`clo-recipe lock`: pin and write `<recipe>.lock.yaml` (a lock given as the target is
    re-pinned in place; a shipped recipe's or a bundle's lock goes to the working directory).
    `run_source` runs the source stage first, so the sampled ids get pinned too."""
    opened = open_target(target, overrides)
    plan = plan_recipe(opened.loaded, profile)
    if run_source and plan.stage("source").status != "done":
        execute(plan, only=["source"], console=console)
    if output is None:
        local = opened.bundle is None and Path(str(target)).expanduser().exists()
        output = lock_path_for(Path(str(target))) if local else Path(opened.path.name.rsplit(".", 1)[0]
                                                                        .removesuffix(".lock") + LOCK_SUFFIX)
    previous = opened.lock.meta.get("locked_from") if opened.lock is not None else None
    return output, lock_plan(plan, output, locked_from=previous)


def check_lock(target: str | Path, overrides: list[str] | tuple[str, ...] = (),
               profile: str | None = None) -> tuple[Path, list[Difference]]:
    """`clo-recipe lock --check`: (the lock, everything that differs from it here)."""
    opened = open_target(target, overrides)
    if opened.lock is None:
        raise CloError(f"{target} is not a lock file", hint=f"create one with `clo-recipe lock {target}`")
    prepared = prepare(target, overrides, profile=profile, dry_run=True, strict=False)
    return opened.lock.path, prepared.differences


# --------------------------------------------------------------------------- finished runs
def open_run(run_dir: str | Path) -> tuple[Plan, dict[str, Any]]:
    """The plan of a run directory's recipe (its `recipe.resolved.yaml`) with statuses read
    from that directory, wherever it lives now; and the resolved document."""
    run_dir = Path(run_dir).expanduser().resolve()
    resolved_file = run_dir / "recipe.resolved.yaml"
    if not resolved_file.is_file():
        raise CloError(f"{run_dir} is not a run directory (no recipe.resolved.yaml)",
                       hint="pass the folder `clo-recipe run` wrote: <output_dir>/<name>/")
    document = yaml.safe_load(resolved_file.read_text(encoding="utf-8")) or {}
    source = Path(document.get("source_file") or resolved_file)
    plan = plan_recipe(LoadedRecipe(path=source, raw=document["recipe"], locations={}))
    plan.resolved.provenance = document.get("provenance") or plan.resolved.provenance
    plan.store = RunStore(run_dir)
    for stage in plan.stages:
        stage.status = "done" if plan.store.is_done(stage.id, stage.fingerprint) else "pending"
    return plan, document


def export_run(run_dir: str | Path, out: Path, *, license: str | None = None, force: bool = False) -> ExportResult:
    """`clo-recipe export`: the bundle of a finished run."""
    plan, document = open_run(run_dir)
    return export_bundle(plan, document, out, license=license, force=force)
