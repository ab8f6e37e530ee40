"""`clo-recipe doctor`: what this machine offers for training, and `--smoke`, a complete tiny run."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer

PACKAGES = ("torch", "transformers", "accelerate", "peft", "trl", "bitsandbytes", "flash-attn", "deepspeed", "vllm")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    smoke: bool = typer.Option(False, "--smoke", help="Run a complete tiny CLO run (every stage) on this device."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Folder for the smoke run (kept); default: a temp folder."),
    steps: int = typer.Option(12, "--steps", min=2, help="Training steps of the smoke run."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Smoke run: use this hardware profile (default auto)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Smoke run: override a field (repeatable)."),
) -> None:
    """Print the training environment (torch, CUDA, GPUs, bf16, kernels, auto profile)."""
    from rich.console import Console

    console = Console()
    console.print(environment_table())
    if smoke:
        run_smoke(console, keep, steps, profile=profile, overrides=overrides or [])


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment_rows() -> list[tuple[str, str]]:
    """(what, value) pairs; every probe degrades to a message instead of failing."""
    import platform

    from clo_recipes import __version__

    rows = [("clo-recipes", __version__), ("python", platform.python_version())]
    rows += [(name, _version(name) or "not installed") for name in PACKAGES]
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        rows.append(("CUDA", f"{torch.version.cuda} ({gpus} GPU)" if gpus
                     else f"not available (torch built for CUDA {torch.version.cuda})" if torch.version.cuda
                     else "not available (CPU build of torch)"))
        for index in range(gpus):
            props = torch.cuda.get_device_properties(index)
            rows.append((f"GPU {index}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                                         f"compute {props.major}.{props.minor}"))
        rows.append(("bf16", ("yes" if torch.cuda.is_bf16_supported() else "no (GPU older than Ampere)") if gpus
                     else "no CUDA GPU (CPU training runs in fp32)"))
        rows.append(("CPU threads", str(torch.get_num_threads())))
    except ImportError as error:
        rows.append(("torch", f"cannot import: {error}"))
    rows.append(("flash-attention 2", "usable" if gpus and _version("flash-attn")
                 else "not usable (needs flash-attn and a CUDA GPU); sdpa is used"))
    rows.append(("QLoRA (4-bit NF4)", _four_bit(gpus)))
    rows.append(("hardware: auto", _auto_profile()))
    return rows


def _four_bit(gpus: int) -> str:
    """The 4-bit backend found and where it runs (bitsandbytes runs NF4 on CPU and CUDA)."""
    from clo_recipes.hardware.detect import four_bit_backend

    backend = four_bit_backend()
    if backend is None:
        return "not usable: no 4-bit backend (pip install bitsandbytes==0.50.2)"
    return f"usable: {backend} on {'CUDA' if gpus else 'CPU'}"


def _auto_profile() -> str:
    try:
        from clo_recipes.hardware.detect import detect, pick_profile

        facts = detect()
        notes = f" ({'; '.join(facts.notes)})" if facts.notes else ""
        return pick_profile(facts) + notes
    except Exception as error:  # detection is best effort here; doctor must still print the rest
        return f"unknown ({type(error).__name__}: {error})"


def environment_table():
    from rich.table import Table

    table = Table(title="clo-recipe doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in environment_rows():
        table.add_row(name, value)
    return table


def run_smoke(console, keep: Path | None, steps: int, *, profile: str | None = None,
              overrides: list[str] | None = None) -> None:
    """Every stage of a tiny CLO run on this device; prints the loss at the first and last step.
    It runs through the same door as `clo-recipe run` (`--profile`, `--set`, memory check)."""
    from clo_recipes.errors import CloError
    from clo_recipes.files import read_jsonl
    from clo_recipes.runner.door import run_recipe
    from clo_recipes.training.smoke import write_smoke_project

    folder = keep.expanduser().resolve() if keep else Path(tempfile.mkdtemp(prefix="clo-smoke-"))
    started = time.time()
    try:
        console.print(f"[bold]smoke run[/] in {folder}")
        recipe = write_smoke_project(folder, steps=steps)
        result = run_recipe(recipe, overrides or [], profile=profile, console=console)
        if not result.ok:
            raise CloError("the smoke run did not finish every stage",
                           hint=", ".join(f"{o.id}: {o.status}" for o in result.outcomes))
        train = next(o for o in result.outcomes if o.id == "train-clo")
        rows = list(read_jsonl(train.directory / "metrics.jsonl"))
        first, last = rows[0], rows[-1]
        console.print(
            f"[green]smoke run passed[/] in {time.time() - started:.0f}s: CLO loss {first['loss']:.4f} at step "
            f"{first['step']} -> {last['loss']:.4f} at step {last['step']}; target-input reward margin "
            f"{first.get('target/reward_margin', 0):+.4f} -> {last.get('target/reward_margin', 0):+.4f}"
        )
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
