"""Script-aware correction of a language-ID label for text written in Han, kana or Hangul (the `langid` stage).

fastText lid.176 reads character n-grams, and on short modern Chinese it often answers `ja` (the two share
most Han characters) or `wuu`/`yue` (trained on small Wikipedias of mostly Mandarin-like text). The script of
the letters settles most of it: Japanese is written with kana, Korean with Hangul, and Chinese with Han alone.
Letters are weighed as a reader would: a Han, kana or Hangul character is one unit, and so is a word of any
other script (`Charles`, `JSON`), so that a Chinese prompt quoting an English sentence is still Chinese text.
The rule, on a text at least half of whose units are Han, kana or Hangul (`CJK_MIN_SHARE`):

* Hangul at least as frequent as kana, and at least `HANGUL_MIN_SHARE` of the CJK characters → `ko`;
* else kana at least `KANA_MIN_SHARE` of the CJK characters → `ja`;
* else (Han, with no or next to no kana or Hangul) → `zh`, unless the model said `yue` and the text has a
  Cantonese-only character (嘅 咗 喺 ...), or said `ja` and the text has a Japanese-only kanji form (権 駅 売
  ...): lid.176's `ja`, `wuu` and `yue` on Han-only text are otherwise mostly wrong (docs/recipes.md#langid has
  the measured confusion table). Japanese written in Han alone (an article heading `第１条`) becomes `zh`:
  nothing in its letters tells it from Chinese.

Text whose letters are mostly another script (Latin, Cyrillic, Yi, ...) keeps the model's label: the
correction never touches it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Of a text's units (CJK characters and other-script words): below this it is not CJK-script text, left alone.
CJK_MIN_SHARE = 0.5
KANA_MIN_SHARE = 0.05   # of its CJK characters: Japanese has 30-70% kana; Chinese text none (a stray の at most)
HANGUL_MIN_SHARE = 0.3  # of its CJK characters: Korean is mostly Hangul, with some Han (hanja)
# Characters written in Cantonese and not in Mandarin (particles, pronouns, negation): their presence backs
# lid.176's `yue`.
CANTONESE = "嘅咗喺冇哋佢唔嘢啲乜嚟噉咁嘥攰嗰睇諗揾搵畀俾嗮"
# Kanji forms used in Japanese only (shinjitai that differ from both Simplified and Traditional Chinese, and
# kokuji): their presence backs lid.176's `ja` on a text without kana.
JAPANESE_ONLY = ("権歩売読続駅験桜沢県広払恵悪戦単図気帰経黒済実従処焼乗専対転伝闘発廃様訳薬覧労働込畑峠辻匂枠栃"
                 "鉄変辺満歴齢涙緑関観歓顔険検剣営栄挙拠雑児釈収縦畳縄譲醸粋酔穂瀬摂銭繊捜巣総騒増蔵臓帯滝択団"
                 "弾遅庁徴聴逓稲悩脳拝髪抜晩塀舗豊麺黙謡頼両猟霊暦録")
OTHER_WORD = r"[^\P{L}\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\x{30FC}]+"  # a run of letters of another script
HAN, KANA, HANGUL = r"\p{Han}", r"[\p{Hiragana}\p{Katakana}\x{30FC}]", r"\p{Hangul}"


def script_counts(text: pa.Array) -> dict[str, list[int]]:
    """Other-script words, Han, kana and Hangul characters in each text (null counts as none)."""
    filled = pc.fill_null(text, "")
    return {name: pc.count_substring_regex(filled, pattern).to_pylist()
            for name, pattern in (("other", OTHER_WORD), ("han", HAN), ("kana", KANA), ("hangul", HANGUL))}


def script_label(other: int, han: int, kana: int, hangul: int, lid_label: str, text: str) -> tuple[str, float]:
    """The label the script decides and the share of the units in that script; ('', 0) to keep lid's label."""
    cjk = han + kana + hangul
    units = cjk + other
    if cjk == 0 or cjk < CJK_MIN_SHARE * units:
        return "", 0.0
    if hangul >= kana and hangul >= HANGUL_MIN_SHARE * cjk:
        return "ko", (hangul + han) / units
    if kana >= KANA_MIN_SHARE * cjk:
        return "ja", (kana + han) / units
    if (lid_label == "yue" and any(char in text for char in CANTONESE)) or (
            lid_label == "ja" and any(char in text for char in JAPANESE_ONLY)):
        return "", 0.0
    return "zh", han / units


def correct(text: pa.Array, langs: list[str | None], scores: list[float | None]) -> dict[str, int]:
    """Apply the script rule to `langs` and `scores` in place; returns the corrections made, as "ja_to_zh": n.

    A corrected row's score becomes the share of its units (CJK characters and other-script words) in the
    script that decided it (Han for zh; Han and kana for ja; Hangul and Han for ko): 1.0 for a text of Han
    characters, digits and punctuation alone.
    """
    counts = script_counts(text)
    texts: list[str] | None = None
    corrections: dict[str, int] = {}
    for row, lid_label in enumerate(langs):
        if lid_label is None or not (counts["han"][row] or counts["kana"][row] or counts["hangul"][row]):
            continue
        if lid_label in ("yue", "ja") and texts is None:
            texts = pc.fill_null(text, "").to_pylist()
        label, share = script_label(counts["other"][row], counts["han"][row], counts["kana"][row],
                                    counts["hangul"][row], lid_label, texts[row] if texts else "")
        if label and label != lid_label:
            key = f"{lid_label}_to_{label}"
            corrections[key] = corrections.get(key, 0) + 1
            langs[row], scores[row] = label, min(share, 1.0)
    return corrections
