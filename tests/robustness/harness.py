"""Running damaged real files through a real `refinery` run, beside an undamaged neighbour, and checking what came
out: the run finishes, counts reconcile, every damage has a quarantine row with a `category: detail` reason, the
good records kept are the test's own count, and the neighbour is kept whole."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe

REASON = re.compile(r"[a-z][a-z0-9_]*: \S")
# What a reader says of one garbled record: a line that is no document, a WARC record that does not frame.
GARBLED_REASONS = {"malformed_json", "invalid_utf8", "invalid_unicode", "missing_text", "not_an_object",
                   "text_not_string", "bad_content_length", "invalid_header", "not_a_record", "truncated_record"}


@dataclass
class Damage:
    """A damaged file: its name (which tells its format), bytes, the good records in it by the test's own count,
    and the reason categories its quarantine rows must have, in order of position (one per damage)."""

    name: str
    data: bytes
    kept: int
    reasons: list[str]
    options: dict = field(default_factory=dict)  # reader options (a text file's unit)
    # Rows beside `reasons` for records the damage garbled (what a corrupt member decompressed to before its
    # decompressor noticed: gzip -d gives the same bytes), each with the reason its reader gives such a record, all
    # at or after `garbled_from`; None: as many as the garbled stretch holds.
    garbled: int | None = 0
    garbled_from: int = 0


@dataclass
class Outcome:
    kept: dict[str, int]  # documents by source label
    reasons: dict[str, list[str]]  # quarantine reasons by source label, by position
    quarantine: list[dict]  # the quarantine rows (source, position, reason, raw)
    run_dir: Path


def categories(reasons: list[str]) -> list[str]:
    return [reason.split(":", 1)[0] for reason in reasons]


def run_refinery(folder: Path, files: dict[str, Damage], cli: bool = False, workers: int = 1) -> Outcome:
    """Run a recipe over the files (source label → file) with no stages; check that it finished and reconciles."""
    inputs = []
    for label, damage in files.items():
        (folder / damage.name).write_bytes(damage.data)
        inputs.append({"path": damage.name, "source": label, **damage.options})
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "robustness", "inputs": inputs, "stages": [], "output": "out"}))
    if cli:
        done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "-w", str(workers),
                               "-q"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout, done.stderr
        run_dir = folder / "out"
    else:
        summary = run_recipe(load_recipe(recipe), workers=workers, progress=False)
        assert summary.read == summary.kept + summary.removed + summary.quarantined
        run_dir = summary.run_dir
    (read,) = sql.query(run_dir, "SELECT docs_in, kept, quarantined FROM stats WHERE stage = 'read'").to_pylist()
    counted = sql.query(run_dir, "SELECT source, count(*) AS n FROM docs GROUP BY source").to_pylist()
    kept = {row["source"]: row["n"] for row in counted}
    rows = sql.query(run_dir, "SELECT source, position, reason, raw FROM quarantine ORDER BY source, position, "
                              "reason").to_pylist()
    assert read["docs_in"] == read["kept"] + read["quarantined"] == sum(kept.values()) + len(rows)
    reasons: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        assert REASON.match(row["reason"]), row["reason"]
        reasons[row["source"]].append(row["reason"])
    return Outcome({label: kept.get(label, 0) for label in files}, reasons, rows, run_dir)


def check(folder: Path, damage: Damage, neighbour: Damage, cli: bool = False) -> Outcome:
    """The acceptance of one kind of damage: see the module docstring."""
    outcome = run_refinery(folder, {"damaged": damage, "neighbour": neighbour}, cli)
    rows = [(row["reason"].split(":", 1)[0], row["position"]) for row in outcome.quarantine
            if row["source"] == "damaged"]
    garbled = [(c, p) for c, p in rows if c not in damage.reasons] if damage.garbled != 0 else []
    assert [c for c, _ in rows if (c, _) not in garbled] == damage.reasons, outcome.reasons["damaged"]
    assert all(c in GARBLED_REASONS and p >= damage.garbled_from for c, p in garbled), garbled
    assert damage.garbled is None or len(garbled) == damage.garbled
    assert outcome.kept["damaged"] == damage.kept
    assert outcome.kept["neighbour"] == neighbour.kept and not outcome.reasons["neighbour"]
    return outcome


def flip(data: bytes, at: int, size: int = 8) -> bytes:
    """`size` bytes at `at` inverted, as a bad sector or a bit-rotted block leaves them."""
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + size]) + data[at + size :]
