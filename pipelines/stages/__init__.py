"""The stage registry: recipes name stages by these keys.

Every module in this package is imported once, so a new stage family is one new file whose classes
carry `@register`; nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from refinery.pipelines.stages.base import GlobalStage, MapStage, ProducerStage, RunContext, Stage, StageConfig

STAGES: dict[str, type[Stage]] = {}


def build_stage(spec: Any, context: RunContext) -> Stage:
    """The one place stages are built: `spec` is a recipe's StageSpec (its registered name and its config)."""
    return STAGES[spec.name](spec.config, context)


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to recipes under its `name`."""
    if cls.name in STAGES and STAGES[cls.name] is not cls:
        raise ValueError(f"two stages are named '{cls.name}'")
    STAGES[cls.name] = cls
    return cls


# Sub-packages (text/, neardup/) hold helpers that only stages use; they register nothing.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STAGES", "GlobalStage", "MapStage", "ProducerStage", "RunContext", "Stage", "StageConfig", "build_stage",
           "register"]
