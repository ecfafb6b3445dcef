"""The stage contract. A stage is a pure, deterministic function of its input batch and its config;
the engine does all I/O, parallelism, progress, stats and resumption around it.

- MapStage: runs per batch inside one streaming pass (the engine fuses consecutive map stages).
- GlobalStage: needs to see the whole corpus. It runs in phases around a barrier: `collect` per batch
  upstream, `finish` once over all of them, then `apply` per batch downstream (deduplication, decontamination).
- ProducerStage: a global stage that only produces something (collect → finish: a tokenizer, token shards)
  and keeps every document as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from refinery.tokenization.shards import TokenLayout


class StageConfig(BaseModel):
    """Parameters of a stage, validated from the recipe; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Parameters that change how a stage works but never what it outputs (e.g. a memory budget): changing them
    # lets a run resume instead of asking for --force.
    outside_fingerprint: ClassVar[frozenset[str]] = frozenset()
    # Parameters added after runs were made without them: left out of the fingerprint while at their default
    # (which does what the stage did before), so those runs still resume after an upgrade.
    fingerprinted_when_set: ClassVar[frozenset[str]] = frozenset()

    def fingerprinted(self) -> dict[str, Any]:
        """The parameters that decide the stage's output, as the run's fingerprint takes them."""
        at_default = {name for name in self.fingerprinted_when_set
                      if getattr(self, name) == type(self).model_fields[name].default}
        return self.model_dump(exclude=set(self.outside_fingerprint) | at_default)


class StageResult(NamedTuple):
    """Rows a stage keeps, and rows it removes (with a `reason` column, and optional detail columns).

    `counts` are the stage's own tallies for the batch (e.g. PII replacements by kind): the engine sums them
    over the run into the `counts` field of stats/<stage>.json.
    """

    kept: pa.Table
    removed: pa.Table
    counts: dict[str, int] | None = None


@dataclass(frozen=True)
class RunContext:
    """Where a stage runs: its run folder (for global stages' products) and the recipe's folder
    (relative paths in a stage's parameters, e.g. a block list or a model, are resolved against it)."""

    run_dir: Path
    recipe_dir: Path

    def __post_init__(self) -> None:
        # Absolute, so a path resolved once (and handed on, e.g. to require_file) is never joined twice.
        object.__setattr__(self, "recipe_dir", Path(self.recipe_dir).absolute())

    def resolve(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.recipe_dir / path

    @property
    def tokens(self) -> TokenLayout:
        """The run's token folder (RUN/tokens), where tokenization stages write."""
        return TokenLayout.of_run(self.run_dir)


DEFAULT_CONTEXT = RunContext(Path.cwd(), Path.cwd())


class Stage:
    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    # What the stage does to documents, in a few plain words, for the progress bar of its pass ("pass 1/3: read,
    # extract text, find duplicates"); empty: its name. A global stage's is what its apply does.
    does: ClassVar[str] = ""

    def __init__(self, config: StageConfig, context: RunContext = DEFAULT_CONTEXT):
        self.config = config
        self.context = context
        # Files the stage reads (models, lists): their content is part of the run's fingerprint.
        self.resource_files: list[Path] = []

    def require_file(self, value: str | Path, parameter: str, hint: str = "") -> Path:
        """Resolve a file named by a parameter (relative to the recipe's folder); fail clearly if it is missing."""
        path = self.context.resolve(value)
        if not path.is_file():
            raise ValueError(f"{self.name}: {parameter} file {str(path)!r} not found (relative paths start at the "
                             f"recipe's folder){': ' + hint if hint else ''}")
        self.resource_files.append(path)
        return path

    @classmethod
    def prerequisites(cls, config: StageConfig) -> list[tuple[str, StageConfig]]:
        """Stages (name, config) the recipe runs just before this one, e.g. training the tokenizer it uses."""
        return []


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
    """A stage that must see the whole corpus before it can act. It runs in phases around a barrier:

    collect  per batch, in the pass before the barrier: the rows `finish` needs (hashes, samples, tokens)
    finish   once, over every task's collected rows: writes its products into its work folder (or the run's)
    apply    per batch, in the pass after the barrier: act on each document with what `finish` decided
    """

    kind = "global"
    # What its collect phase is for, in a few plain words ("find duplicates"); empty: "collect for NAME".
    collect_does: ClassVar[str] = ""
    # Whether the stage has an `apply` phase. A stage that only produces something (a tokenizer, token shards)
    # keeps every document unchanged: it derives from ProducerStage, and the engine then needs no pass after it.
    applies: ClassVar[bool] = True

    def collect(self, docs: pa.Table, ordinals: pa.Array) -> pa.Table:
        """Per-batch rows the barrier needs; `ordinals` give each document's stable position in the run."""
        raise NotImplementedError

    def finish(self, collected_files: list[Path], workdir: Path) -> None:
        """Read every task's collected rows and write the stage's products (runs once)."""
        raise NotImplementedError

    # A stage whose `finish` splits by a hash column of its collected rows names that column here: the engine then
    # cuts the rows into `partitions` groups (by the hash, so equal keys meet) and runs `finish_partition` once per
    # group as a task on the executor, on any worker, in parallel: the barrier scales out instead of running on
    # the driver. The decisions must not depend on the number of partitions.
    partition_column: ClassVar[str | None] = None

    @property
    def partitions(self) -> int:
        return 1

    def finish_partition(self, collected_files: list[Path], workdir: Path, partition: int) -> None:
        """`finish` for the collected rows whose `partition` column is `partition` (runs once per partition)."""
        raise NotImplementedError

    # The general form: a finish cut into steps that run one after another, each in parts that run in parallel as
    # tasks on the executor (a partitioned finish is one step, "partition", with a part per partition). A stage
    # with steps has no `finish` of its own to write: the engine runs the steps, and `finish` runs them here.
    def finish_steps(self) -> tuple[str, ...]:
        return ("partition",) if self.partition_column else ()

    def step_parts(self, step: str, collected_files: list[Path], workdir: Path) -> int:
        """How many parts `step` has, asked once the steps before it are done."""
        return self.partitions

    def run_step(self, step: str, part: int, collected_files: list[Path], workdir: Path) -> None:
        """One part of one step (a task: it writes its files atomically and must be safe to run again)."""
        self.finish_partition(collected_files, workdir, part)

    def finish_in_steps(self, collected_files: list[Path], workdir: Path) -> None:
        """Every step's parts in turn, in this process."""
        for step in self.finish_steps():
            for part in range(self.step_parts(step, collected_files, workdir)):
                self.run_step(step, part, collected_files, workdir)

    def load_decisions(self, workdir: Path, first_ordinal: int, last_ordinal: int) -> Any:
        """The decisions for one task's ordinal range, loaded once per task before `apply`."""
        raise NotImplementedError

    def apply(self, docs: pa.Table, ordinals: pa.Array, decisions: Any) -> StageResult:
        raise NotImplementedError


class ProducerStage(GlobalStage):
    """A global stage that produces an artifact from the corpus (collect → finish) and keeps every document."""

    applies = False


def split_by_reason(docs: pa.Table, reasons: pa.Array, **detail: pa.Array) -> StageResult:
    """Split rows by a reason array (null = keep); `detail` columns are attached to removed rows only."""
    removed_mask = pc.is_valid(reasons)
    kept = docs.filter(pc.invert(removed_mask))
    removed = docs.filter(removed_mask).append_column("reason", reasons.filter(removed_mask))
    for name, values in detail.items():
        removed = removed.append_column(name, values.filter(removed_mask))
    return StageResult(kept, removed)
