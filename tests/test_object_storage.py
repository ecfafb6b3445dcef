"""Recipe inputs on object storage, against a real S3 server (moto's, started here on 127.0.0.1).

Real files from the shared data are uploaded into a bucket; recipes read them by s3:// URL (globs, single objects,
byte-range tasks) and must write what the same recipe writes over the local files. Only the quarantine's `file`
column differs, by design: it says where each record came from, the URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from s3_server import BUCKET, forget_clients

from refinery.corpora import storage
from refinery.corpora.readers import InputError
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import RunError, run_recipe

WEB_RECIPE = Path(__file__).resolve().parents[1] / "pipelines/recipes/web.yaml"
TASK_SIZE = "64KB"  # c4_demo.jsonl (730 KB) is read as a dozen byte ranges, the Parquet file as several tasks
# What the engine compares byte for byte; stats and the manifest name the inputs, so they differ by design.
COMPARED = ("data", "removed", "quarantine", "tokens")


def _write(folder: Path, recipe: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def _mixed_recipe(root: str, tables: str, output: Path) -> dict:
    """Every format with a reader that reads files: WARC (a damaged one too), plain JSONL in byte ranges, gzipped
    JSONL, Parquet by row groups, Wikipedia dumps, an instruction set."""
    return {
        "name": "mixed",
        "inputs": [{"path": f"{root}/warc/*.warc.gz"}, {"path": f"{root}/warc/bad/clipped-record.warc.gz"},
                   {"path": f"{root}/text/c4_demo.jsonl"}, {"path": f"{root}/text/cc_en_head-*.jsonl.gz"},
                   {"path": f"{tables}/c4_rows.parquet"}, {"path": f"{root}/wikipedia/*.bz2", "format": "wikipedia"},
                   {"path": f"{root}/instructions/alpaca_en_demo.json"}],
        "stages": [{"length_filter": {"min_words": 20}}],
        "output": str(output),
        "task_size": TASK_SIZE,
    }


def _files(run: Path) -> dict[str, Path]:
    return {str(p.relative_to(run)): p for sub in COMPARED for p in sorted((run / sub).rglob("*")) if p.is_file()}


def _assert_same_output(local: Path, remote: Path, url_of: dict[str, str]) -> None:
    """Every file under data/, removed/, quarantine/ and tokens/ is byte for byte the same; a quarantine table is
    the same once its `file` column (the URL on one side, the path on the other) is mapped."""
    ours, theirs = _files(local), _files(remote)
    assert list(ours) == list(theirs) and ours
    for name, path in ours.items():
        if name.startswith("quarantine/"):
            table, remote_table = pq.read_table(path), pq.read_table(theirs[name])
            files = [url_of[f] for f in table.column("file").to_pylist()]
            assert remote_table.column("file").to_pylist() == files
            index = table.schema.get_field_index("file")
            assert remote_table.equals(table.set_column(index, table.schema.field(index), pa.array(files, pa.string())))
        else:
            assert path.read_bytes() == theirs[name].read_bytes(), name


def _url_map(data_dir: Path, tables: Path) -> dict[str, str]:
    mapping = {str(p): f"s3://{BUCKET}/{p.relative_to(data_dir)}" for p in data_dir.rglob("*") if p.is_file()}
    return mapping | {str(tables / "c4_rows.parquet"): f"s3://{BUCKET}/tables/c4_rows.parquet"}


@pytest.fixture(scope="module")
def mixed_local(s3, data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed-local")
    recipe = _write(folder, _mixed_recipe(str(data_dir), str(s3["tables"]), folder / "out"))
    return run_recipe(load_recipe(recipe), workers=2, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_format_reads_from_s3_as_from_disk(s3, mixed_local, data_dir, tmp_path, workers):
    root = f"s3://{BUCKET}"
    recipe = _write(tmp_path, _mixed_recipe(root, f"{root}/tables", tmp_path / "out"))
    summary = run_recipe(load_recipe(recipe), workers=workers, progress=False)
    assert summary.read == summary.kept + summary.removed + summary.quarantined
    assert (summary.read, summary.kept, summary.removed, summary.quarantined) == (
        mixed_local.read, mixed_local.kept, mixed_local.removed, mixed_local.quarantined)
    assert summary.quarantined > 0 and summary.removed > 0  # the clipped WARC record, short documents
    _assert_same_output(mixed_local.run_dir, summary.run_dir, _url_map(data_dir, s3["tables"]))
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    ranges = [t for t in manifest["tasks"] if t["path"] == f"{root}/text/c4_demo.jsonl"]
    assert len(ranges) > 5 and ranges[1]["start"] > 0  # plain JSONL on S3 is read in byte ranges
    assert len([t for t in manifest["tasks"] if t["path"] == f"{root}/tables/c4_rows.parquet"]) > 1


@pytest.fixture(scope="module")
def web_inputs(data_dir):
    """The web recipe as tests/test_web_recipe.py prepares it, its inputs under `root`."""

    def prepare(root: str, output: Path) -> Path:
        recipe = yaml.safe_load(WEB_RECIPE.read_text())
        recipe["inputs"] = [{"path": f"{root}/warc/*.*"}, {"path": f"{root}/warc/bad/*"}]
        recipe["stages"][-1]["tokenize"]["vocab_size"] = 1000  # the sample is small
        next(s for s in recipe["stages"] if "decontaminate" in s)["decontaminate"]["evals"] = [str(data_dir / "evals")]
        recipe["output"] = str(output / "out")
        return _write(output, recipe)

    return prepare


@pytest.fixture(scope="module")
def web_local(s3, web_inputs, data_dir, tmp_path_factory):
    return run_recipe(load_recipe(web_inputs(str(data_dir), tmp_path_factory.mktemp("web-local"))), workers=2,
                      progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_web_recipe_over_s3_writes_what_it_writes_over_disk(s3, web_local, web_inputs, data_dir, tmp_path, workers):
    summary = run_recipe(load_recipe(web_inputs(f"s3://{BUCKET}", tmp_path)), workers=workers, progress=False)
    assert summary.read == summary.kept + summary.removed + summary.quarantined
    assert (summary.read, summary.kept, summary.removed, summary.quarantined) == (
        web_local.read, web_local.kept, web_local.removed, web_local.quarantined)
    assert (summary.run_dir / "tokens/train/meta.json").exists()
    _assert_same_output(web_local.run_dir, summary.run_dir, _url_map(data_dir, Path("/nowhere")))


def test_manifest_records_urls_with_etags_and_a_changed_object_is_refused(s3, data_dir, tmp_path):
    client, key = s3["client"], "changing/c4_demo.jsonl"
    client.upload_file(str(data_dir / "text/c4_demo.jsonl"), BUCKET, key)
    url = f"s3://{BUCKET}/{key}"
    recipe = _write(tmp_path, {"name": "etag", "inputs": [{"path": url}], "output": "out", "task_size": TASK_SIZE})
    summary = run_recipe(load_recipe(recipe), workers=1, progress=False)
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    etag = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    assert manifest["inputs"] == [{"path": url, "bytes": (data_dir / "text/c4_demo.jsonl").stat().st_size,
                                   "etag": etag}]
    assert run_recipe(load_recipe(recipe), workers=1, progress=False).kept == summary.kept  # unchanged: accepted
    # Other bytes of the same size: only the ETag tells.
    client.put_object(Bucket=BUCKET, Key=key, Body=(data_dir / "text/c4_demo.jsonl").read_bytes().replace(
        b"the ", b"The ", 1))
    assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == manifest["inputs"][0]["bytes"]
    with pytest.raises(RunError, match="holds a run of a different recipe or different inputs"):
        run_recipe(load_recipe(recipe), workers=1, progress=False)


def _input_error(tmp_path: Path, data_dir: Path, path: str) -> str:
    """The error of a recipe whose first input is a local file and whose second, on recipe line 4, is `path`."""
    recipe = _write(tmp_path, {"name": "bad", "inputs": [{"path": str(data_dir / "text/c4_demo.jsonl")},
                                                         {"path": path}], "output": "out"})
    assert recipe.read_text().splitlines()[3] == f"- path: {path}"
    with pytest.raises(InputError) as caught:
        run_recipe(load_recipe(recipe), workers=1, progress=False)
    assert str(caught.value).startswith(f"{recipe}:4: ") and str(caught.value).count("\n") == 0
    assert not (tmp_path / "out").exists()
    return str(caught.value)


def test_a_glob_that_matches_nothing_names_the_recipe_line_and_the_prefix(s3, tmp_path, data_dir):
    message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/warc/*.arc.gz")
    assert f"no file matches 's3://{BUCKET}/warc/*.arc.gz'" in message
    assert f"s3://{BUCKET}/warc/ holds no object of that name" in message
    message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/crawl-2024/*.warc.gz")
    assert f"nothing is stored under s3://{BUCKET}/crawl-2024/" in message and "AWS_ENDPOINT_URL" in message


def test_a_missing_bucket_or_object_or_a_folder_is_named(s3, tmp_path, data_dir):
    message = _input_error(tmp_path, data_dir, "s3://no-such-bucket/crawl/*.warc.gz")
    assert "there is no bucket 'no-such-bucket'" in message and "AWS_ACCESS_KEY_ID" in message
    message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/text/c4_demo.jsonl.gz")
    assert f"input s3://{BUCKET}/text/c4_demo.jsonl.gz does not exist: s3://{BUCKET}/text/ holds no object" in message
    message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/warc")
    assert f"input s3://{BUCKET}/warc is a folder (a prefix), not a file" in message and "/warc/*" in message


def test_without_s3fs_the_error_says_what_to_install(s3, tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now fails, as where it is not installed
    message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/warc/*.warc.gz")
    assert "needs the s3fs package, which is not installed: pip install 'refinery[s3]'" in message


def test_without_credentials_the_error_names_the_variables(s3, tmp_path, data_dir, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    forget_clients()
    try:
        message = _input_error(tmp_path, data_dir, f"s3://{BUCKET}/warc/*.warc.gz")
    finally:
        monkeypatch.undo()
        forget_clients()
    assert message.count("s3://") == 1 and "no credentials to read" in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE" in message and "FSSPEC_S3_ANON" in message


def test_object_storage_helpers(s3, data_dir):
    url = f"s3://{BUCKET}/warc/bad/*.wet.gz"
    matches = storage.expand(url, Path("/unused"))
    assert matches == sorted(matches) and all(m.startswith(f"s3://{BUCKET}/warc/bad/") for m in matches)
    assert [Path(m).name for m in matches] == sorted(p.name for p in (data_dir / "warc/bad").glob("*.wet.gz"))
    local = data_dir / "text/c4_demo.jsonl"
    remote = f"s3://{BUCKET}/text/c4_demo.jsonl"
    assert storage.size(remote) == local.stat().st_size and storage.is_remote(remote)
    assert storage.read_prefix(remote, 100) == local.read_bytes()[:100]
    with storage.open_input(remote) as file:  # seekable: byte-range tasks start mid-object
        file.seek(5000)
        assert file.read(300) == local.read_bytes()[5000:5300]
    assert not storage.is_remote(f"file://{local}") and storage.local_path(f"file://{local}") == str(local)


def test_file_urls_read_as_plain_paths(data_dir, tmp_path):
    folder = data_dir / "text"
    recipe = {"name": "files", "inputs": [{"path": f"file://{folder}/cc_en_head-*.jsonl.gz"}], "output": "out"}
    summary = run_recipe(load_recipe(_write(tmp_path / "url", recipe)), workers=1, progress=False)
    recipe["inputs"] = [{"path": f"{folder}/cc_en_head-*.jsonl.gz"}]
    plain = run_recipe(load_recipe(_write(tmp_path / "plain", recipe)), workers=1, progress=False)
    assert summary.kept == plain.kept > 0
    assert _files(summary.run_dir).keys() == _files(plain.run_dir).keys()
    for name, path in _files(plain.run_dir).items():
        assert path.read_bytes() == (summary.run_dir / name).read_bytes()
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert [i["path"] for i in manifest["inputs"]] == [f"file://{p}" for p in sorted(folder.glob("cc_en_head-*"))]
    assert set(manifest["inputs"][0]) == {"path", "bytes", "mtime_ns"}
    inside = tmp_path / "inside/out/x.jsonl"
    inside.parent.mkdir(parents=True)
    inside.write_text('{"text": "a document"}\n')
    with pytest.raises(RunError, match="contains the input"):  # a file:// input is still checked against output
        run_recipe(load_recipe(_write(tmp_path / "inside", {**recipe, "inputs": [{"path": f"file://{inside}"}]})),
                   workers=1, progress=False)


def test_an_unreachable_hub_fails_at_once_naming_the_url(tmp_path):
    """No network here: an hf:// input must fail fast with the URL, not hang. The Hub's endpoint is pointed at a
    closed port on this machine, so the test is the same with or without a network."""
    url = "hf://datasets/refinery-test/no-such-set/*.jsonl"
    recipe = _write(tmp_path, {"name": "hub", "inputs": [{"path": url}], "output": "out"})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed.getsockname()[1]}", "HF_HUB_ETAG_TIMEOUT": "5",
               "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
        done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "run", str(recipe)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{recipe}:3: cannot read {url}" in done.stderr and "HF_ENDPOINT" in done.stderr

