"""Word vectors (Word2Vec skip-gram or CBOW, with fastText's character n-grams) from documents: text preparation,
training, loading and nearest neighbours. `refinery embeddings` and `refinery ablate` call these functions.

Text preparation (`words`), the same for training, queries and the word-similarity sets:
- lowercased (str.lower, every script);
- split on whitespace (str.split; fastText then splits the training file on ASCII whitespace only, and every
  word is written with single spaces between, so both see the same words);
- punctuation (Unicode categories P*: . , ; : ! ? ' " ( ) [ ] - and their kin) stripped from each word's two
  ends, so "dog," "(dog" and "dog" are one word, while marks inside a word stay: don't, e-mail, u.s (from
  "U.S.");
- a word left with no letter or digit ("--", "@-@", "=", "…") is dropped; symbols inside or around a word
  stay ("<unk>", "$5", "c++").
One document is one line of the training file: fastText's context windows stay inside a line (and inside each
1,024-word piece of a longer one), so they never join the end of one document to the start of the next.

fastText is imported inside the functions, so that importing this module (and starting `refinery`) stays fast.
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from refinery.corpora.atomic import atomic_path, remove_path, temp_name, write_json

MODELS = ("skipgram", "cbow")
DEFAULT_BUCKET = 2_000_000  # fastText's
_ALNUM = re.compile(r"[^\W_]")  # a letter or a digit (\w without the underscore)
# fastText (0.9.2, and the fasttext-numpy2-wheel build) fills its input matrix in ten blocks, one per thread: with
# fewer than ten threads the rest keeps whatever memory held, so it differs from run to run and may hold NaN
# ("Encountered NaN"; facebookresearch/fastText#1061). Below ten threads, glibc's malloc is asked to zero every
# allocation during training (M_PERTURB): the rest of the matrix starts at zero, the same on every run.
FULL_INIT_THREADS = 10
_M_PERTURB = -6


class EmbeddingsError(ValueError):
    """A run, model or word that cannot be used, with what to do next (the CLI prints it, exit code 2)."""


@cache
def _punctuation() -> str:
    """Every punctuation character of the Basic Multilingual Plane: 625, found in 0.01 s. The other planes add
    194 marks, of historic scripts, and would cost half a second more each time."""
    return "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)).startswith("P"))


def words(text: str) -> list[str]:
    """The words of a text as the vectors see them (see the module docstring)."""
    marks = _punctuation()
    stripped = (word.strip(marks) for word in text.lower().replace("\0", " ").split())
    return [word for word in stripped if _ALNUM.search(word)]


def word_of(text: str) -> str:
    """One word given by a user (a query, a similarity pair) prepared as training prepared the corpus."""
    found = words(text)
    if len(found) != 1:
        raise EmbeddingsError(f"{text!r} is {'no word' if not found else f'{len(found)} words'} once lowercased "
                              "and stripped of punctuation at its ends; give one word")
    return found[0]


def kept_texts(run_dir: str | Path) -> Iterator[str]:
    """The `text` of every kept document of a run (RUN/data/*.parquet, in part order), read a batch at a time. A
    folder that is not a run, or a run without kept documents, is refused at once, before anything is read."""
    from refinery.pipelines.engine.layout import RunLayout

    layout = RunLayout(run_dir)
    if not layout.is_run():
        raise EmbeddingsError(f"{run_dir} is not a Refinery run folder (no manifest.json): give the `output:` "
                              "folder of a recipe you ran with `refinery run RECIPE`")
    parts = sorted(layout.data.glob("*.parquet"))
    if not parts:
        raise EmbeddingsError(f"{layout.data} holds no kept documents: finish the run (`refinery run RECIPE` "
                              f"resumes it), or see what removed them: refinery sql {run_dir} \"SELECT stage, "
                              "reason, count(*) FROM removed GROUP BY ALL\"")
    return _texts(parts)


def _texts(parts: list[Path]) -> Iterator[str]:
    import pyarrow.parquet as pq

    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=1024, columns=["text"]):
            yield from (text for text in batch.column(0).to_pylist() if text)


def model_files(out_prefix: str | Path) -> dict[str, Path]:
    """The files a training writes: PREFIX.bin (fastText), PREFIX.vec (word2vec text), PREFIX.json (facts)."""
    return {suffix: Path(f"{out_prefix}.{suffix}") for suffix in ("bin", "vec", "json")}


@contextmanager
def _fully_initialised(threads: int) -> Iterator[int]:
    """The threads to train with, inside a context where fastText's input matrix starts fully defined: ten or
    more threads fill all of it; below ten, glibc's malloc zero-fills what it hands out meanwhile (mallopt
    M_PERTURB 0xff: bytes of 0xff ^ 0xff), so the part fastText leaves is zeros; where the C library is not
    glibc, training takes ten threads."""
    if threads >= FULL_INIT_THREADS:
        yield threads
        return
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or libc.mallopt(_M_PERTURB, 0xFF) != 1:
        yield FULL_INIT_THREADS
        return
    try:
        yield threads
    finally:
        libc.mallopt(_M_PERTURB, 0)


def _train_unsupervised(input_path: Path, seed: int, **params: Any) -> Any:
    """fastText's `train_unsupervised`, with its `seed`: the wrapper of fasttext 0.9.2 passes `seed` only to
    `train_supervised`, although the trainer uses it for both (the initial matrix, each thread's sampling). So
    this does what `train_supervised` does: the same argument checks, the same trainer."""
    from fasttext import FastText

    # +1: fastText seeds std::minstd_rand with it, which takes a seed of 0 as 1, so our seeds 0 and 1 would train
    # the same vectors; seed 0 still trains what fastText's 0 (and 1) did.
    arguments = {"input": str(input_path), "seed": seed + 1, **params}
    args, manual = FastText.read_args((), arguments, [*FastText.unsupervised_default, "input"],
                                      FastText.unsupervised_default)
    built = FastText._build_args(args, manual)
    model = FastText._FastText(args=built)
    FastText.fasttext.train(model.f, built)
    model.set_args(model.f.getArgs())
    return model


def train_embeddings(texts: Iterable[str], out_prefix: Path, model: str = "skipgram", dim: int = 100,
                     epochs: int = 5, min_count: int = 5, threads: int = 1, seed: int = 0,
                     bucket: int = DEFAULT_BUCKET, subwords: bool = True, verbose: int = 0) -> Path:
    """Train word vectors on `texts` and write OUT_PREFIX.bin, .vec and .json; return the .bin path.

    threads=1 makes the vectors a function of (texts, parameters, seed): two trainings give byte-identical
    files. More threads train faster, but fastText's lock-free updates (Hogwild) make every run differ a little.
    Below ten threads the rows fastText leaves start at zero (FULL_INIT_THREADS): the word rows come first and
    all get their random start while the vocabulary is under a tenth of the rows (200,000 words with the default
    bucket), most character n-gram rows start at zero. Where that cannot be arranged (not glibc), ten threads
    train; the .json says how many did.
    `bucket` is the number of character n-gram vectors (hashed): fastText's 2,000,000 makes a .bin of
    bucket x dim x 4 bytes (800 MB at dim 100) whatever the corpus; a small corpus loses little with fewer.
    subwords=False is plain Word2Vec: a word is its own vector only (fastText's minn = maxn = 0), and a word
    outside the vocabulary has none.
    The prepared text goes to a temp file beside the output (corpora.atomic's temp name, so a killed run's
    cleanup finds it) and is deleted afterwards, whatever happens.
    """
    if model not in MODELS:
        raise EmbeddingsError(f"unknown model {model!r}: choose {' or '.join(MODELS)}")
    for name, value in (("dim", dim), ("epochs", epochs), ("min_count", min_count), ("threads", threads),
                        ("bucket", bucket)):
        if value < 1:
            raise EmbeddingsError(f"{name} must be at least 1, got {value}")
    if seed < 0:
        raise EmbeddingsError(f"seed must be 0 or more, got {seed}")
    files = model_files(out_prefix)
    files["bin"].parent.mkdir(parents=True, exist_ok=True)
    corpus = temp_name(Path(f"{out_prefix}.txt"))
    started = time.perf_counter()
    documents = tokens = 0
    try:
        with open(corpus, "w", encoding="utf-8") as out:
            for text in texts:
                found = words(text)
                if found:
                    out.write(" ".join(found) + "\n")
                    documents += 1
                    tokens += len(found)
        if not tokens:
            raise EmbeddingsError("no words to train on: every document was empty or punctuation only")
        prepared = time.perf_counter()
        try:
            with _fully_initialised(threads) as threads:
                trained = _train_unsupervised(corpus, seed, model=model, dim=dim, epoch=epochs, minCount=min_count,
                                              thread=threads, bucket=bucket, verbose=verbose,
                                              **({} if subwords else {"minn": 0, "maxn": 0}))
        except (ValueError, RuntimeError) as err:  # fastText's std::invalid_argument ("Empty vocabulary ...")
            raise EmbeddingsError(f"fastText could not train: {err} ({tokens:,} words; lower --min-count, now "
                                  f"{min_count}, or train on more text)") from None
    finally:
        remove_path(corpus)
    fitted = time.perf_counter()
    with atomic_path(files["bin"]) as tmp:
        trained.save_model(str(tmp))
    vocabulary = write_vec(trained, files["vec"])
    write_json(files["json"], {
        "model": model, "dim": dim, "epochs": epochs, "min_count": min_count, "threads": threads, "seed": seed,
        "bucket": bucket if subwords else 0, "subwords": subwords,
        "documents": documents, "words": tokens, "vocabulary": vocabulary,
        "seconds": {"prepare": round(prepared - started, 2), "train": round(fitted - prepared, 2),
                    "total": round(time.perf_counter() - started, 2)},
    })
    return files["bin"]


def write_vec(model: Any, target: Path) -> int:
    """The vectors in word2vec's text format, as fastText's own .vec: a `WORDS DIM` header, then a word and its
    vector a line (5 significant digits; `</s>`, fastText's end of line, included). Returns the word count."""
    vocabulary = model.get_words(on_unicode_error="replace")
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(f"{len(vocabulary)} {model.get_dimension()}\n")
        for word in vocabulary:
            out.write(word + " " + " ".join(f"{x:.5g}" for x in model.get_word_vector(word).tolist()) + "\n")
    return len(vocabulary)


def find_model(path: str | Path) -> Path:
    """A model file, or the one .bin inside a folder (an embeddings folder, or a run with its embeddings/)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise EmbeddingsError(f"no model at {path}: train one with `refinery embeddings train RUN` (it writes "
                              "RUN/embeddings/skipgram.bin)")
    from refinery.pipelines.engine.layout import RunLayout

    found = sorted(path.glob("*.bin")) or sorted(RunLayout(path).embeddings.glob("*.bin"))
    if len(found) != 1:
        raise EmbeddingsError(f"{'no' if not found else len(found)} .bin models in {path}"
                              f"{': ' + ', '.join(p.name for p in found) if found else ''}; name the model file, "
                              "e.g. RUN/embeddings/skipgram.bin")
    return found[0]


def load_model(path: str | Path) -> Any:
    """A fastText word-vector model (not a classifier), from a file or a folder holding one."""
    import fasttext
    from fasttext_pybind import model_name

    found = find_model(path)
    try:
        model = fasttext.load_model(str(found))
    except ValueError as err:
        raise EmbeddingsError(f"{found} is not a fastText model ({err}): give a .bin written by "
                              "`refinery embeddings train`") from None
    if model.f.getArgs().model == model_name.supervised:
        raise EmbeddingsError(f"{found} is a fastText classifier, not word vectors: give a .bin written by "
                              "`refinery embeddings train`")
    return model


def has_subwords(model: Any) -> bool:
    """Whether the model builds vectors from character n-grams (an unknown word then has one)."""
    return model.f.getArgs().maxn > 0


def known_word(model: Any, text: str, oov: bool) -> str:
    """A user's word, prepared; refused when the model never saw it (unless `oov`: fastText then builds its
    vector from its character n-grams)."""
    word = word_of(text)
    if model.get_word_id(word) >= 0:
        return word
    known = (f"{word!r} is not in the vocabulary ({len(model.get_words()):,} words, each seen at least "
             f"{model.f.getArgs().minCount} times in training): check the spelling or try a more frequent word")
    if not has_subwords(model):
        raise EmbeddingsError(f"{known}; the model was trained without subwords (--no-subwords), so it has no "
                              "vector for an unknown word")
    if not oov:
        raise EmbeddingsError(f"{known}, or pass --oov for a vector built from its character n-grams")
    return word


def progress_verbosity(quiet: bool) -> int:
    """fastText's verbose level: its live progress line (2) on a terminal, only its summary lines (1) in a log."""
    return 0 if quiet else 2 if sys.stderr.isatty() else 1
