"""The stage contract. A stage is a pure, deterministic function of its input batch and its config;
the engine does all I/O, parallelism, progress, stats and resumption around it.

- MapStage: runs per batch inside one streaming pass (the engine fuses consecutive map stages).
- GlobalStage: needs to see the whole corpus. It runs in three steps around a barrier:
  `signatures` per batch upstream, `resolve` once over all of them, then `apply` per batch downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Parameters of a stage, validated from the recipe; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StageResult(NamedTuple):
    """Rows a stage keeps, and rows it removes (with a `reason` column, and optional detail columns)."""

    kept: pa.Table
    removed: pa.Table


class Stage:
    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig):
        self.config = config


class MapStage(Stage):
    kind = "map"

    def process(self, docs: pa.Table) -> StageResult:
        raise NotImplementedError


class FilterStage(MapStage):
    """A map stage that only decides: one reason per row, null for the rows it keeps."""

    def reasons(self, docs: pa.Table) -> pa.Array:
        raise NotImplementedError

    def process(self, docs: pa.Table) -> StageResult:
        return split_by_reason(docs, self.reasons(docs))


class GlobalStage(Stage):
    kind = "global"

    def signatures(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        """Per-batch rows the barrier needs; `ordinals` give each document's stable position in the run."""
        raise NotImplementedError

    def resolve(self, signature_files: list[Path], workdir: Path) -> None:
        """Read every task's signatures and write the decision files into `workdir` (runs once)."""
        raise NotImplementedError

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> Any:
        """The decisions for one task's ordinal range, loaded once per task."""
        raise NotImplementedError

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: Any) -> StageResult:
        raise NotImplementedError


def split_by_reason(docs: pa.Table, reasons: pa.Array, **detail: pa.Array) -> StageResult:
    """Split rows by a reason array (null = keep); `detail` columns are attached to removed rows only."""
    removed_mask = pc.is_valid(reasons)
    kept = docs.filter(pc.invert(removed_mask))
    removed = docs.filter(removed_mask).append_column("reason", reasons.filter(removed_mask))
    for name, values in detail.items():
        removed = removed.append_column(name, values.filter(removed_mask))
    return StageResult(kept, removed)
