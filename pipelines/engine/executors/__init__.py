"""Executors run a pass's tasks (the contract is in base.py). Each module of this package registers its
executors with `@register`, so a new executor is one new file; the engine only ever asks this registry."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any

from refinery.pipelines.engine.executors.base import Executor, TaskFailed, TaskFn, guarded

EXECUTORS: dict[str, type[Executor]] = {}
DEFAULT_EXECUTOR = "local"


def register(cls: type[Executor]) -> type[Executor]:
    """Class decorator: make an executor available under its `name` (`refinery run --executor NAME`)."""
    if cls.name in EXECUTORS and EXECUTORS[cls.name] is not cls:
        raise ValueError(f"two executors are named '{cls.name}'")
    EXECUTORS[cls.name] = cls
    return cls


def create_executor(name: str = DEFAULT_EXECUTOR, **options: Any) -> Executor:
    """An executor by its registered name, built with `options` (e.g. workers=4)."""
    if name not in EXECUTORS:
        close = difflib.get_close_matches(name, list(EXECUTORS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"one of: {', '.join(sorted(EXECUTORS))}"
        raise ValueError(f"unknown executor '{name}': {hint}")
    return EXECUTORS[name](**options)


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["EXECUTORS", "Executor", "TaskFailed", "TaskFn", "create_executor", "guarded", "register"]
