"""The stage registry: recipes name stages by these keys."""

from __future__ import annotations

from pipelines.stages.base import GlobalStage, MapStage, Stage, StageConfig

STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to recipes under its `name`."""
    if cls.name in STAGES:
        raise ValueError(f"two stages are named '{cls.name}'")
    STAGES[cls.name] = cls
    return cls


# Importing the stage families fills the registry.
from pipelines.stages import dedup, filters  # noqa: E402,F401

__all__ = ["STAGES", "GlobalStage", "MapStage", "Stage", "StageConfig", "register"]
