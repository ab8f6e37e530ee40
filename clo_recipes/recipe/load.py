"""Read a recipe: safe YAML with a line map, `extends:` composition, `--set` overrides and
schema validation that reports every problem at once with file, line, column and field.

Nothing here imports torch: `clo-recipe validate` must answer in well under a second.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import Location, Problem, RecipeError
from .schema import Recipe

FieldPath = tuple  # of str | int


@dataclass
class LoadedRecipe:
    """A recipe as written: merged raw mapping, where each value came from, and the model."""

    path: Path
    raw: dict[str, Any]
    locations: dict[FieldPath, Location]
    overrides: set[FieldPath] = field(default_factory=set)
    recipe: Recipe | None = None

    def location(self, path: FieldPath) -> Location:
        """Where `path` was written: `--set` if it or a parent was overridden, else the nearest
        known file location (walking up to its parents)."""
        dotted = ".".join(str(p) for p in path)
        if any(tuple(path[:end]) in self.overrides for end in range(1, len(path) + 1)):
            return Location("--set", None, None, dotted)
        for end in range(len(path), 0, -1):
            found = self.locations.get(tuple(path[:end]))
            if found is not None:
                return Location(found.file, found.line, found.column, dotted or None)
        return Location(str(self.path), None, None, dotted or None)


# --------------------------------------------------------------------------- YAML + line map

def _read_text(path: Path) -> str:
    if not path.exists():
        raise RecipeError(f"recipe file not found: {path}", hint="check the path; recipes are YAML files")
    if path.is_dir():
        raise RecipeError(f"{path} is a folder, not a recipe file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _mark_location(path: Path, mark: Any, field_name: str | None = None) -> Location:
    return Location(str(path), mark.line + 1, mark.column + 1, field_name)


def _map_lines(node: yaml.Node, path: Path, prefix: FieldPath, out: dict[FieldPath, Location],
               problems: list[Problem]) -> None:
    """Record the position of every key and list item; flag duplicate keys (YAML silently
    keeps the last one, which hides typos)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            here = prefix + (key,)
            if key in seen:
                problems.append(Problem(
                    f"duplicate key '{key}' (first on line {seen[key]})",
                    _mark_location(path, key_node.start_mark, ".".join(map(str, here))),
                    "YAML keeps only the last one; remove or merge the duplicate",
                ))
            seen[key] = key_node.start_mark.line + 1
            out[here] = _mark_location(path, key_node.start_mark)
            _map_lines(value_node, path, here, out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[prefix + (index,)] = _mark_location(path, item.start_mark)
            _map_lines(item, path, prefix + (index,), out, problems)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[FieldPath, Location]]:
    """Parse one YAML file with `SafeLoader` only (no `!!python/...` objects), returning the
    mapping and a line map of its keys."""
    text = _read_text(path)
    if not text.strip():
        raise RecipeError(f"{path} is empty", hint="a recipe needs at least name, model, language, data and translation; try `clo-recipe init`")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(f"{path} holds no YAML document")
        problems: list[Problem] = []
        locations: dict[FieldPath, Location] = {}
        _map_lines(node, path, (), locations, problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or "invalid YAML"
        hint = None
        if "could not determine a constructor" in what or "!!python" in str(exc):
            what = "unsafe or unknown YAML tag: " + what.split("tag ")[-1]
            hint = "recipes are plain data: Python tags are refused"
        raise RecipeError(f"YAML syntax error: {what}", location=_mark_location(path, mark) if mark else None,
                          hint=hint or "check indentation and quoting around this line") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError(f"the top level of {path} must be a mapping of fields, got {type(data).__name__}",
                          location=Location(str(path), 1, 1))
    if problems:
        raise RecipeError(problems=problems)
    return data, locations


# --------------------------------------------------------------------------- extends + --set

def _deep_merge(base: dict, top: dict) -> dict:
    """`top` wins; mappings merge key by key, lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _drop_shadowed(locations: dict[FieldPath, Location], top: dict, prefix: FieldPath = ()) -> None:
    """Forget parent positions of values the child replaced wholesale (lists, scalars)."""
    for key, value in top.items():
        here = prefix + (key,)
        if isinstance(value, dict):
            _drop_shadowed(locations, value, here)
        else:
            for path in [p for p in locations if len(p) > len(here) and p[: len(here)] == here]:
                del locations[path]


def _load_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[FieldPath, Location]]:
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(p.name for p in (*chain, path))
        raise RecipeError(f"recipes extend each other in a loop: {loop}", hint="remove one `extends:`")
    data, locations = read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return data, locations
    where = locations.pop(("extends",), Location(str(path)))
    parent_list = [parents] if isinstance(parents, str) else parents
    if not isinstance(parent_list, list) or not all(isinstance(p, str) for p in parent_list):
        raise RecipeError("`extends` must be a relative file path or a list of them", location=where)
    merged: dict = {}
    merged_locations: dict[FieldPath, Location] = {}
    for parent in parent_list:
        if Path(parent).is_absolute() or "://" in parent:
            raise RecipeError(f"`extends: {parent}` must be a path relative to this recipe", location=where,
                              hint="recipes that extend others must travel together; use e.g. `extends: base.yaml`")
        parent_path = path.parent / parent
        if not parent_path.exists():
            raise RecipeError(f"`extends` names a missing file: {parent}", location=where)
        parent_data, parent_locations = _load_tree(parent_path, (*chain, path))
        _drop_shadowed(merged_locations, parent_data)
        merged = _deep_merge(merged, parent_data)
        merged_locations.update(parent_locations)
    _drop_shadowed(merged_locations, data)
    merged_locations.update(locations)
    return _deep_merge(merged, data), merged_locations


def parse_override(text: str) -> tuple[FieldPath, Any]:
    """`train.learning_rate=2e-5` -> (("train", "learning_rate"), 2e-5). The value is YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"bad --set {text!r}", hint="write --set section.field=value, e.g. --set train.learning_rate=2e-5")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return tuple(part for part in key.strip().split(".")), parsed


def _apply_override(data: dict, path: FieldPath, value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "hardware":  # `hardware: cpu` shorthand
            child = {"profile": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[path[-1]] = value


# --------------------------------------------------------------------------- validation

def _model_at(path: FieldPath) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of `path` (for "did you mean")."""
    model: Any = Recipe
    for part in path[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _path_named_in(message: str, under: FieldPath) -> FieldPath | None:
    """Cross-field checks name their field first ("translation.memory_file is needed ..."):
    point the error at that field's line rather than at its section."""
    first = message.split(" ", 1)[0].strip("'`:,")
    parts = tuple(first.split("."))
    if len(parts) > 1 and parts[: len(under)] == under and _model_at(parts) is not None:
        owner = _model_at(parts)
        if parts[-1] in owner.model_fields:
            return parts
    return None


def _problem_from(error: dict, loaded: LoadedRecipe) -> Problem:
    path = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and (named := _path_named_in(message, path)):
        path, message = named, message.split(" ", 1)[1]
    location = loaded.location(path)
    kind = error["type"]
    hint = None
    if kind == "extra_forbidden":
        owner = _model_at(path)
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(path[-1]), known, n=1, cutoff=0.5)
        message = f"unknown field '{path[-1]}'"
        hint = f"did you mean '{close[0]}'?" if close else (f"valid fields here: {', '.join(known)}" if known else None)
    elif kind == "missing":
        message = f"missing required field '{path[-1]}'"
        owner = _model_at(path)
        if owner and path[-1] in owner.model_fields:
            hint = owner.model_fields[path[-1]].description
    elif kind.startswith(("literal_error", "enum")):
        hint = "allowed values are listed above"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return Problem(message, location, hint)


def validate_raw(loaded: LoadedRecipe) -> Recipe:
    try:
        return Recipe.model_validate(loaded.raw)
    except ValidationError as exc:
        problems = [_problem_from(error, loaded) for error in exc.errors()]
        problems.sort(key=lambda p: (p.location.line or 0) if p.location else 0)
        raise RecipeError(problems=problems) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read, compose (`extends:`), override (`--set`) and statically validate a recipe."""
    path = Path(path)
    raw, locations = _load_tree(path, ())
    loaded = LoadedRecipe(path=path.resolve(), raw=raw, locations=locations)
    for text in overrides:
        field_path, value = parse_override(text)
        _apply_override(loaded.raw, field_path, value)
        loaded.overrides.add(field_path)
    loaded.recipe = validate_raw(loaded)
    return loaded
