"""Bundled recipes run by name on a user's files, through the real CLI: `refinery recipes`, `refinery run NAME`,
--input, --output, --dry-run; nothing written inside the package."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

from refinery.pipelines.commands.bundled import RECIPES_DIR

DATA = Path(__file__).resolve().parents[1] / "../shared/data"
WARC = (DATA / "warc").resolve()


def refinery(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refinery.pipelines", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def package_files() -> set[Path]:
    return set(RECIPES_DIR.rglob("*"))


def scalar(run_dir: Path, query: str, cwd: Path) -> int:
    result = refinery("sql", str(run_dir), query, "-f", "csv", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return int(list(csv.reader(io.StringIO(result.stdout)))[1][0])


def assert_reconciles(run_dir: Path, stdout: str, cwd: Path) -> None:
    """read = kept + removed + quarantined, by the summary line and by `refinery sql` (records a reader skips by
    design, WARC requests or metadata, are counted apart and are not documents read)."""
    read, kept, removed, quarantined = (int(n.replace(",", "")) for n in re.search(
        r"read ([\d,]+) records → kept ([\d,]+), removed ([\d,]+), quarantined ([\d,]+)", stdout).groups())
    assert scalar(run_dir, "SELECT count(*) FROM docs", cwd) == kept
    assert scalar(run_dir, "SELECT count(*) FROM removed", cwd) == removed
    assert scalar(run_dir, "SELECT count(*) FROM quarantine", cwd) == quarantined
    assert scalar(run_dir, "SELECT docs_in FROM stats WHERE stage = 'read'", cwd) == read
    assert read == kept + removed + quarantined
    assert kept > 0


def test_recipes_lists_the_bundled_recipes_and_their_files(tmp_path):
    result = refinery("recipes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("web", "instructions"):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 20  # its first comment line says what it does
        assert str(RECIPES_DIR / f"{name}.yaml") in result.stdout
    assert "refinery run NAME" in result.stdout


def test_run_instructions_by_name_writes_to_the_current_folder(tmp_path):
    before = package_files()
    result = refinery("run", "instructions", "-q", "--workers", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "./out/instructions" in result.stdout  # says where it writes when it starts
    run_dir = tmp_path / "out/instructions"
    assert (run_dir / "manifest.json").is_file() and list((run_dir / "tokens").rglob("*.bin"))
    assert_reconciles(run_dir, result.stdout, tmp_path)
    assert package_files() == before


def test_run_web_by_name_on_warc_and_wet(tmp_path):
    before = package_files()
    result = refinery("run", "web", "--input", str(WARC / "*.warc.gz"), "--input", str(WARC / "*.wet.gz"),
                      "--output", "out/web", "-q", "--workers", "2", "--no-report", cwd=tmp_path)
    assert package_files() == before
    assert result.returncode == 0, result.stderr
    assert_reconciles(tmp_path / "out/web", result.stdout, tmp_path)


def test_input_and_output_override_a_recipe_file_relative_to_the_current_folder(tmp_path):
    """--input (repeatable, globs, WARC and WET) and --output replace a recipe's own, relative to the current folder,
    while the recipe's own relative paths (here a stage's evals) still start at the recipe's folder."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "evals").symlink_to((DATA / "evals").resolve())
    (recipes / "small.yaml").write_text(
        "name: small\ninputs:\n  - path: nowhere/*.jsonl\nstages:\n  - extract: {mode: fast}\n"
        "  - exact_dedup: {}\n  - decontaminate: {evals: [evals]}\noutput: out/small\n")
    work = tmp_path / "work"
    (work / "crawl").mkdir(parents=True)
    for name in ("cc-main-2024-22-whirlwind.warc.gz", "cc-main-2016-50-fragment3.wet.gz"):
        (work / "crawl" / name).symlink_to(WARC / name)
    result = refinery("run", "../recipes/small.yaml", "--input", "crawl/*.warc.gz", "--input", "crawl/*.wet.gz",
                      "--output", "out/mine", "-q", "--workers", "2", "--no-report", cwd=work)
    assert result.returncode == 0, result.stderr
    assert not (recipes / "out").exists()
    assert_reconciles(work / "out/mine", result.stdout, work)
    sources = scalar(work / "out/mine", "SELECT count(DISTINCT source) FROM docs", work)
    assert sources == 2  # both the WARC and the WET file were read


def test_dry_run_prints_the_plan_and_files_and_writes_nothing(tmp_path):
    before = package_files()
    result = refinery("run", "web", "--input", str(WARC / "*.warc.gz"), "--input", str(WARC / "*.wet.gz"),
                      "--output", "out/web", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plan of web")
    assert "barrier" in result.stdout and "would read" in result.stdout
    assert str(WARC / "cc-main-2016-50-fragment3.wet.gz") in result.stdout
    assert str(tmp_path / "out/web") in result.stdout and "nothing written" in result.stdout
    assert list(tmp_path.iterdir()) == [] and package_files() == before


def test_instructions_dry_run_resolves_its_inputs_beside_the_recipe(tmp_path):
    result = refinery("run", "instructions", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not planned" not in result.stdout
    assert str((DATA / "instructions/belle_dev1k_zh.json").resolve()) in result.stdout
    assert str(tmp_path / "out/instructions") in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_errors_name_the_flag(tmp_path):
    missing = refinery("run", "web", "--input", "crawl/*.warc.gz", "--input", "nope.jsonl", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--input 'crawl/*.warc.gz': no file matches" in missing.stderr
    assert "--input 'nope.jsonl'" in missing.stderr  # every bad input at once
    unknown = refinery("run", "wbe", cwd=tmp_path)
    assert unknown.returncode == 2 and "bundled recipe" in unknown.stderr and "web" in unknown.stderr
    (tmp_path / "notes.xyz").write_text("x")
    format_error = refinery("run", "web", "--input", "notes.xyz", "--dry-run", cwd=tmp_path)
    assert format_error.returncode == 2 and "--input 'notes.xyz'" in format_error.stderr + format_error.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.xyz"]


def test_web_recipe_input_glob_matches_warc_and_wet(tmp_path):
    """The bundled web recipe's own input reads WARC and WET (its comment says so)."""
    import glob

    import yaml

    pattern = yaml.safe_load((RECIPES_DIR / "web.yaml").read_text())["inputs"][0]["path"]
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    names = ["a.warc.gz", "b.wet.gz", "CC-MAIN-1.warc.wet.gz", "c.warc.wat.gz", "notes.txt.gz"]
    for name in names:
        (crawl / name).write_bytes(b"")
    matched = sorted(Path(p).name for p in glob.glob(str(tmp_path / pattern)))
    assert {"a.warc.gz", "b.wet.gz", "CC-MAIN-1.warc.wet.gz"} <= set(matched)
    assert "notes.txt.gz" not in matched
