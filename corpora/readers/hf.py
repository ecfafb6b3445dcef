"""Local Hugging Face `datasets` data: a folder written by `save_to_disk`, or a single `.arrow` file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from refinery.corpora import storage
from refinery.corpora.readers import register
from refinery.corpora.readers.base import (
    DEFAULT_BATCH_ROWS,
    FieldOptions,
    InputError,
    ReadBatch,
    Reader,
    ReadTask,
)
from refinery.corpora.readers.builder import RecordBuilder
from refinery.corpora.readers.rows import add_rows, numbered


class HfOptions(FieldOptions):
    split: str | None = Field(None, description="which split of a DatasetDict folder (default: train, if it has one)")


def _load(path: str, split: str | None):
    local = storage.local_path(path)
    if local is None:  # `datasets` reads its folders through its own code, which storage does not reach
        raise InputError(f"{path}: format hf reads a local `save_to_disk` folder or .arrow file, not one on object "
                         "storage; copy it to a local or shared disk, or write it as Parquet and read that URL")
    try:
        import datasets
    except ImportError:
        raise InputError(f"{path} is a Hugging Face `datasets` folder: reading it needs `pip install datasets`"
                         ) from None
    if local.endswith(".arrow"):
        return datasets.Dataset.from_file(local)
    loaded = datasets.load_from_disk(local)
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        chosen = split or ("train" if "train" in loaded else None)
        if chosen not in loaded:
            raise InputError(f"{path} holds the splits {names}: choose one with `split:` on this input")
        return loaded[chosen]
    return loaded


@register
class HfReader(Reader):
    """Hugging Face `datasets` data: a `save_to_disk` folder or an `.arrow` file."""

    name = "hf"
    suffixes = (".arrow",)
    Options = HfOptions

    @classmethod
    def claims(cls, path: str | Path) -> bool:
        """A folder written by `save_to_disk`, whatever its name."""
        local = storage.local_path(path)  # a remote folder is not read by this reader (see _load)
        folder = Path(local or "")
        return local is not None and folder.is_dir() and any(
            (folder / name).exists() for name in ("state.json", "dataset_dict.json"))

    def plan(self, path: str, task_size: int, options: HfOptions) -> list[tuple[int, int | None]]:
        dataset = _load(path, options.split)
        rows = dataset.num_rows
        if rows == 0:
            return [(0, None)]
        bytes_per_row = max(1, dataset.data.nbytes // rows)
        rows_per_task = max(1, task_size // bytes_per_row)
        return [(start, min(start + rows_per_task, rows)) for start in range(0, rows, rows_per_task)]

    def read(self, task: ReadTask, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[ReadBatch]:
        dataset = _load(task.path, self.options_of(task).split)
        end = dataset.num_rows if task.end is None else task.end
        table = dataset.data.table.slice(task.start, end - task.start)
        yield from add_rows(RecordBuilder(task), numbered(table.to_batches(max_chunksize=batch_rows), task.start))
