"""Recipe schema, one module per concern. `Recipe` is the root."""

from .adapter import AdapterSection
from .data import DataSection, FieldMap
from .evaluation import EvalSection, JudgeSection
from .hardware import HardwareSection
from .method import MethodSection
from .model import ModelSection
from .recipe import Recipe
from .train import TrainSection
from .translation import FilterSection, TranslationSection

__all__ = [
    "AdapterSection",
    "DataSection",
    "EvalSection",
    "FieldMap",
    "FilterSection",
    "HardwareSection",
    "JudgeSection",
    "MethodSection",
    "ModelSection",
    "Recipe",
    "TrainSection",
    "TranslationSection",
]
