"""The training log: one JSON object per line in OUT/log.jsonl, and OUT/loss.png drawn from it.

Records carry a `kind`: `start` (the run's setup), `train` (loss, lr, grad norm, tokens/s), `val`
(validation loss), `checkpoint` (with every rank's parameter checksum) and `end`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refinery.corpora.atomic import atomic_path, write_text


class TrainingLog:
    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = out / "log.jsonl"
        self.plot_path = out / "loss.png"
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:  # a resumed run redoes the steps after its checkpoint: drop what an interrupted run logged for them
            kept = [r for r in self.records() if r.get("step", 0) <= resume_step and r["kind"] != "end"]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def write(self, kind: str, **values: Any) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, **values}) + "\n")

    def plot(self, baseline: float | None = None) -> None:
        """Training and validation loss against step, with the unigram baseline as a dashed line."""
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt

        records = self.records()
        train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
        val = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "val"]
        figure, axes = plt.subplots(figsize=(7, 4.5))
        if train:
            axes.plot(*zip(*train), label="train loss", linewidth=1)
        if val:
            axes.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5, markersize=3)
        if baseline is not None:
            axes.axhline(baseline, linestyle="--", color="grey", label=f"unigram entropy {baseline:.2f}")
        axes.set_xlabel("step")
        axes.set_ylabel("loss (nats per token)")
        axes.grid(alpha=0.3)
        axes.legend()
        save_png(figure, self.plot_path)


def save_png(figure: Any, path: Path) -> None:
    """Lay out a matplotlib figure, write it as a PNG atomically, and close it (whatever happens)."""
    import matplotlib.pyplot as plt

    try:
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=110, format="png")  # the temp name has no .png for matplotlib to go by
    finally:
        plt.close(figure)
