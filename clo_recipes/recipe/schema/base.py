"""The strict base model every recipe section derives from."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: unknown keys are errors (never silently dropped), and the model is
    frozen (a changed value is a new model: `model_copy(update=...)`, as the planner's arms
    do), so nothing downstream can edit a recipe a fingerprint was computed from."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
    )
