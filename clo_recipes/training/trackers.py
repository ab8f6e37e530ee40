"""`train.report_to`: experiment trackers through accelerate, with the recipe as run config."""

from __future__ import annotations

from typing import Any

from ..errors import CloError
from ..secrets import redact

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def tracker_names(report_to: list[str]) -> list[str]:
    """The trackers to start; a missing package is an error now, not after an hour of training."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    names = [name for name in dict.fromkeys(report_to) if name != "none"]
    for name in names:
        if not available[name]():
            raise CloError(f"train.report_to includes {name} but the {_PACKAGES[name]} package is not installed",
                           hint=f"pip install {_PACKAGES[name]}, or remove {name} from train.report_to")
    return names


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys with scalar values (what every tracker's hyperparameter view accepts); secrets masked."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(map(str, value))
        elif value is None:
            flat[name] = "none"
        else:
            flat[name] = value
    return redact(flat)
