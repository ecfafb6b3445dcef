"""Shared fixtures: the real data in ../shared/data, and recipes written into a temporary folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFINERY_SHARED_DATA", REPO.parent / "shared" / "data"))
MISSING_DATA = (f"the real test data is not at {SHARED_DATA}: the tests read it from the folder shared/data beside "
                f"the checkout ({REPO.parent / 'shared' / 'data'}), or from the folder that the REFINERY_SHARED_DATA "
                "environment variable names; put it there or set the variable")


_OWN_CACHE: list[str] = []  # the cache folder this process made for the session (and removes at its end)


def pytest_configure(config: pytest.Config) -> None:
    """Stop the whole session at once, with one message, when the data is missing: almost every test needs it,
    and hundreds of identical errors (and a demo running for minutes) would hide the cause. Give the session its
    own Refinery cache (the evaluation index), shared by every test process and the runs they start, never the
    user's."""
    if not SHARED_DATA.is_dir():
        pytest.exit(MISSING_DATA, returncode=pytest.ExitCode.USAGE_ERROR)
    if "REFINERY_CACHE" not in os.environ:  # test processes inherit it from the process that started them
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="refinery-test-cache-"))
        os.environ["REFINERY_CACHE"] = _OWN_CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="module")
def s3(tmp_path_factory, data_dir) -> Iterator[dict]:
    """A real S3 server (moto's) with the shared data uploaded, and the environment pointing at it (s3_server.py)."""
    import s3_server

    yield from s3_server.serve(tmp_path_factory, data_dir)


@pytest.fixture
def write_recipe(tmp_path: Path):
    """Write a recipe YAML into tmp_path and return its path."""

    def write(inputs: list, stages: list | None = None, name: str = "test", **extra) -> Path:
        recipe = {"name": name, "inputs": inputs, "stages": stages or [], "output": extra.pop("output", "out"),
                  **extra}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread, and other processes share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



@pytest.fixture(scope="module")
def shakespeare_shards(data_dir, tmp_path_factory) -> Path:
    """Token shards of the first 60,000 characters of Tiny Shakespeare, a paragraph a document, a 300-token BPE:
    enough for a tiny model to train a few steps on."""
    from refinery.pipelines.engine.recipe import load_recipe
    from refinery.pipelines.engine.run import run_recipe

    folder = tmp_path_factory.mktemp("shakespeare")
    (folder / "text.txt").write_text((data_dir / "text/tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000])
    recipe = {"name": "shakespeare", "output": "out", "inputs": [{"path": "text.txt", "unit": "paragraph"}],
              "stages": [{"tokenize": {"vocab_size": 300, "validation_fraction": 0.1}}]}
    (folder / "r.yaml").write_text(yaml.safe_dump(recipe))
    return run_recipe(load_recipe(folder / "r.yaml"), workers=1, progress=False).run_dir / "tokens"
