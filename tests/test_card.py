"""The dataset card (RUN/README.md): Hugging Face metadata whose `configs` make `datasets.load_dataset(RUN)` load the
kept documents and nothing else, and prose whose numbers are the run's."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_report import demo_folder

from refinery.pipelines.commands import sql
from refinery.pipelines.commands.card import MARKER, size_category, write_card
from refinery.pipelines.commands.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)[0]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_metadata_follows_the_hubs_conventions(demo):
    card = (demo / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["pretty_name"] == "demo"
    assert (meta["license"], meta["license_name"]) == ("other", "unknown")
    assert "**Unknown.** The recipe states no licence" in card
    langs = sql.query(demo, "SELECT lang, count(*) AS n FROM docs GROUP BY ALL ORDER BY n DESC").to_pylist()
    total = sum(r["n"] for r in langs)
    assert meta["language"] == [r["lang"] for r in langs if r["n"] / total >= 0.01] == ["en", "zh"]
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}]
    assert card.index(MARKER) > card.index("---\n", 4)  # the metadata block comes first, as the Hub requires


def test_prose_numbers_are_the_runs(demo):
    card = (demo / "README.md").read_text(encoding="utf-8")
    for row in sql.query(demo, "SELECT stage, kind, docs_in, kept, removed FROM stats").to_pylist():
        assert f"| {row['stage']} | {row['kind']} | {row['docs_in']:,} | {row['kept']:,} | {row['removed']:,} |" in card
    for row in sql.query(demo, "SELECT stage, split_part(reason, ':', 1) AS r, count(*) AS n FROM removed "
                               "GROUP BY ALL").to_pylist():
        assert f"| {row['stage']} | `{row['r']}` | {row['n']:,} |" in card
    tokens = json.loads((demo / "tokens/train/meta.json").read_text())["tokens_per_source"]["wget-crawl-0000"]
    assert f"| wget-crawl-0000 | 16 | 6 | 59.4 KB | {tokens:,} |" in card
    assert "```yaml\nname: demo\ninputs:\n- path: data/*.warc.gz" in card
    assert "## Known limitations" in card and "No decontamination against evaluation sets" in card
    assert "@misc{demo," in card


def test_load_dataset_reads_the_kept_documents_only(demo, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Everything else a run folder holds is Parquet too: without the card's configs, datasets would take it all.
    for other in ("removed", "work", "tokens/train", "sft/data"):
        assert list((demo / other).rglob("*.parquet")), other
    loaded = datasets.load_dataset(str(demo), cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"]
    ids = sql.query(demo, "SELECT id FROM docs").column("id").to_pylist()
    assert sorted(loaded["train"]["id"]) == sorted(ids)
    assert "lang_score" in loaded["train"].column_names


def test_instruction_data_card(demo, tmp_path):
    card = (demo / "sft/README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert "language" not in meta and "Not identified: the recipe has no `langid` stage" in card
    assert meta["tags"] == ["refinery", "conversational", "instruction-tuning"]
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(demo / "sft"), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == sql.query(demo / "sft", "SELECT count(*) FROM docs").column(0)[0].as_py()
    assert "messages" in loaded["train"].column_names


def test_a_readme_of_your_own_is_never_replaced(demo, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(demo, run, ignore=shutil.ignore_patterns("sft", "model*", "work"))
    (run / "README.md").write_text("# my notes\n", encoding="utf-8")
    assert write_card(run) is None and (run / "README.md").read_text() == "# my notes\n"
    assert main(["report", str(run)]) == 0
    assert "is your own (it lacks Refinery's marker line)" in capsys.readouterr().out
    (run / "README.md").unlink()
    assert write_card(run) == run / "README.md" and MARKER in (run / "README.md").read_text()


def test_a_licence_in_the_recipe_is_used(demo, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo, run, ignore=shutil.ignore_patterns("sft", "model*", "work"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["recipe"]["license"] = "odc-by"  # recipes have no such field today; a future one is honoured
    (run / "manifest.json").write_text(json.dumps(manifest))
    card = (run / "README.md").read_text() if write_card(run) else ""
    assert front_matter(card)["license"] == "odc-by" and "license_name" not in front_matter(card)
    assert "`odc-by`, as the recipe states" in card


@pytest.mark.parametrize(("n", "bucket"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (2_500_000, "1M<n<10M"),
                                          (10**13, "n>1T")])
def test_size_categories(n, bucket):
    assert size_category(n) == bucket
