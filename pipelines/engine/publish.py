"""Runs whose output is on object storage (`output: s3://bucket/runs/web`).

The run is built, resumed and locked in a local staging folder exactly as a local run is
(refinery.corpora.remote_folder.staging_folder: $REFINERY_STAGING or the user's cache; on a Ray cluster a folder
every node sees), then published: every delivered file is uploaded (a task uploads the parts it delivers before
its done-marker, recording them in work/published/; the driver uploads the rest), and the run's manifest.json,
listing each file with its size, is written last. The remote folder is a complete run once that index exists, and
it holds exactly the files the index lists (see RemoteFolder). Publishing again (a rerun, the report written after the
run) uploads only what changed since the last publication, and deletes only files an earlier index listed that
the new one does not: a user's own objects under the prefix are never touched.

The working files (work/: passes, done-markers, global stages' state) stay in staging: a rerun that finds its
staging folder resumes; one that does not redoes the run and publishes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refinery.corpora.atomic import is_temp_name, read_json, write_json
from refinery.corpora.remote_folder import INDEX, RemoteFolder
from refinery.pipelines.engine.layout import RunLayout


class PublishError(RuntimeError):
    """The remote output cannot take this run (someone else's objects, another run without --force)."""


def delivered_files(layout: RunLayout) -> list[str]:
    """What a run delivers, relative to its folder, sorted: everything but the working files, the lock and the
    manifest (which the index replaces)."""
    kept_out = {layout.work, layout.manifest, layout.lock}
    files: list[str] = []
    for entry in layout.entries() + [layout.card]:
        if entry in kept_out or not entry.exists():
            continue
        found = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        files += [str(p.relative_to(layout.root)) for p in found if not is_temp_name(p)]
    return sorted(set(files))


def check_remote_output(url: str, fingerprint: str, force: bool) -> None:
    """Refuse a remote output holding someone else's objects, or another run unless --force (which then loses
    its index at once, so no reader takes the half-replaced folder for a run)."""
    remote = RemoteFolder(url)
    index = remote.read_json(INDEX)
    if index is None:
        foreign = sorted(remote.sizes())
        if foreign:
            raise PublishError(f"{url} holds objects that are not a Refinery run ({foreign[0]}, …: no {INDEX}); "
                               "choose another `output:` (--output URL) or empty that prefix yourself")
        return
    if index.get("fingerprint") == fingerprint:
        return
    if not force:
        raise PublishError(f"{url} holds a run of a different recipe or different inputs; rerun with --force to "
                           "replace it (only the files its manifest lists are deleted), or set another `output:`")
    remote.remove([INDEX])
    remote.remove(_listed(index))


def publish_run(layout: RunLayout, url: str, progress: bool = True) -> int:
    """Upload what changed since the last publication, then the index; return the number of files uploaded."""
    remote = RemoteFolder(url)
    files = delivered_files(layout)
    record_path = layout.work / "published.json"
    record = read_json(record_path) if record_path.is_file() else {}
    for uploaded in sorted((layout.work / "published").glob("*.json")):  # what the tasks uploaded themselves
        record.update(read_json(uploaded))
    on_remote = remote.sizes()
    state = {name: _state(layout.root / name) for name in files}
    changed = [name for name in files if record.get(name) != state[name] or on_remote.get(name) != state[name][0]]
    index = {**read_json(layout.manifest), "files": [{"path": name, "bytes": state[name][0]} for name in files]}
    previous = remote.read_json(INDEX)
    if not changed and previous == index:
        return 0
    if previous is not None and changed:
        remote.remove([INDEX])  # the index goes first: a reader never sees one listing a file mid-upload
    with _bar(progress, sum(state[name][0] for name in changed), url) as bar:
        remote.upload(layout.root, changed, on_file=bar.update)
    remote.write_json(INDEX, index)
    write_json(record_path, state)
    current = set(files)
    remote.remove([name for name in _listed(previous or {}) if name not in current])
    return len(changed)


def record_uploaded(layout: RunLayout, url: str, files: list[Path], name: str) -> None:
    """Upload files of the run (a task's deliveries) and record their state, so publish_run skips them."""
    relatives = [str(path.relative_to(layout.root)) for path in files]
    RemoteFolder(url).upload(layout.root, relatives)
    write_json(layout.work / "published" / f"{name}.json",
               {relative: _state(path) for relative, path in zip(relatives, files)})


def _listed(index: dict[str, Any]) -> list[str]:
    return [entry["path"] for entry in index.get("files", [])]


def _state(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _bar(progress: bool, total: int, url: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"publishing to {url}", disable=not progress or not total,
                leave=False)
