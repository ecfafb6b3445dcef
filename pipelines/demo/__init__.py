"""`refinery demo`: the bundled recipe on bundled real samples, then where to look."""

from __future__ import annotations

from pathlib import Path

from pipelines.engine import describe_summary, run_recipe
from pipelines.recipe import load_recipe

RECIPE = Path(__file__).with_name("recipe.yaml")


def run_demo(output: Path, workers: int | None = None, force: bool = False) -> int:
    loaded = load_recipe(RECIPE)
    loaded.recipe.output = str(output.resolve())
    summary = run_recipe(loaded, workers=workers, force=force)
    print(describe_summary(summary))
    print(f"\nrecipe: {RECIPE}")
    print("try:")
    print(f'  refinery sql {output} "SELECT stage, reason, count(*) AS docs FROM removed GROUP BY ALL ORDER BY ALL"')
    print(f'  refinery sql {output} "SELECT stage, docs_in, kept, removed, quarantined FROM stats"')
    print(f'  refinery sql {output} "SELECT lang, count(*) AS docs FROM docs GROUP BY ALL ORDER BY docs DESC"')
    print(f"  refinery sql {output}            # lists every view and its columns")
    if (output / "tokens").exists():
        print(f"  refinery tokens inspect {output / 'tokens'}")
    return 0
