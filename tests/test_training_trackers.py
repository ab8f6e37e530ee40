"""`train.report_to`: trackers checked before training, the recipe flattened as run config."""

import pytest

from clo_recipes.errors import CloError
from clo_recipes.training.trackers import flat_config, tracker_names


def test_none_means_no_tracker():
    assert tracker_names(["none"]) == []


def test_missing_tracker_package_is_an_error_before_training():
    from accelerate.utils import is_wandb_available

    if is_wandb_available():
        assert tracker_names(["wandb", "none"]) == ["wandb"]
    else:
        with pytest.raises(CloError, match="wandb package is not installed"):
            tracker_names(["wandb"])


def test_recipe_config_is_flat_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", "sk-very-secret-value")
    config = flat_config({"train": {"learning_rate": 8e-6, "report_to": ["tensorboard", "wandb"]},
                          "model": {"base": "org/model", "revision": None},
                          "note": "pasted sk-very-secret-value here"})
    assert config == {"train.learning_rate": 8e-6, "train.report_to": "tensorboard,wandb",
                      "model.base": "org/model", "model.revision": "none", "note": "pasted *** here"}
