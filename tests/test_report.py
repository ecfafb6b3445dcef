"""refinery report on real runs: the demo's pipeline on its bundled real samples (Common Crawl and wget WARCs, C4,
CCNet, a dedup sample) and its instruction data, plus a tiny GPT trained on the shards. Every number the page shows
is checked against `refinery sql` and the files it came from."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from refinery.pipelines.commands import sql
from refinery.pipelines.commands.cli import main
from refinery.pipelines.commands.demo import run_demo
from refinery.pipelines.commands.report import write_report


def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo (no training in it) under this session's temp folder, plus an 8-step tiny GPT on its shards in
    RUN/model. Every test module calls this; after the first, run_demo only resumes finished runs (no work) and
    rewrites their reports and cards. Returns the run folder and what the demo printed."""
    out = tmp_path_factory.getbasetemp() / "report-demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_demo(out, workers=2, train_steps=0) == 0
    if not (out / "model/log.jsonl").exists():
        from refinery.training.config import TrainConfig
        from refinery.training.train import train

        train(TrainConfig(data=[str(out / "tokens")], out=str(out / "model"), seq_len=64, batch_size=8, max_steps=8,
                          warmup_steps=1, eval_interval=4, eval_batches=2, checkpoint_interval=0, device="cpu"),
              progress=False)
        with contextlib.redirect_stdout(printed):
            assert main(["report", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    return demo_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def page(demo) -> str:
    return (demo[0] / "report.html").read_text(encoding="utf-8")


class Tables(HTMLParser):
    """The cell texts of every table of a page, by the id of the section it is in."""

    def __init__(self, text: str):
        super().__init__()
        self.section, self.tables, self._row, self._cell = "", {}, None, None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "section":
            self.section = dict(attrs).get("id", "")
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.tables[self.section][-1].append(self._row)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_funnel_counts_equal_stats(demo, page):
    stats = sql.query(demo[0], "SELECT stage, kind, docs_in, kept, removed, quarantined, skipped FROM stats "
                               "ORDER BY position").to_pylist()
    funnel = Tables(page).tables["funnel"][0]
    assert funnel[0][:7] == ["stage", "kind", "docs in", "kept", "removed", "quarantined", "skipped"]
    assert [row[:2] + [number(c) for c in row[2:7]] for row in funnel[1:]] == [list(s.values()) for s in stats]
    read, last = stats[0], stats[-1]
    kept = sql.query(demo[0], "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert last["kept"] == kept and f"<b>{read['docs_in']:,}</b> records read → <b>{kept:,}</b> documents kept" in page
    assert "the counts reconcile" in page


def test_each_reason_shows_real_removed_documents(demo, page):
    counts = sql.query(demo[0], "SELECT stage, split_part(reason, ':', 1) AS reason, count(*) AS n FROM removed "
                                "GROUP BY ALL").to_pylist()
    assert len(counts) >= 10  # the demo removes for many reasons: Gopher, C4, FineWeb, near-duplicates
    for row in counts:
        block = re.search(rf'<h3 id="reason-{row["stage"]}-{row["reason"]}".*?</h3>(.*?)(?=<h3|</section>)'
                          .replace("_", "-"), page, re.S)
        assert block and f"({row['n']:,} documents)" in block.group(0), row
        shown = re.findall(r'<div class="example"><code>(.*?)</code>', block.group(1))
        ids = set(sql.query(demo[0], f"SELECT id FROM removed WHERE stage = '{row['stage']}' AND "
                                     f"split_part(reason, ':', 1) = '{row['reason']}'").column("id").to_pylist())
        assert 1 <= len(shown) <= 3 and {html.unescape(s) for s in shown} <= ids
    duplicate = sql.query(demo[0], "SELECT id, duplicate_of FROM removed WHERE stage = 'minhash_dedup' ORDER BY id "
                                   "LIMIT 1").to_pylist()[0]
    assert f"duplicate of <code>{duplicate['duplicate_of']}</code>" in page


def test_signal_charts_draw_the_configured_thresholds_over_the_rows_that_reached_the_stage(demo, page):
    stages = {row["stage"]: row for row in sql.query(demo[0], "SELECT * FROM stats").to_pylist()}
    captions = re.findall(r"<figcaption><b>(\w+)</b>: ([\d,]+) passed, ([\d,]+) removed by (\w+)", page)
    assert len(captions) > 30  # every signal column of the Gopher, C4 and FineWeb filters, and langid's score
    for column, passed, removed, stage in captions:
        if stage == "any":  # the text length: kept documents against every removed one
            expected = (stages["tokenize"]["kept"], sum(s["removed"] for s in stages.values()))
            assert (number(passed), number(removed)) == expected
            continue
        reached = stages[stage]["docs_in"]
        assert (number(passed) + number(removed), number(removed)) == (reached, stages[stage]["removed"]), column
    for threshold in ("min 50 (min_words)", "max 100000 (max_words)", "min 0.8 (min_alpha_words_frac)",
                      "max 0.2 (max_top_ngram_frac[2])", "max 0.1 (max_dup_ngram_frac[10])",
                      "min 0.12 (min_line_punct_frac)", "max 0.67 (max_short_line_frac)", "min 5 (min_sentences)"):
        assert threshold in page, threshold
    assert "lang_score</b>: 212 passed, 0 removed by langid; no threshold" in page  # min_score 0 removes nothing


def test_languages_sources_duplicates_and_tokens(demo, page):
    run = demo[0]
    for row in sql.query(run, "SELECT lang, count(*) AS n FROM docs GROUP BY ALL").to_pylist():
        assert f">{row['lang']}</text>" in page and f"{row['n']:,} docs (" in page
    tables = Tables(page).tables
    sources = {r[0]: (number(r[1]), number(r[2])) for r in tables["sources"][0][1:]}
    expected = sql.query(run, "SELECT source, count(*) AS n FROM docs GROUP BY ALL").to_pylist()
    assert {s: kept for s, (kept, _) in sources.items()} == {r["source"]: r["n"] for r in expected}
    cluster = sql.query(run, "SELECT dup_cluster_id FROM removed WHERE stage = 'minhash_dedup'").column(0).to_pylist()
    assert cluster and any(f"<td>{c}</td>" in page for c in cluster)  # the example cluster's kept document
    for split in ("train", "validation"):
        meta = json.loads((run / f"tokens/{split}/meta.json").read_text())
        row = next(r for r in tables["tokens"][0] if r[0] == split)
        assert (number(row[1]), number(row[2])) == (meta["documents"], meta["tokens"])
    assert "BPE tokenizer, vocabulary 2,000 tokens (trained on this run" in page


def test_training_curves_and_final_metrics_from_the_log(demo, page):
    records = [json.loads(line) for line in (demo[0] / "model/log.jsonl").read_text().splitlines()]
    end = next(r for r in records if r["kind"] == "end")
    assert f"<code>{demo[0] / 'model'}</code>" in page
    assert f"{end['val_loss']:.4f} nats/token" in page and f"unigram baseline {end['unigram_entropy']:.3f}" in page
    assert 'data-chart="training-model"' in page


class Loads(HTMLParser):
    """Tags and attributes that would make a browser fetch something (the page's own text may hold URLs)."""

    FETCHING_TAGS = {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source", "image", "use"}

    def __init__(self, text: str):
        super().__init__()
        self.found: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.FETCHING_TAGS:
            self.found.append(tag)
        for name, value in attrs:
            if name in ("src", "srcset", "poster", "action", "data", "background", "xlink:href") or (
                    name == "href" and not value.startswith("#")):
                self.found.append(f"{tag} {name}={value}")


def test_the_page_is_self_contained(page):
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert Loads(page).found == []
    assert "@import" not in page and set(re.findall(r"url\((.*?)\)", page)) <= {"#hatch", "#cross", "#plan-arrow"}
    assert page.count('data-chart="') > 35


def test_plan_and_recipe_sections(demo, page):
    assert "pass 4  reads data/ → writes no documents" in page and "```mermaid\nflowchart TD" in page
    assert 'class="plan"' in page and "barrier: minhash_dedup finish" in page
    assert "- c4_quality:\n    terminal_punctuation: null" in page  # the recipe as run


def test_a_run_in_no_ablation_says_how_to_make_one(demo, page):
    # tests/test_ablate.py checks the section of a run in an ablation
    assert not (demo[0] / "ablation.json").exists()
    assert '<a href="#ablation">ablation</a>' in page
    assert re.search(r'<section id="ablation"><h2>Ablation</h2><p>This run is in no ablation\..*?refinery ablate '
                     r"RECIPE OTHER\.yaml --tokens 2M.*?</section>", page)


def test_report_is_deterministic_and_o_writes_elsewhere(demo, tmp_path, capsys):
    assert main(["report", str(demo[0]), "-o", str(tmp_path / "again.html")]) == 0
    assert f"report: {tmp_path / 'again.html'}" in capsys.readouterr().out
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == (demo[0] / "report.html").read_text("utf-8")


def test_instruction_data_report(demo):
    sft = demo[0] / "sft"
    page = (sft / "report.html").read_text(encoding="utf-8")
    assert "No language labels" in page and "loss mask" in page
    stats = sql.query(sft, "SELECT stage, removed FROM stats WHERE removed > 0").to_pylist()
    for row in stats:  # conversations removed before chat_template have no text: their prompt is shown
        assert f'id="reason-{row["stage"].replace("_", "-")}-' in page


def test_run_writes_the_report_unless_told_not_to(data_dir, write_recipe, capsys):
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}],
                          [{"length_filter": {"min_words": 50, "max_chars": 5000}}, {"exact_dedup": {}}])
    run_dir = recipe.parent / "out"
    assert main(["run", str(recipe), "--quiet", "--no-report"]) == 0
    assert not (run_dir / "report.html").exists() and (run_dir / "README.md").exists()
    assert f"dataset card: {run_dir / 'README.md'}" in capsys.readouterr().out
    assert main(["run", str(recipe), "--quiet"]) == 0  # resumes (nothing to do) and writes the report
    assert f"report: {run_dir / 'report.html'}" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    # length_filter writes no signal column: its limits are drawn on the text's length in characters and in
    # words, counted as the stage counts them (every document it removed for too few words is left of the line).
    assert "max 5000 (max_chars)" in page and "min 50 (min_words)" in page and 'data-chart="signal-words"' in page
    counted = sql.query(run_dir, "SELECT count(*) FILTER (WHERE len(regexp_extract_all(text, '\\S+')) < 50) AS below, "
                                 "count(*) AS n FROM removed WHERE reason = 'too_few_words'").to_pylist()[0]
    assert counted["below"] == counted["n"] > 0
    words = re.search(r"<figcaption><b>words</b>: ([\d,]+) passed, ([\d,]+) removed by any stage", page)
    removed = sql.query(run_dir, "SELECT count(*) FROM removed").column(0)[0].as_py()
    assert words and number(words.group(2)) == removed
    assert "No language labels" in page and "No token shards" in page and "No training run found" in page


def test_report_refuses_what_is_not_a_finished_run(demo, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a Refinery run folder" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "running"}))
    assert main(["report", str(tmp_path)]) == 2
    assert "not complete (status: running)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds no training log"):
        write_report(demo[0], tmp_path / "report.html", trainings=[tmp_path])


def test_demo_names_its_report_and_card_last(demo):
    out, printed = demo
    lines = printed.rstrip().splitlines()
    assert lines[-2] == f"report: {out / 'report.html'}  (open it in a browser)"
    assert lines[-1] == f"dataset card: {out / 'README.md'}"
    assert f"instruction data: report: {out / 'sft/report.html'}" in printed


def test_web_recipe_with_damaged_input_shows_quarantine_and_pii_counts(data_dir, write_recipe):
    stages = [{"extract": {}}, {"langid": {}}, {"gopher_quality": {}}, {"exact_dedup": {}}, {"minhash_dedup": {}},
              {"pii": {"count_column": "pii_found"}}, {"tokenize": {"vocab_size": 400}}]
    inputs = [{"path": str(data_dir / "warc/*.warc.gz")}, {"path": str(data_dir / "warc/bad/*.warc*")}]
    recipe = write_recipe(inputs, stages, name="web")
    assert main(["run", str(recipe), "--quiet"]) == 0
    run_dir = recipe.parent / "out"
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    quarantined = sql.query(run_dir, "SELECT split_part(reason, ':', 1) AS reason, list(id) AS ids FROM quarantine "
                                     "GROUP BY ALL").to_pylist()
    assert quarantined  # the clipped and truncated WARCs
    for row in quarantined:
        block = re.search(rf'<h3 id="reason-read-{row["reason"].replace("_", "-")}".*?</h3>(.*?)(?=<h3|</section>)',
                          page, re.S)
        assert block and f"({len(row['ids']):,} records)" in block.group(0)
        shown = re.findall(r'<div class="example"><code>(.*?)</code>', block.group(1))
        assert shown and {html.unescape(s) for s in shown} <= set(row["ids"])
    docs = sql.query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert f"pii_found</b>: {docs:,} passed, 0 removed by pii" in page
