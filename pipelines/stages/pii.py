"""PII scrubbing (map stage): emails, IPv4/IPv6 addresses and phone numbers replaced by placeholders.

Emails are found and replaced by Arrow's RE2 kernels over the whole column. Addresses and phone numbers need
checks a regular expression cannot make (is the address public? is "2021-03-04" a date?), so RE2 first picks
the rows that could hold one, and only those rows go through a Python pattern whose matches are validated.
Kinds run in a fixed order (email, IPv6, IPv4, phone) so that an address is never read as a phone number.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from refinery.pipelines.stages import register
from refinery.pipelines.stages.base import MapStage, StageConfig, StageResult, split_by_reason

Kind = Literal["email", "ipv6", "ipv4", "phone"]
KINDS: tuple[Kind, ...] = ("email", "ipv6", "ipv4", "phone")
DEFAULT_PLACEHOLDERS = {"email": "<EMAIL>", "ipv6": "<IP_ADDRESS>", "ipv4": "<IP_ADDRESS>", "phone": "<PHONE>"}

# RE2 syntax: Arrow's kernels count and replace emails over the whole column. RE2 has no look-behind, but a
# leftmost match takes the whole local part anyway.
EMAIL = (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not inside a longer number, word or version string ("v1.2.3.4", "1.2.3.4.5").
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# The dotted tail is tried first so that "::ffff:172.32.2.129" is one address, not "::ffff:172".
IPV6 = re.compile(rf"(?<![\w:.])(?=[:.]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:{_OCTET}(?:\.{_OCTET}){{3}}|"
                  r"[0-9A-Fa-f]{1,4})?(?![\w:.])")

_SEPARATOR = r"[ .\-\u00a0]"
# A phone number: an optional country code (+44, 0044, +49 (0)), an optional area code in parentheses, then
# digit groups with single separators. What it must not be (a date, a year range, a version, a price, an ISBN)
# is checked on each match by _is_phone, where the shapes are easier to read than in one pattern.
PHONE = re.compile(
    r"(?=[+(\d][\d .\-()\u00a0+]{6})"  # at least 7 characters of a phone: skips most numbers at once (3.5x faster)
    rf"(?:(?<![\w+.,/@#$€£¥%-])|(?<=[^\W\d_])(?=[(+]))"  # not inside a number or word; "SC(803) ..." is fine
    rf"(?P<intl>(?:\+|\b00)[1-9]\d{{0,2}}{_SEPARATOR}?(?:\(0\){_SEPARATOR}?)?)?"
    rf"(?P<area>\(\d{{1,5}}\){_SEPARATOR}?)?"
    rf"\d{{1,14}}(?:{_SEPARATOR}\d{{1,8}}){{0,5}}"
    rf"(?![\d@]|[.,/\-:]\d)"  # letters may follow: WET text glues "593-9231Fax"
)
# RE2 pre-filters: a row without a match has nothing for the Python pass (most rows, on real text).
CANDIDATES = {
    "ipv6": r"[0-9A-Fa-f]*:[0-9A-Fa-f]*:",
    "ipv4": r"\d\.\d{1,3}\.\d{1,3}\.\d",
    "phone": r"\d[\d .\-()\x{a0}]{5,}\d",
}
# Words just before a number that say it is not a phone number.
_NOT_A_PHONE_BEFORE = re.compile(r"(?i)\b(?:isbn(?:-1[03])?|issn|doi|arxiv|pmid|version|patent|v)[:#.]?\s*$")
_YEAR = re.compile(r"(?:1[89]|20)\d\d")
_DATE = re.compile(r"\b(?:\d{1,2}[./-]\d{1,2}[./-](?:1[89]|20)\d\d|(?:1[89]|20)\d\d[./-]\d{1,2}[./-]\d{1,2})\b")


def _is_phone(match: re.Match) -> bool:
    text = match.group(0)
    intl, area = match.group("intl"), match.group("area")
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:  # E.164 numbers have at most 15 digits; local ones at least 7
        return False
    if set(text) <= set("01 ") or _DATE.search(text) or IPV4.fullmatch(text):  # bits, "3 02.01.2015", 10.0.0.1
        return False
    if _NOT_A_PHONE_BEFORE.search(match.string, max(0, match.start() - 12), match.start()):
        return False
    local = text[len(intl or "") + len(area or ""):]
    groups = re.split(_SEPARATOR, local)
    lengths = [len(g) for g in groups]
    separators = set(re.findall(_SEPARATOR, local))
    if any(n < 2 for n in lengths[1:]):  # ISBN-10 "0-306-40615-2", list numbering "1 2 3"
        return False
    if area is not None and (digits < 9 or _YEAR.fullmatch(area.strip(" .-\u00a0()"))):  # "(2008) 256 pages"
        return False
    if intl is not None:  # "+44 ..." / "0044 ...": the prefix says phone; "00" alone must be followed by a group
        return not (intl.startswith("00") and len(groups) == 1 and area is None)  # "00632000001783": an account
    # French-style national numbers: five pairs from a leading 0 ("01 23 45 67 89"), not any run of pairs.
    pairs = lengths == [2] * 5 and groups[0].startswith("0")
    dotted_phone = separators == {"."} and (lengths == [3, 3, 4] or pairs)  # 555.123.4567
    if "." in separators and not dotted_phone:
        return False  # dates 12.05.2020, versions 10.0.19041.1, decimals "2.80273 12"
    if area is not None:
        return True
    # No prefix, no area code: the shape alone must say phone.
    years = sum(bool(_YEAR.fullmatch(g)) for g in groups)
    spaced = separators <= {" ", ".", "\u00a0"}
    return not (
        len(groups) < 3  # "7946 0958", "1990-2005", "12345-6789", a bare run of digits: too ambiguous
        or (groups[0] in ("978", "979") and digits == 13)  # ISBN-13
        or years > 1 or (years == 1 and len(groups) == 3 and sorted(lengths)[1] <= 2)  # dates, runs of years
        or (spaced and lengths[0] < 3 and not pairs)  # number lists: "64 64 896 896", "14 16 18 20"
        or (spaced and lengths[0] <= 3 and all(n == 3 for n in lengths[1:]))  # thousands "1 234 567"
    )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a match spells, or None: not an address ("10:30:45", a MAC address), or an IPv6 shape that
    obfuscated scripts and timestamps produce far more often than people write addresses ("9::08:58")."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.is_global:
        groups = [g for g in text.split(":") if g]
        # A dotted IPv4 tail is 32 bits: it counts as two groups.
        if len(groups) + ("." in text) < 3 or ("::" in text and any(len(g) > 1 and g.startswith("0") for g in groups)):
            return None
    return address


def _is_public(match: re.Match) -> bool:
    address = _address(match.group(0))  # multicast groups (230.0.0.4) name no one either
    return address is not None and address.is_global and not address.is_multicast


def _is_address(match: re.Match) -> bool:
    return _address(match.group(0)) is not None


class PiiConfig(StageConfig):
    kinds: list[Kind] = Field(list(KINDS), min_length=1, description="what to replace: email, ipv6, ipv4, phone")
    placeholders: dict[Kind, str] = Field(default_factory=dict, description="replacement text per kind; "
                                          "defaults: <EMAIL>, <IP_ADDRESS> (both IP kinds), <PHONE>")
    keep_private_ips: bool = Field(True, description="leave private, loopback, link-local, documentation and "
                                   "other non-global addresses as they are (they identify no one)")
    count_column: str | None = Field(None, description="if set, a column of this name gets each row's "
                                     "number of replacements (int32)")
    column: str = Field("text", description="the string column scrubbed")

    @field_validator("kinds")
    @classmethod
    def _unique(cls, kinds: list[Kind]) -> list[Kind]:
        return [k for k in KINDS if k in kinds]  # always run in KINDS order, each once


@register
class Pii(MapStage):
    """Replace emails, IP addresses and phone numbers with placeholders; counts per kind go to the stage's
    stats (`counts`). No document is removed."""

    name = "pii"
    does = "scrub personal data"
    Config = PiiConfig
    config: PiiConfig

    def _placeholder(self, kind: Kind) -> str:
        return self.config.placeholders.get(kind, DEFAULT_PLACEHOLDERS[kind])

    def _validator(self, kind: Kind) -> tuple[re.Pattern, Callable[[re.Match], bool]]:
        if kind == "phone":
            return PHONE, _is_phone
        return (IPV4 if kind == "ipv4" else IPV6), (_is_public if self.config.keep_private_ips else _is_address)

    def scrub(self, text: pa.Array) -> tuple[pa.Array, dict[str, int], pa.Array]:
        """(scrubbed text, replacements per kind, replacements per row)."""
        per_row = pa.array([0] * len(text), pa.int32())
        counts: dict[str, int] = {}
        for kind in self.config.kinds:
            placeholder = self._placeholder(kind)
            if kind == "email":
                found = pc.count_substring_regex(text, EMAIL)
                text = pc.replace_substring_regex(text, EMAIL, placeholder.replace("\\", "\\\\"))
            else:
                text, found = self._replace_validated(text, kind, placeholder)
            found = pc.cast(pc.fill_null(found, 0), pa.int32())
            counts[kind] = pc.sum(found).as_py() or 0
            per_row = pc.add(per_row, found)
        return text, counts, per_row

    def _replace_validated(self, text: pa.Array, kind: Kind, placeholder: str) -> tuple[pa.Array, pa.Array]:
        candidate = pc.fill_null(pc.match_substring_regex(text, CANDIDATES[kind]), False)
        found = [0] * len(text)
        if not pc.any(candidate).as_py():
            return text, pa.array(found, pa.int32())
        pattern, valid = self._validator(kind)
        rows = pc.indices_nonzero(candidate).to_pylist()
        replaced = []
        for row, value in zip(rows, text.filter(candidate).to_pylist()):
            hits = 0

            def substitute(match: re.Match) -> str:
                nonlocal hits
                if not valid(match):
                    return match.group(0)
                hits += 1
                return placeholder

            replaced.append(pattern.sub(substitute, value))
            found[row] = hits
        return pc.replace_with_mask(text, candidate, pa.array(replaced, pa.string())), pa.array(found, pa.int32())

    def process(self, docs: pa.Table) -> StageResult:
        column = self.config.column
        if column not in docs.column_names:
            raise ValueError(f"pii: no column '{column}' to scrub (columns: {', '.join(docs.column_names)})")
        text = docs.column(column).combine_chunks()
        scrubbed, counts, per_row = self.scrub(text)
        docs = docs.set_column(docs.column_names.index(column), docs.field(column), scrubbed)
        if self.config.count_column:
            docs = docs.append_column(self.config.count_column, per_row)
        kept, removed, _ = split_by_reason(docs, pa.nulls(docs.num_rows, pa.string()))
        return StageResult(kept, removed, counts)
