"""The recipe's JSON schema, generated from the pydantic models (editor completion)."""

from __future__ import annotations

import json

from .schema import Recipe


def recipe_json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "clo-recipes recipe"
    properties = schema["properties"]
    # Keys the loader handles before validation.
    properties["extends"] = {
        "description": "Recipe file(s) this one builds on, relative to this file; this file's values win.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    hardware = properties["hardware"]
    properties["hardware"] = {
        "description": hardware.get("description", ""),
        "anyOf": [{"type": "string", "description": "Profile name (short for {profile: NAME})."},
                  {k: v for k, v in hardware.items() if k != "description"}],
    }
    return schema


def recipe_json_schema_text() -> str:
    return json.dumps(recipe_json_schema(), indent=2, ensure_ascii=False) + "\n"
