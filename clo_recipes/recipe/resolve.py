"""Resolve a loaded recipe: absolute paths, the hardware profile filled in, the batch check,
and for every value where it came from (recipe line, extends file, --set, profile, default).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import Location, Problem, RecipeError
from .languages import Language, get_language
from .load import FieldPath, LoadedRecipe, validate_raw
from .schema import Recipe
from .schema.hardware import RESOLVED_FIELDS

PROFILE_DIR = Path(__file__).parent / "profiles"

# Fields that name local files, resolved against the folder of the file that wrote them.
_PATH_FIELDS: tuple[FieldPath, ...] = (
    ("data", "source"),
    ("translation", "memory_file"),
    ("eval", "prompts"),
    ("eval", "judge", "model"),  # with eval.judge.backend vllm: a local folder (a hub id does not look like a path)
    ("model", "base"),
    ("model", "tokenizer"),
    ("model", "chat_template"),
    ("hardware", "accelerate_config"),
)


@dataclass
class Resolved:
    """A recipe with every default, profile value and path settled; what `plan` and `run` use."""

    recipe: Recipe
    source: LoadedRecipe
    profile: str
    provenance: dict[str, str]  # dotted field -> "file.yaml:12", "--set", "profile:cpu", "default", ...
    language: Language

    @property
    def recipe_dir(self) -> Path:
        return self.source.path.parent


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.exists():
        known = available_profiles() + ["auto"]
        close = difflib.get_close_matches(name, known, n=1)
        raise RecipeError(f"unknown hardware profile '{name}'",
                          hint=(f"did you mean '{close[0]}'? " if close else "") + f"profiles: {', '.join(known)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.pop("description", None)
    return data


def _machine() -> Any:
    from ..hardware.detect import detect

    return detect()


def _fit_to_machine(hardware: dict, machine: Any, from_profile: dict[FieldPath, str]) -> None:
    """`hardware: auto` means "what this machine can do": profile values it cannot honour
    (bf16 on a T4, flash-attn not installed, fewer GPUs) are lowered. Values the recipe wrote
    are kept; the machine checks at run time then say why they cannot work."""
    from ..hardware.detect import machine_adjustments

    for key, (value, why) in machine_adjustments(hardware, machine).items():
        if ("hardware", key) in from_profile:
            hardware[key] = value
            from_profile[("hardware", key)] = f"auto: {why}"


def _get(data: dict, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _set(data: dict, path: FieldPath, value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in {
        ".jsonl", ".json", ".parquet", ".csv", ".tmx", ".gguf", ".jinja", ".yaml", ".yml", ".tsv"}


# List fields whose items may be local files (`eval.mc_sets: [builtin, my_set.jsonl]`).
_PATH_LIST_FIELDS: tuple[FieldPath, ...] = (("eval", "mc_sets"),)


def _absolute(value: Any, path: FieldPath, loaded: LoadedRecipe) -> Any:
    if not isinstance(value, str) or "\n" in value or not _looks_like_path(value):
        return value
    where = loaded.locations.get(path) or loaded.locations.get(path[:-1])
    overridden = any(path[:n] in loaded.overrides for n in range(1, len(path) + 1))
    base = Path.cwd() if overridden or where is None else Path(where.file).parent
    return str((base / Path(value).expanduser()).resolve())


def _absolutize(raw: dict, loaded: LoadedRecipe) -> None:
    """Relative paths are relative to the file that wrote them (an `extends` parent's paths
    stay relative to the parent); `--set` paths to the working directory."""
    for path in _PATH_FIELDS:
        value = _get(raw, path)
        if value is not None:
            _set(raw, path, _absolute(value, path, loaded))
    for path in _PATH_LIST_FIELDS:
        items = _get(raw, path)
        if isinstance(items, list):
            _set(raw, path, [_absolute(item, path + (index,), loaded) for index, item in enumerate(items)])


def _flatten(data: Any, prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    if isinstance(data, dict) and data:
        out: dict[FieldPath, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, prefix + (key,)))
        return out
    return {prefix: data}


def resolve(loaded: LoadedRecipe, *, profile_override: str | None = None) -> Resolved:
    """Apply the hardware profile and machine-level checks to a statically valid recipe."""
    raw = copy.deepcopy(loaded.raw)
    hardware = raw.get("hardware") or {}
    if isinstance(hardware, str):
        hardware = {"profile": hardware}
    raw["hardware"] = hardware
    asked = profile_override or hardware.get("profile", "auto")
    machine = _machine() if asked == "auto" else None
    if machine is not None:
        from ..hardware.detect import pick_profile

        profile = pick_profile(machine)
    else:
        profile = asked
    hardware["profile"] = profile
    from_profile: dict[FieldPath, str] = {}
    try:
        profile_values = load_profile(profile)
    except RecipeError as exc:
        field = ("hardware",) if isinstance(loaded.raw.get("hardware"), str) else ("hardware", "profile")
        where = Location("--profile") if profile_override else loaded.location(field)
        where.field = "hardware.profile"
        raise RecipeError(problems=[Problem(p.message, where, p.hint) for p in exc.problems]) from None
    for key, value in profile_values.items():
        if hardware.get(key) is None:
            hardware[key] = value
            from_profile[("hardware", key)] = f"profile:{profile}" + (" (auto)" if asked == "auto" else "")
    if machine is not None:
        _fit_to_machine(hardware, machine, from_profile)
    adapter_kind = (raw.get("adapter") or {}).get("kind")
    if adapter_kind == "qlora" and hardware.get("quantization") in (None, "none"):
        hardware["quantization"] = "nf4"
        from_profile[("hardware", "quantization")] = "derived: adapter.kind=qlora"
    missing = [key for key in RESOLVED_FIELDS if hardware.get(key) is None]
    if missing:  # a profile file that lost a line: say so here rather than fall back somewhere later
        raise RecipeError(f"hardware profile '{profile}' leaves {', '.join('hardware.' + k for k in missing)} unset",
                          hint=f"add them to {PROFILE_DIR / (profile + '.yaml')} or set them in the recipe")
    _absolutize(raw, loaded)

    resolved_source = LoadedRecipe(loaded.path, raw, loaded.locations, loaded.overrides)
    recipe = validate_raw(resolved_source)
    _check_against_machine(recipe, loaded)

    provenance: dict[str, str] = {}
    for path in _flatten(recipe.model_dump(mode="json")):
        dotted = ".".join(map(str, path))
        if path in loaded.overrides or any(path[:n] in loaded.overrides for n in range(1, len(path))):
            provenance[dotted] = "--set"
        elif path in from_profile:
            provenance[dotted] = from_profile[path]
        elif path == ("hardware", "profile") and profile_override:
            provenance[dotted] = "--profile"
        elif path == ("hardware", "profile") and asked == "auto":
            provenance[dotted] = "auto (detected)"
        elif path == ("hardware", "profile") and isinstance(loaded.raw.get("hardware"), str):
            where = loaded.location(("hardware",))
            provenance[dotted] = f"{Path(where.file).name}:{where.line}"
        elif _get(loaded.raw, path) is not None or path in loaded.locations:
            where = loaded.location(path)
            provenance[dotted] = f"{Path(where.file).name}:{where.line}" if where.line else Path(where.file).name
        else:
            provenance[dotted] = "default"
    return Resolved(recipe, loaded, profile, provenance, get_language(recipe.language))


def problems_from(check: Callable[[], None], location: Location) -> list[Problem]:
    """Run one cross-check; its RecipeError, CloError or ValueError becomes problems placed at
    `location` (the field it is about) unless the check placed them itself."""
    from ..errors import CloError

    try:
        check()
    except RecipeError as exc:
        return list(exc.problems)
    except (CloError, ValueError) as exc:
        return [Problem(problem.message, problem.location or location, problem.hint)
                for problem in getattr(exc, "problems", None) or [Problem(str(exc))]]
    return []


def _check_against_machine(recipe: Recipe, loaded: LoadedRecipe) -> None:
    """The batch split against the hardware, the one check the recipe layer owns (hardware sits
    below it). Checks that need a stage's subsystem (translator language support, lm-eval task
    names) are named by the stage table and run by the engine at plan time
    (`engine/checks.py`), so this layer imports nothing above it."""
    from ..hardware.batch import check_batch

    field = ("train", "global_batch_size")
    problems = problems_from(lambda: check_batch(recipe), loaded.location(field))
    if problems:
        raise RecipeError(problems=problems)
