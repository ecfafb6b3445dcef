"""`refinery demo`: the bundled recipe on bundled real samples, a tiny model trained on its shards, and
where to look next."""

from __future__ import annotations

from pathlib import Path

from pipelines.engine import describe_summary, run_recipe
from pipelines.recipe import load_recipe

RECIPE = Path(__file__).with_name("recipe.yaml")


def train_demo_model(run_dir: Path, steps: int) -> str:
    """Pretrain the tiny GPT on the demo's shards on the CPU; a line comparing its loss with the baseline."""
    from training.config import TrainConfig  # torch is imported only when the demo trains
    from training.train import train

    config = TrainConfig(data=[str(run_dir / "tokens")], out=str(run_dir / "model"), size="tiny", seq_len=128,
                         batch_size=16, max_steps=steps, lr=3e-3, warmup_steps=min(30, steps // 10),
                         eval_interval=max(1, steps // 3), eval_batches=10, checkpoint_interval=0, device="cpu")
    result = train(config, progress=True)
    return (f"tiny GPT, {steps} steps on the CPU: validation loss {result.val_loss:.3f} nats/token against "
            f"{result.unigram_entropy:.3f} for the unigram baseline (the data's token entropy); "
            f"checkpoint {result.out}")


def run_demo(output: Path, workers: int | None = None, force: bool = False, train_steps: int = 300) -> int:
    loaded = load_recipe(RECIPE)
    loaded.recipe.output = str(output.resolve())
    summary = run_recipe(loaded, workers=workers, force=force)
    print(describe_summary(summary))
    if train_steps:
        print(train_demo_model(summary.run_dir, train_steps))
    print(f"\nrecipe: {RECIPE}")
    print("try:")
    print(f'  refinery sql {output} "SELECT stage, reason, count(*) AS docs FROM removed GROUP BY ALL ORDER BY ALL"')
    print(f'  refinery sql {output} "SELECT stage, docs_in, kept, removed, quarantined FROM stats"')
    print(f'  refinery sql {output} "SELECT lang, count(*) AS docs FROM docs GROUP BY ALL ORDER BY docs DESC"')
    print(f"  refinery sql {output}            # lists every view and its columns")
    print(f"  refinery tokens inspect {output / 'tokens'}")
    return 0
