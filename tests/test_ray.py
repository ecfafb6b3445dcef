"""`--executor ray` on a real multi-node Ray cluster started here (a head and 2 worker nodes, one CPU each):
byte-identical output to the local executor, a worker node lost mid-run, the driver killed with SIGKILL, a task
that raises. Tests that need no cluster (the registry without Ray, the errors) come first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from refinery.corpora.atomic import is_temp_name, read_json
from refinery.pipelines.engine.executors import Executor, TaskFailed, create_executor
from refinery.pipelines.engine.layout import RunLayout
from refinery.pipelines.engine.recipe import load_recipe, parse_recipe
from refinery.pipelines.engine.run import RunSummary, describe_summary, run_recipe

WEB_RECIPE = Path(__file__).resolve().parents[1] / "pipelines/recipes/web.yaml"
NO_RAY = 'Ray is not installed: pip install -e ".[ray]" (CI installs it, and runs these tests)'
CLI = [sys.executable, "-m", "refinery.pipelines.commands.cli", "run"]


def need_ray() -> None:
    """Skip without Ray, except where REFINERY_REQUIRE_RAY is set (.ci/run sets it): there these tests must run."""
    if os.environ.get("REFINERY_REQUIRE_RAY"):
        import ray  # noqa: F401  (an ImportError here fails the test, as it should in CI)
    else:
        pytest.importorskip("ray", reason=NO_RAY)


def dedup_recipe(data_dir: Path) -> dict[str, Any]:
    """Exact + MinHash dedup and a trained tokenizer over real text, cut into ~25 tasks of 64 KB."""
    text = data_dir / "text"
    inputs = [{"path": str(text / "c4_demo.jsonl")}, {"path": str(text / "cc_en_head-*.jsonl.gz")},
              {"path": str(text / "redpajama-pile-samples/*.jsonl")}]
    stages = [{"length_filter": {"min_words": 5}}, {"exact_dedup": {}}, {"minhash_dedup": {}},
              {"tokenize": {"tokenizer": "train", "vocab_size": 1000}}]
    return {"inputs": inputs, "stages": stages, "task_size": "64KB"}


def output_files(run_dir: Path, temp: bool = False) -> dict[str, bytes]:
    """Every file a run delivers (temp=True: only the temp files a killed writer left, which the next run of the
    folder deletes)."""
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for folder in ("data", "removed", "quarantine", "tokens") for p in sorted((run_dir / folder).rglob("*"))
            if p.is_file() and is_temp_name(p) == temp}


def reconciles(summary: RunSummary) -> bool:
    return summary.read == summary.kept + summary.removed + summary.quarantined


def markers(run_dir: Path, segment: int = 0) -> int:
    return len(list((RunLayout(run_dir).segment(segment) / "done").glob("task-*.json")))


class Watching(Executor):
    """Hands each pass to another executor and records what the engine sees: records read as they reach
    `on_progress`, tasks as they finish. `hook(pass_number, finished)` runs before a pass (finished=0) and after
    each finished task, in the driver, so a test can act at a chosen point of a run; `wrap` wraps the task
    function."""

    name = "test-watching"

    def __init__(self, inner: Executor, hook: Callable[[int, int], None] | None = None,
                 wrap: Callable[[Callable], Callable] | None = None):
        self.inner, self.hook, self.wrap = inner, hook or (lambda p, n: None), wrap or (lambda fn: fn)
        self.events: list[tuple[int, str, int]] = []
        self.passes = 0

    def map(self, fn: Callable, jobs: Sequence[Any], on_progress: Callable[[int], None],
            describe: Callable[[Any], str]) -> Iterator[tuple[Any, Any]]:
        self.passes += 1
        number = self.passes

        def progress(n: int) -> None:
            self.events.append((number, "read", n))
            on_progress(n)

        self.hook(number, 0)
        for finished, (job, result) in enumerate(self.inner.map(self.wrap(fn), jobs, progress, describe), 1):
            # (a partitioned finish is a map of its own, of FinishJobs, numbered by partition)
            self.events.append((number, "done", getattr(job, "task_index", getattr(job, "part", -1))))
            self.hook(number, finished)
            yield job, result


# Without a cluster.

def test_the_registry_imports_without_ray_and_says_how_to_install_it():
    probe = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
             "from refinery.pipelines.engine.executors import EXECUTORS, create_executor\n"
             "assert 'ray' in EXECUTORS\n"
             "try:\n    create_executor('ray')\nexcept ImportError as err:\n    print(err)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert 'pip install "refinery[ray]"' in done.stdout and '-e ".[ray]"' in done.stdout
    cheap = subprocess.run([sys.executable, "-c", "import sys, refinery.pipelines.engine.executors; "
                            "print('ray' in sys.modules)"], capture_output=True, text=True, check=True)
    assert cheap.stdout.strip() == "False"


def test_address_belongs_to_the_ray_executor(data_dir, write_recipe, capsys):
    from refinery.pipelines.commands.cli import main

    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}])
    assert main(["run", str(recipe), "--address", "auto"]) == 2
    assert "--address applies to --executor ray" in capsys.readouterr().err
    assert not (recipe.parent / "out").exists()


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_address_where_nothing_listens_fails_at_once_saying_so(how, data_dir, write_recipe):
    need_ray()
    recipe = write_recipe([{"path": str(data_dir / "text/c4_demo.jsonl")}])
    flags, env = (["--address", "127.0.0.1:1"], {}) if how == "--address" else ([], {"RAY_ADDRESS": "127.0.0.1:1"})
    started = time.perf_counter()
    done = subprocess.run(CLI + [str(recipe), "--executor", "ray", *flags], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 2 and "nothing answers at 127.0.0.1:1" in done.stderr
    assert time.perf_counter() - started < 60 and not (recipe.parent / "out").exists()


# On a cluster: a head and two worker nodes on this machine, shared by the tests below.

@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    need_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def ray_executor(cluster) -> Iterator[Executor]:
    """Connected by the executor itself, which therefore disconnects on close()."""
    import ray

    executor = create_executor("ray", address=cluster.address)
    assert ray.is_initialized() and executor.workers is None  # None: as many in flight as the cluster has CPUs
    yield executor
    executor.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> tuple[RunSummary, dict[str, bytes]]:
    """The dedup recipe run once by the local executor: what every Ray run below must reproduce."""
    text = yaml.safe_dump({"name": "dedup", **dedup_recipe(data_dir), "output": "out"})
    loaded = parse_recipe(text, "dedup.yaml", tmp_path_factory.mktemp("local"))
    summary = run_recipe(loaded, progress=False, executor=create_executor("local", workers=2))
    return summary, output_files(summary.run_dir)


def dedup_yaml(data_dir: Path, write_recipe, name: str = "dedup") -> Path:
    return write_recipe(name=name, **dedup_recipe(data_dir))


def test_dedup_and_tokenize_on_ray_equal_local_byte_for_byte(cluster, ray_executor, reference, data_dir,
                                                             write_recipe):
    local, files = reference
    watching = Watching(ray_executor)
    summary = run_recipe(load_recipe(dedup_yaml(data_dir, write_recipe)), progress=False, executor=watching)
    assert output_files(summary.run_dir) == files and output_files(summary.run_dir, temp=True) == {}
    assert {"data", "removed", "tokens"} <= {name.split("/")[0] for name in files}
    assert (summary.read, summary.kept, summary.removed, summary.quarantined) == (
        local.read, local.kept, local.removed, local.quarantined) and reconciles(summary)
    first = [e for e in watching.events if e[0] == 1]
    finished = [i for i, (_, kind, _) in enumerate(first) if kind == "done"]
    assert len(finished) >= 20  # many tasks
    # Records read reach the bar while the pass runs, and all of them by its end.
    assert any(kind == "read" for _, kind, _ in first[:finished[-1]])
    assert sum(n for _, kind, n in first if kind == "read") == summary.read


def test_the_web_recipe_with_bad_input_on_ray_equals_local(cluster, ray_executor, data_dir, tmp_path):
    recipe = yaml.safe_load(WEB_RECIPE.read_text(encoding="utf-8"))
    warc = data_dir / "warc"
    recipe["inputs"] = [{"path": str(warc / "*.*")}, {"path": str(warc / "bad/*")}]
    recipe["stages"][-1]["tokenize"]["vocab_size"] = 1000  # the sample is small
    next(s for s in recipe["stages"] if "decontaminate" in s)["decontaminate"]["evals"] = [str(data_dir / "evals")]
    runs = {}
    for name, executor in [("local", create_executor("local", workers=2)), ("ray", ray_executor)]:
        recipe["output"] = str(tmp_path / name)
        loaded = parse_recipe(yaml.safe_dump(recipe), "web.yaml", WEB_RECIPE.parent)
        runs[name] = run_recipe(loaded, progress=False, executor=executor)
    local, on_ray = output_files(runs["local"].run_dir), output_files(runs["ray"].run_dir)
    assert on_ray == local and any(name.startswith("quarantine/") for name in local)
    assert runs["ray"].quarantined == runs["local"].quarantined > 0 and reconciles(runs["ray"])


class Stall:
    """Wraps the task function, in the Ray workers: on the nodes named in `where`, the first task stops for good
    (until its node is removed) either in the middle ("middle": at its first progress report, its outputs cleared
    and its writers open) or at the end ("end": done-marker written, result not yet returned), after leaving a
    flag file `NODE_ID SEGMENT TASK` that tells the test where it stopped. Tasks on the other nodes wait until
    every named node has stopped (at most `patience` seconds from the wrapper's creation): on a busy machine a
    node whose worker starts late would otherwise find the run already over. Sent to Ray by value (see the
    test)."""

    def __init__(self, fn: Callable, flags: Path, where: dict[str, str], patience: float = 120):
        self.fn, self.flags, self.where = fn, flags, where
        self.deadline = time.time() + patience

    def __call__(self, job: Any, report: Callable[[int], None]) -> Any:
        import ray

        node = ray.get_runtime_context().get_node_id()
        when = self.where.get(node)
        while when is None and len(list(self.flags.iterdir())) < len(self.where) and time.time() < self.deadline:
            time.sleep(0.05)

        def stop(n: int = 0) -> None:
            (self.flags / f"{node} {job.segment} {job.task_index}").touch()
            time.sleep(300)  # the test removes this node long before

        result = self.fn(job, stop if when == "middle" else report)
        if when == "end":
            stop()
        return result


def test_worker_nodes_lost_mid_run_change_nothing(cluster, ray_executor, reference, data_dir, write_recipe,
                                                   tmp_path):
    import ray

    # Both worker nodes are lost in pass 1 (the head, where the driver is, stays): one with a task halfway
    # through, one with a task that has written its done-marker but not yet returned. Ray retries both elsewhere.
    middle, end = sorted(cluster.worker_nodes, key=lambda n: n.node_id)
    flags = tmp_path / "flags"
    flags.mkdir()
    where = {middle.node_id: "middle", end.node_id: "end"}
    recipe = dedup_yaml(data_dir, write_recipe)
    layout = RunLayout(recipe.parent / "out")
    stopped: dict[str, tuple[int, int]] = {}
    marker_written: list[int] = []

    def remove_stopped_nodes() -> None:
        deadline = time.monotonic() + 120
        while len(stopped) < 2 and time.monotonic() < deadline:
            for flag in flags.iterdir():
                node, segment, task = flag.name.split()
                if node not in stopped:
                    stopped[node] = (int(segment), int(task))
                    if node == end.node_id:
                        marker_written.append(layout.segment_done(int(segment), int(task)).stat().st_mtime_ns)
                    cluster.remove_node(middle if node == middle.node_id else end, allow_graceful=False)
            time.sleep(0.02)

    watcher = threading.Thread(target=remove_stopped_nodes, daemon=True)
    watcher.start()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        watching = Watching(ray_executor, wrap=lambda fn: Stall(fn, flags, where))
        summary = run_recipe(load_recipe(recipe), progress=False, executor=watching)
        watcher.join()
        assert len(stopped) == 2 and not middle.any_processes_alive() and not end.any_processes_alive()
        assert output_files(summary.run_dir) == reference[1] and reconciles(summary)
        # The retry of the task that had finished found its marker and did not redo the work.
        segment, task = stopped[end.node_id]
        assert layout.segment_done(segment, task).stat().st_mtime_ns == marker_written[0]
        # The attempt killed halfway left temp files (never under a real name): the finished run removed them,
        # and a rerun of the folder changes nothing, every task being done.
        assert not list(layout.root.rglob(".*.tmp-*"))
        run_recipe(load_recipe(recipe), progress=False, executor=ray_executor)
        assert output_files(layout.root) == reference[1]
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        watcher.join()
        for _ in range(2 - len(cluster.worker_nodes)):  # the tests after this one have three nodes again
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()


def test_the_driver_killed_mid_run_resumes_with_identical_output(cluster, reference, data_dir, write_recipe):
    recipe = dedup_yaml(data_dir, write_recipe)
    run_dir = recipe.parent / "out"
    command = CLI + [str(recipe), "--executor", "ray", "--address", cluster.address, "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while markers(run_dir) < 5 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        output = driver.communicate(timeout=30)[0]
    assert driver.returncode == -signal.SIGKILL, output
    done_before = markers(run_dir)
    assert read_json(run_dir / "manifest.json")["status"] == "running" and 5 <= done_before < 25
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    resumed = int(rerun.stdout.split(" tasks already done")[0].rsplit(", ", 1)[1])
    print(f"killed with {done_before} tasks of pass 1 done; the rerun found {resumed} tasks already done")
    assert resumed >= done_before
    assert output_files(run_dir) == reference[1] and output_files(run_dir, temp=True) == {}
    assert read_json(run_dir / "manifest.json")["status"] == "complete"


def test_a_task_that_raises_names_itself_fails_the_run_and_a_fixed_rerun_resumes(
        cluster, ray_executor, reference, data_dir, write_recipe, tmp_path):
    recipe = dedup_yaml(data_dir, write_recipe)
    layout = RunLayout(recipe.parent / "out")
    # Pass 2 reads what pass 1 wrote: with task 3's part moved away, task 3 raises in its Ray worker.
    part, aside = layout.segment(0) / "part-00003.parquet", tmp_path / "aside.parquet"

    def hide_part(number: int, finished: int) -> None:
        if number == 2 and finished == 0:
            part.rename(aside)

    named = r"task 3 of pass 2 \(.*c4_demo.jsonl, bytes/rows \d+-\d+\) failed: FileNotFoundError"
    with pytest.raises(TaskFailed, match=named):
        run_recipe(load_recipe(recipe), progress=False, executor=Watching(ray_executor, hide_part))
    assert read_json(layout.manifest)["status"] == "failed"
    tasks = markers(layout.root, 0)
    assert markers(layout.root, 1) < tasks  # the tasks after the failure never ran
    aside.rename(part)  # the fix
    summary = run_recipe(load_recipe(recipe), progress=False, executor=ray_executor)
    assert summary.resumed_tasks >= tasks and "tasks already done" in describe_summary(summary)
    assert output_files(layout.root) == reference[1] and read_json(layout.manifest)["status"] == "complete"


def test_a_worker_that_cannot_load_the_task_says_what_the_nodes_need(cluster, ray_executor, tmp_path,
                                                                      monkeypatch):
    # A module only the driver can import: what a node without refinery (or with another version) meets.
    (tmp_path / "driver_only.py").write_text("def task(job, report):\n    return job\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    from driver_only import task

    with pytest.raises(TaskFailed, match=r"job [12] failed: WorkerEnvironmentError: .*No module named 'driver_only'"
                                         r".*every node needs refinery"):
        list(ray_executor.map(task, [1, 2], lambda n: None, lambda job: f"job {job}"))


def test_a_node_that_does_not_see_the_run_folder_says_so(cluster, ray_executor, tmp_path):
    from types import SimpleNamespace

    from refinery.pipelines.engine.segments import run_task

    # What a task meets on a node without the shared storage: a run folder that is not there (no manifest).
    job = SimpleNamespace(run_dir=str(tmp_path / "not-mounted"), segment=0, task_index=0)
    with pytest.raises(TaskFailed, match=r"FileNotFoundError: node .* does not see the run folder .*not-mounted.*NFS"):
        list(ray_executor.map(run_task, [job], lambda n: None, lambda job: "task 0"))


def test_close_leaves_a_connection_it_did_not_open(cluster, ray_executor):
    import ray

    borrowed = create_executor("ray")  # Ray is already connected (by ray_executor): this one only borrows it
    borrowed.close()
    assert ray.is_initialized()


def test_inputs_and_output_on_s3_through_ray_publish_what_a_local_run_writes(cluster, ray_executor, s3, data_dir,
                                                                             write_recipe, tmp_path, monkeypatch):
    from s3_server import BUCKET

    from refinery.corpora.remote_folder import published_files

    # The tasks reach the S3 server through the settings the driver has (the s3 fixture set them here, after the
    # cluster started): the executor passes them on.
    monkeypatch.setenv("REFINERY_STAGING", str(tmp_path / "staging"))
    url = f"s3://{BUCKET}/runs/on-ray"

    def recipe(root: str, output: str) -> Path:
        inputs = [{"path": f"{root}/text/c4_demo.jsonl"}, {"path": f"{root}/text/cc_en_head-*.jsonl.gz"}]
        stages = [{"length_filter": {"min_words": 50}}, {"exact_dedup": {}}, {"minhash_dedup": {}},
                  {"tokenize": {"tokenizer": "train", "vocab_size": 1000}}]
        return write_recipe(inputs, stages, name="s3" if "://" in root else "local", output=output, task_size="64KB")

    local = run_recipe(load_recipe(recipe(str(data_dir), "local-out")), progress=False,
                       executor=create_executor("local", workers=2))
    summary = run_recipe(load_recipe(recipe(f"s3://{BUCKET}", url)), progress=False, executor=ray_executor)
    assert summary.published_to == url and reconciles(summary)
    assert (summary.read, summary.kept, summary.removed) == (local.read, local.kept, local.removed)
    client = s3["client"]
    published = {entry["path"]: client.get_object(Bucket=BUCKET, Key=f"runs/on-ray/{entry['path']}")["Body"].read()
                 for entry in published_files(url)}
    expected = output_files(local.run_dir)
    assert {name: body for name, body in published.items() if name in expected} == expected
    assert {"data", "removed", "tokens"} <= {name.split("/")[0] for name in expected}
