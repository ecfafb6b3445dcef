"""minhash_dedup on real data: near-duplicates found (English, instructions, Chinese), every removal checked against
an independent exact Jaccard, counts reconcile, and the output is the same whatever the workers or interruptions."""

from __future__ import annotations

import json
import os
import re
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from stop_in_step import StopInStep

from refinery.pipelines.commands import sql
from refinery.pipelines.engine.recipe import load_recipe
from refinery.pipelines.engine.run import run_recipe
from refinery.pipelines.stages.neardup import lsh, resolve
from refinery.pipelines.stages.neardup.minhash import permutations, signatures
from refinery.pipelines.stages.neardup.setstore import Sets, pair_jaccard
from refinery.pipelines.stages.neardup.setstore import jaccard as set_jaccard
from refinery.pipelines.stages.neardup.shingles import cjk_mask, document_shingles, normalise, shingle_sets, word_tokens

DEMO = "text/redpajama-pile-samples/demo-dataset-deduplication.jsonl"


def reference_shingles(text: str, n: int = 5, cjk_n: int = 3) -> set[tuple[str, ...]]:
    """The documented shingling, written plainly: lowercase, digits → 0, runs of letters, marks and numbers are
    words; text with > 30% CJK characters is shingled by characters."""
    folded = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in re.sub(r"\d", "0", text.lower()))
    words = folded.split()
    chars = "".join(words)
    if len(re.findall(r"[\u3000-\u9fff\uac00-\ud7ff]", chars)) > 0.3 * len(chars):
        words, n = list(chars), cjk_n
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def jaccard(a: str, b: str) -> float:
    x, y = reference_shingles(a), reference_shingles(b)
    return len(x & y) / len(x | y)


def run(recipe: Path, workers: int = 1):
    summary = run_recipe(load_recipe(recipe), workers=workers, progress=False)
    return summary, summary.run_dir


def rows(run_dir: Path, query: str) -> list[dict]:
    return sql.query(run_dir, query).to_pylist()


def offset(doc_id: str) -> int:
    return int(doc_id.rsplit(":", 1)[1])


def output_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for folder in ("data", "removed", "quarantine") for p in sorted((run_dir / folder).rglob("*.parquet"))}


def test_real_near_duplicates_of_the_dedup_demo_set(data_dir, write_recipe):
    summary, run_dir = run(write_recipe([{"path": str(data_dir / DEMO)}], [{"minhash_dedup": {}}]))
    assert summary.read == 14 == summary.kept + summary.removed + summary.quarantined
    removed = rows(run_dir, "SELECT r.id, r.text, r.reason, r.dup_cluster_id, r.duplicate_of, d.text AS kept_text, "
                            "d.dup_cluster_size FROM removed r JOIN docs d ON d.id = r.duplicate_of")
    # The set's four near-duplicate pairs: an exact repeat, two Smithfield articles with 'plant(s)'/'pig(s)'
    # edits, and a Chinese report with an inserted '时间：'; the Sunday sentences (5-gram Jaccard 0.375) stay.
    assert len(removed) == summary.removed == 4
    assert sorted(r["kept_text"][:7] for r in removed) == ["Smithfi", "Smithfi", "This pa", "第九届会议\\n"]
    for r in removed:
        assert r["reason"] == "near_duplicate" and r["duplicate_of"] == r["dup_cluster_id"]
        assert offset(r["duplicate_of"]) < offset(r["id"])  # keep: first (ids are file:byte offset)
        assert jaccard(r["text"], r["kept_text"]) >= 0.8 and r["dup_cluster_size"] == 2
    kept = rows(run_dir, "SELECT dup_cluster_id IS NULL AS single, dup_cluster_size AS size, count(*) AS n "
                         "FROM docs GROUP BY ALL")
    assert {(k["single"], k["size"], k["n"]) for k in kept} == {(True, 1, 6), (False, 2, 4)}
    lsh_json = json.loads((run_dir / "work/minhash_dedup/lsh.json").read_text())
    assert lsh_json["decisions"]["removed"] == 4 and lsh_json["s_curve"]["0.8"] > 0.99


def test_repeated_alpaca_instructions_by_prompt(data_dir, write_recipe):
    folder = data_dir / "instructions"
    inputs = [{"path": str(folder / name), "format": "instructions"} for name in ("alpaca_5000.json",
                                                                                 "alpaca_en_demo.json")]
    inputs.append({"path": str(data_dir / DEMO)})  # no `prompt`: null, so never a duplicate
    summary, run_dir = run(write_recipe(inputs, [{"minhash_dedup": {"column": "prompt"}}], task_size="256KB"), 2)
    assert summary.read == 5000 + 999 + 14 == summary.kept + summary.removed
    removed = rows(run_dir, "SELECT r.id, r.source, r.prompt, d.prompt AS kept_prompt, d.source AS kept_source "
                            "FROM removed r JOIN docs d ON d.id = r.duplicate_of")
    assert len(removed) == summary.removed and not any(r["source"] == "demo-dataset-deduplication" for r in removed)
    for r in removed:  # every removal is justified by an exact Jaccard computed independently
        assert jaccard(r["prompt"], r["kept_prompt"]) >= 0.8, (r["prompt"], r["kept_prompt"])
    # Recall: every demo prompt that alpaca_5000 already holds (same words) is removed in its favour.
    words = {}
    for r in sql.query(run_dir, "SELECT prompt, source FROM docs UNION ALL SELECT prompt, source FROM removed")\
            .to_pylist():
        words.setdefault(r["source"], []).append(frozenset(reference_shingles(r["prompt"] or "")))
    repeated = [s for s in words["alpaca_en_demo"] if s in set(words["alpaca_5000"])]
    across = [r for r in removed if r["source"] == "alpaca_en_demo" and r["kept_source"] == "alpaca_5000"]
    assert len(repeated) >= 90 and len(across) >= len(repeated)


def poems(data_dir: Path, count: int) -> list[dict]:
    ci = json.loads((data_dir / "text/chinese-poetry/宋词/ci.song.0.json").read_text(encoding="utf-8"))[:count]
    return [{"id": f"ci-{i}", "text": "\n".join(p["paragraphs"]), "tune": p["rhythmic"]} for i, p in enumerate(ci)]


def test_chinese_near_duplicate_poem_found_by_characters(data_dir, write_recipe, tmp_path):
    docs = poems(data_dir, 300)
    tunes = [d["tune"] for d in docs]
    original = next(d for d in docs if len(d["text"]) >= 100 and tunes.count(d["tune"]) > 1)
    same_tune = next(d for d in docs if d["tune"] == original["tune"] and d is not original)
    text = original["text"]
    # A near-copy: two characters changed and one deleted, as a re-post with typos would have.
    copy = text[:10] + "春" + text[11:40] + "风" + text[41:70] + text[71:]
    docs.append({"id": "near-copy", "text": copy})
    source = tmp_path / "poems.jsonl"
    source.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                              for d in docs), encoding="utf-8")
    summary, run_dir = run(write_recipe([{"path": str(source)}], [{"minhash_dedup": {}}]))
    removed = {r["id"]: r["duplicate_of"] for r in rows(run_dir, "SELECT id, duplicate_of FROM removed")}
    assert removed.get("near-copy") == original["id"]
    assert same_tune["id"] not in removed and same_tune["id"] not in removed.values()
    assert jaccard(copy, text) >= 0.8 > jaccard(same_tune["text"], text)
    # Word shingles would miss it: Chinese has no spaces, so a 'word' is a whole clause.
    sets = shingle_sets(word_tokens(normalise(pa.array([text, copy]))), 5)
    a, b = (set(sets.values[sets.offsets[i]:sets.offsets[i + 1]].tolist()) for i in (0, 1))
    assert len(a & b) / len(a | b) < 0.5
    assert summary.read == len(docs) == summary.kept + summary.removed


def test_cjk_choice_by_lang_column_then_by_script(data_dir):
    poem = poems(data_dir, 1)[0]["text"]
    english = json.loads((data_dir / DEMO).read_text(encoding="utf-8").splitlines()[7])["text"]
    with zipfile.ZipFile(data_dir / "text/udhr2.zip") as udhr:
        # Korean (Hangul) is shingled by characters; Vai, whose letters sit between CJK and Hangul in Unicode,
        # is written with spaces and keeps word shingles.
        korean, vai = (udhr.read(f"udhr2/{code}.txt").decode("utf-8")[:2000] for code in ("kor", "vai"))
    text = normalise(pa.array([poem, english, poem, english, korean, vai]))
    assert cjk_mask(text).tolist() == [True, False, True, False, True, False]
    lang = pa.array(["zh", "en", "en", None, None, None])  # a set `lang` decides; a null one leaves it to the script
    assert cjk_mask(text, lang).tolist() == [True, False, False, False, True, False]
    glotlid = pa.array(["cmn_Hani", "eng_Latn", "jpn_Jpan", "", "kor_Hang", "vai_Vaii"])  # GlotLID's labels
    assert cjk_mask(text, glotlid).tolist() == [True, False, True, False, True, False]


def test_keep_the_highest_score_ties_by_input_order(data_dir, write_recipe):
    stages = [{"langid": {}}, {"minhash_dedup": {"keep": "lang_score"}}]
    _, run_dir = run(write_recipe([{"path": str(data_dir / DEMO)}], stages))
    pairs = rows(run_dir, "SELECT r.id, r.lang_score AS score, d.id AS kept, d.lang_score AS kept_score, "
                          "left(d.text, 5) AS start FROM removed r JOIN docs d ON d.id = r.duplicate_of")
    assert len(pairs) == 4 and all(p["kept_score"] >= p["score"] for p in pairs)
    # The Chinese report's later copy scores higher, so it stays (keep: first kept the earlier one);
    # the exact repeat ties and keeps the earlier.
    chinese = next(p for p in pairs if p["start"].startswith("第九届"))
    assert offset(chinese["kept"]) > offset(chinese["id"]) and chinese["kept_score"] > chinese["score"]
    tie = next(p for p in pairs if p["kept_score"] == p["score"])
    assert offset(tie["kept"]) < offset(tie["id"])


def test_bad_keep_column_speaks(data_dir, write_recipe):
    from refinery.pipelines.engine.run import RunError

    recipe = write_recipe([{"path": str(data_dir / DEMO)}], [{"minhash_dedup": {"keep": "score"}}])
    with pytest.raises(Exception, match="no column 'score' for `keep`"):
        run(recipe)
    with pytest.raises((RunError, ValueError), match="bands.*rows"):
        run(write_recipe([{"path": str(data_dir / DEMO)}], [{"minhash_dedup": {"bands": 20}}], name="b"))


@pytest.fixture(scope="module")
def mixed_inputs(data_dir) -> list[dict]:
    folder = data_dir / "instructions"
    return [{"path": str(data_dir / DEMO)}, {"path": str(data_dir / "text/c4_demo.jsonl")},
            {"path": str(folder / "alpaca_en_demo.json"), "format": "instructions"},
            {"path": str(folder / "alpaca_5000.json"), "format": "instructions"}]


@pytest.fixture(scope="module")
def two_workers(mixed_inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    recipe = folder / "r.yaml"
    recipe.write_text(json.dumps({"name": "mixed", "inputs": mixed_inputs, "output": "out", "task_size": "256KB",
                                  "stages": [{"minhash_dedup": {"column": "prompt", "memory_limit": "64MB"}}]}))
    summary, run_dir = run(recipe, workers=2)
    assert summary.removed > 100 and len(list((run_dir / "data").glob("*.parquet"))) > 3
    return recipe, run_dir


def test_one_or_two_workers_give_identical_bytes(two_workers, tmp_path):
    recipe, run_dir = two_workers
    config = json.loads(recipe.read_text())
    (tmp_path / "r.yaml").write_text(json.dumps({**config, "output": str(tmp_path / "one")}))
    _, one = run(tmp_path / "r.yaml", workers=1)
    assert output_bytes(one) == output_bytes(run_dir)


def small_blocks(two_workers, folder: Path) -> Path:
    """The mixed recipe with its candidate sets in 1 KB blocks (as a small memory_limit on a large corpus gives):
    many parts in the `pairs` and `walk` steps of the resolve."""
    recipe, _ = two_workers
    config = json.loads(recipe.read_text())
    config["stages"][0]["minhash_dedup"]["block_bytes"] = 1024
    (folder / "r.yaml").write_text(json.dumps({**config, "output": str(folder / "out")}))
    return folder / "r.yaml"


def test_sets_in_many_small_blocks_give_identical_bytes(two_workers, tmp_path):
    """The sets of candidate documents split over many blocks and cluster buckets, compared in parallel parts,
    give the same decisions as one block."""
    _, clean = two_workers
    run(small_blocks(two_workers, tmp_path), workers=2)
    counts = json.loads((tmp_path / "out/work/minhash_dedup/lsh.json").read_text())
    assert counts["sets"]["blocks"] > 3 and counts["members"]["member_buckets"] > 3
    assert len(list((tmp_path / "out/work/minhash_dedup/pairs").glob("part-*.parquet"))) == counts["sets"]["blocks"]
    assert output_bytes(tmp_path / "out") == output_bytes(clean)


@pytest.mark.parametrize("step", ["buckets", "pairs", "walk", "decisions"])
def test_stopped_mid_resolve_resumes_at_its_step_with_identical_bytes(two_workers, tmp_path, step):
    _, clean = two_workers
    recipe = small_blocks(two_workers, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe), progress=False, executor=StopInStep(step))
    finished = tmp_path / "out/work/minhash_dedup/finished"
    done_before = {(name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1][:5])) for name in os.listdir(finished)}
    assert any(done == step for done, _ in done_before)  # stopped within the step, some of its parts done
    rerun = StopInStep()
    run_recipe(load_recipe(recipe), progress=False, executor=rerun)
    assert output_bytes(tmp_path / "out") == output_bytes(clean)
    # Nothing finished before the stop is given again; every step after it is (after the last, nothing is).
    assert not set(rerun.given) & done_before
    steps = [name for name, _, _ in resolve.STEPS]
    later = set(steps[steps.index(step) + 1:])
    assert {name for name, _ in rerun.given} >= later and (later or rerun.given == [])


def test_s_curve_matches_the_formula_and_banding_matches_datasketch():
    from datasketch.lsh import _optimal_param

    for bands, rows_ in ((16, 6), (14, 8), (9, 13)):
        curve = lsh.s_curve(bands, rows_)
        assert list(curve) == ["0.5", "0.6", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]
        for s, p in curve.items():
            assert p == pytest.approx(1 - (1 - float(s) ** rows_) ** bands, abs=1e-6)
    for threshold in (0.5, 0.7, 0.8, 0.9):  # without verification: datasketch's own choice
        assert lsh.choose_bands(threshold, 128, None) == _optimal_param(threshold, 128, 0.5, 0.5)
    bands, rows_ = lsh.choose_bands(0.8, 128, 0.99)
    assert (bands, rows_) == (16, 6) and lsh.candidate_probability(0.8, bands, rows_) >= 0.99


def test_exact_jaccard_and_minhash_estimates_on_real_pairs(data_dir):
    texts = [json.loads(line)["text"] for line in (data_dir / DEMO).read_text(encoding="utf-8").splitlines()]
    c4 = [json.loads(line)["text"] for line in (data_dir / "text/c4_demo.jsonl").read_text().splitlines()[:40]]
    batch = texts + c4
    sets, _ = document_shingles(pa.array(batch), None, 5, 3)
    pairs = [(7, 8), (9, 10), (7, 9), (12, 13), (0, 5)] + [(14 + i, 15 + i) for i in range(0, 30, 3)]
    block = Sets(np.arange(len(batch)), sets.offsets, sets.values)  # as the resolve step reads them from its blocks
    left, right = (block.take(np.array([p[k] for p in pairs])) for k in (0, 1))
    exact = pair_jaccard(left, right)
    signature = signatures(sets, *permutations(256, 7))
    for (i, j), value in zip(pairs, exact):
        assert value == pytest.approx(jaccard(batch[i], batch[j]), abs=1e-3)
        assert set_jaccard(block.one(i), block.one(j)) == pytest.approx(value)
        assert np.mean(signature[i] == signature[j]) == pytest.approx(value, abs=0.1)
    assert exact[0] > 0.95 and exact[2] < 0.6  # two Smithfield copies; and a long against a short version


def test_fold_digits_off_keeps_questions_that_differ_only_in_numbers(data_dir):
    """Two real Alpaca prompts that differ only in their numbers: the same shingles when digits fold (web text),
    different questions when they don't (the instructions recipe's `fold_digits: false`)."""
    prompts = []
    for name, wanted in (("alpaca_en_demo.json", "Calculate 15% of 500."), ("alpaca_5000.json",
                                                                              "Calculate 50% of 300.")):
        records = json.loads((data_dir / "instructions" / name).read_text(encoding="utf-8"))
        prompts += [r["instruction"] for r in records if r["instruction"] == wanted]
    assert len(prompts) == 2
    text = pa.array(prompts)

    def similarity(fold: bool) -> float:
        sets, _ = document_shingles(text, None, 2, 3, fold_digits=fold)
        a, b = (set(sets.values[sets.offsets[i]:sets.offsets[i + 1]].tolist()) for i in range(2))
        return len(a & b) / len(a | b)

    assert normalise(text, fold_digits=False).to_pylist() == ["calculate 15  of 500 ", "calculate 50  of 300 "]
    assert similarity(True) == 1.0 and similarity(False) < 0.5
