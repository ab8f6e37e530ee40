"""A read-only view of the recipe restricted to what a stage declared it reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class _Partial:
    """Some fields of a section (for reads like `train.max_length`)."""

    def __init__(self, section: str, values: dict[str, Any]):
        self._section = section
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"this stage did not declare '{self._section}.{name}' in its reads (engine/stages.py)"
            ) from None


class RecipeView:
    def __init__(self, recipe: BaseModel, reads: tuple[str, ...], replacements: dict[str, Any] | None = None):
        self._data: dict[str, Any] = {}
        partial: dict[str, dict[str, Any]] = {}
        for read in reads:
            section, _, field = read.partition(".")
            value = (replacements or {}).get(section, getattr(recipe, section))
            if field:
                partial.setdefault(section, {})[field] = getattr(value, field)
            else:
                self._data[section] = value
        for section, values in partial.items():
            self._data.setdefault(section, _Partial(section, values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(
                f"this stage did not declare '{name}' in its reads (engine/stages.py)"
            ) from None

    def values(self) -> dict[str, Any]:
        """JSON-able values of everything visible (what the fingerprint hashes)."""
        out: dict[str, Any] = {}
        for key, value in self._data.items():
            if isinstance(value, BaseModel):
                out[key] = value.model_dump(mode="json")
            elif isinstance(value, _Partial):
                out[key] = {k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v)
                            for k, v in value._values.items()}
            else:
                out[key] = value
        return out
