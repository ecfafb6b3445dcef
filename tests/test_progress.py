"""The progress bar of `refinery run`, as a terminal shows it: each pass named in plain words, with a total and an
ETA (input bytes while reading the inputs, records after)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from refinery.pipelines.commands.cli import main

FILES = ("text/c4_demo.jsonl", "warc/wget-crawl-0000.warc.gz", "warc/wget-crawl-0001.warc.gz")


class Terminal(io.StringIO):
    """stderr as a terminal: tqdm draws its bar only there."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def recipe(data_dir, write_recipe) -> Path:
    inputs = [{"path": str(data_dir / name)} for name in FILES]
    stages = [{"extract": {}}, {"length_filter": {"min_words": 20}}, {"exact_dedup": {}}]
    return write_recipe(inputs, stages, task_size="64KiB")  # the JSONL file is cut into several tasks


def _run_in_terminal(monkeypatch, columns: int, *args: str) -> str:
    """What `refinery run ARGS` writes to a terminal of `columns` columns, each redraw of a bar on its own line."""
    terminal = Terminal()
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["run", *args, "--no-report", "--workers", "1"]) == 0
    return terminal.getvalue().replace("\r", "\n")


def _last(lines: str, start: str) -> str:
    return [line for line in lines.splitlines() if line.startswith(start)][-1]


def test_each_pass_is_named_in_plain_words_with_a_total_and_an_eta(recipe, monkeypatch, capsys):
    bars = _run_in_terminal(monkeypatch, 200, str(recipe))
    manifest = json.loads((recipe.parent / "out/manifest.json").read_text())
    assert len({task["path"] for task in manifest["tasks"]}) < len(manifest["tasks"])  # a file cut into tasks

    first = _last(bars, "pass 1/2: read, extract text, filter by length, find duplicates: 100%|")
    input_bytes = tqdm.format_sizeof(sum(entry["bytes"] for entry in manifest["inputs"]))
    assert f"| {input_bytes}B/{input_bytes}B of input [" in first  # the total: the inputs' bytes
    assert f"task {len(manifest['tasks'])}/{len(manifest['tasks'])}, 337 records]" in first
    assert re.search(r"of input \[\d\d:\d\d<\d\d:\d\d, ", bars)  # a time left, which needs the total

    length_filter = json.loads((recipe.parent / "out/stats/length_filter.json").read_text())
    second = _last(bars, "pass 2/2: drop duplicates: 100%|")
    assert f"| {length_filter['kept']}/{length_filter['kept']} records [" in second  # the rows pass 1 wrote
    assert _last(bars, "find duplicates (exact_dedup, by partition): 100%|")
    assert capsys.readouterr().out.startswith("read 337 records")


def test_a_limited_run_counts_records_and_a_narrow_terminal_keeps_the_eta(recipe, monkeypatch):
    bars = _run_in_terminal(monkeypatch, 80, str(recipe), "--limit", "30")
    # 30 records of each file, but the second WARC file has only 15: the bar still ends at its total.
    assert "pass 1/2: read, extract text, filter by length, find duplicates\n" in bars  # the name, on its own line
    assert "| 90/90 records [" in _last(bars, "pass 1/2: 100%|")
    # The bar itself is "pass 1/2: ..%|...", which leaves an 80-column terminal room for the counts and the ETA.
    assert not [line for line in bars.splitlines() if "%|" in line and "extract text" in line]


def test_quiet_draws_no_bar(recipe, monkeypatch):
    assert _run_in_terminal(monkeypatch, 200, str(recipe), "--quiet") == ""
