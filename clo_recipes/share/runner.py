"""What `clo-recipe run` does with a lock file and `--from-bundle`.

    plan = plan_for_run(file, overrides, profile=..., relock=..., from_bundle=..., dry_run=..., console=...)
    execute(plan, ...)

1. Load the file (a recipe or a lock), resolve and plan it.
2. For a lock: compare inputs, recipe values, package versions and numeric hardware with
   its pins; refuse on a blocking difference (`LockMismatch`, a one-screen diff) unless
   `relock`, which re-pins the lock file from what is here now.
3. With a bundle: copy its data stages into the run directory where fingerprints match.
4. For a lock that pins sampled ids: make sure the source stage has run (seeded or run
   now, it is the first stage anyway) and compare its ids.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.plan import Plan, make_plan
from ..recipe.resolve import resolve
from .bundle import DATA_KINDS, SeedOutcome, seed_from_bundle
from .lock import Difference, LockMismatch, blocking, lock_plan, verify_pins, verify_samples
from .lockfile import Lock, load_any


def _print(console, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


def _relock(plan: Plan, lock: Lock, differences: list[Difference], *, dry_run: bool, console) -> None:
    shown = "; ".join(d.render() for d in blocking(differences))
    if dry_run:
        _print(console, f"[yellow]would relock {lock.path.name}[/]: {shown}")
        return
    if plan.stage("source").status != "done":  # pin the sampled ids too
        from ..engine.run import execute

        execute(plan, only=["source"], console=console)
    lock_plan(plan, lock.path, locked_from=lock.meta.get("locked_from"))
    _print(console, f"[yellow]relocked {lock.path.name}[/]: {shown}")


def _settle(plan: Plan, lock: Lock, differences: list[Difference], *, relock: bool, dry_run: bool,
            console) -> bool:
    """Warn about non-blocking differences; refuse or relock on blocking ones. True if relocked."""
    for difference in differences:
        if not difference.blocking:
            _print(console, f"[yellow]note[/] {difference.render()}")
    if not blocking(differences):
        return False
    if not relock:
        raise LockMismatch(lock.path, differences)
    _relock(plan, lock, differences, dry_run=dry_run, console=console)
    return True


def describe_seeding(outcomes: list[SeedOutcome]) -> list[str]:
    return [f"{o.stage}: {o.action}" + (f" ({o.detail})" if o.detail else "") for o in outcomes]


def plan_for_run(file: str | Path, overrides: list[str] | tuple[str, ...] = (), *, profile: str | None = None,
                 relock: bool = False, from_bundle: str | Path | None = None, dry_run: bool = False,
                 console=None, seed_kinds: tuple[str, ...] = DATA_KINDS) -> Plan:
    """The plan `clo-recipe run` executes, with its lock honoured and bundle data seeded."""
    loaded, lock = load_any(file, overrides)
    plan = make_plan(resolve(loaded, profile_override=profile))
    relocked = False
    if lock is not None:
        relocked = _settle(plan, lock, verify_pins(plan.resolved, lock), relock=relock, dry_run=dry_run,
                           console=console)
    if from_bundle is not None:
        outcomes = seed_from_bundle(plan, Path(from_bundle), seed_kinds, dry_run=dry_run)
        for line in describe_seeding(outcomes):
            _print(console, f"[cyan]bundle[/] {line}")
    if lock is not None and not relocked and not dry_run and "ids_sha256" in (lock.pins.get("samples") or {}):
        if plan.stage("source").status != "done":
            from ..engine.run import execute

            execute(plan, only=["source"], console=console)
        _settle(plan, lock, verify_samples(plan, lock), relock=relock, dry_run=dry_run, console=console)
    return plan
