"""Nothing a user owns is deleted or overwritten: --force deletes only what Refinery wrote, an output that
holds the recipe or an input is refused, symbolic links are never followed into a delete, and two runs on one
output never write at once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from refinery.pipelines.engine.layout import RunLayout, RunLock
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import RunError, run_recipe


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def c4(data_dir) -> str:
    return str(data_dir / "text/c4_demo.jsonl")


def run(recipe: Path, force: bool = False):
    return run_recipe(load_recipe(recipe), workers=1, force=force, progress=False)


def test_force_refuses_a_folder_that_is_not_a_run(c4, write_recipe, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes", encoding="utf-8")
    before = tree_hashes(notes)
    recipe = write_recipe([{"path": c4}], output="notes")
    for force in (False, True):
        with pytest.raises(RunError, match="is not a Refinery run") as err:
            run(recipe, force=force)
        assert ("--force deletes only a Refinery run" in str(err.value)) == force
    assert tree_hashes(notes) == before


def test_force_deletes_what_the_run_wrote_and_keeps_the_users_files(c4, write_recipe, tmp_path):
    recipe = write_recipe([{"path": c4}], [{"exact_dedup": {}}])
    first = run(recipe).run_dir
    (first / "README.txt").write_text("what this run is for", encoding="utf-8")
    (first / "data" / "stale.parquet").write_bytes(b"x")  # inside our folder: ours to delete
    summary = run(recipe, force=True)
    assert (first / "README.txt").read_text(encoding="utf-8") == "what this run is for"
    assert not (first / "data" / "stale.parquet").exists()
    assert summary.kept > 0 and summary.resumed_tasks == 0


@pytest.mark.parametrize("output", [".", "..", "data"])
def test_an_output_holding_the_recipe_or_an_input_is_refused(data_dir, write_recipe, tmp_path, output):
    inputs = tmp_path / "data"
    inputs.mkdir()
    (inputs / "c4.jsonl").write_bytes((data_dir / "text/c4_demo.jsonl").read_bytes())
    recipe = write_recipe([{"path": "data/c4.jsonl"}], output=output)
    before = tree_hashes(tmp_path)
    with pytest.raises(RunError, match="contains the (recipe|input)"):
        run(recipe, force=True)
    assert tree_hashes(tmp_path) == before


def test_a_symlinked_output_is_written_through_and_never_deleted_through(c4, write_recipe, tmp_path):
    target = tmp_path / "real-runs"
    target.mkdir()
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    recipe = write_recipe([{"path": c4}], output="link")
    run(recipe)
    assert (target / "manifest.json").exists()
    # A link inside the run folder that points at the user's files: --force unlinks it, never follows it.
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine", encoding="utf-8")
    (target / "tokens").symlink_to(keep, target_is_directory=True)
    run(recipe, force=True)
    assert (tmp_path / "link").is_symlink() and (target / "manifest.json").exists()
    assert (keep / "precious.txt").read_text(encoding="utf-8") == "mine"
    assert not (target / "tokens").exists()


def test_a_second_run_on_the_same_output_is_told_another_holds_it(c4, write_recipe):
    recipe = write_recipe([{"path": c4}])
    layout = RunLayout(load_recipe(recipe).output_dir)
    with RunLock(layout), pytest.raises(RunError, match="another refinery run .* is writing to"):
        run(recipe)
    assert run(recipe).kept > 0  # the lock goes with its holder


def test_the_cli_says_it_without_a_traceback(c4, write_recipe, tmp_path):
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "a.txt").write_text("a", encoding="utf-8")
    recipe = write_recipe([{"path": c4}], output="mine")
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "--force", "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not a Refinery run" in done.stderr and (notes / "a.txt").exists()
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe), "--workers", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "must be at least 1" in done.stderr


def test_demo_force_refuses_a_folder_of_the_users(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "demo", "--force", "-o", str(notes),
                           "--train-steps", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "is not a Refinery run" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
