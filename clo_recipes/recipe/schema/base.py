"""The strict base model every recipe section derives from."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: unknown keys are errors (never silently dropped), values are
    validated on assignment too, and the model is frozen once resolved."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        frozen=True,
    )
