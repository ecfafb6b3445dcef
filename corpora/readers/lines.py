"""Lines, heads and whole contents of (possibly compressed, possibly damaged) files, for the readers of lines.

Every helper reads through `base.decompressed`, so a damaged compressed stream never raises: `iter_lines` yields
a `Damaged` item where the stream breaks (with the line the damage cut, if any) and goes on after it; the
whole-file helpers stop at the first break and return it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from refinery.corpora.readers.base import Damaged, StreamBreak, decompressed


def byte_ranges(size: int, task_size: int) -> list[tuple[int, int | None]]:
    """Split [0, size) into ranges of about task_size bytes; the last one runs to the end."""
    if size <= task_size:
        return [(0, None)]
    starts = list(range(0, size, task_size))
    return [(s, e) for s, e in zip(starts, starts[1:] + [None])]


def iter_lines(path: str | Path, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes] | Damaged]:
    """Yield (byte offset, line without its newline) for every line that *starts* in [start, end).

    A line that straddles `start` belongs to the previous range, so ranges never share or lose a line. Offsets
    are positions in the decompressed stream, which makes them stable record positions. Where a compressed
    stream breaks, a Damaged item stands for the break: its raw bytes are the line it cut short (else the
    compressed bytes passed over), and the lines after it follow.
    """
    pos = max(start - 1, 0)
    skipping = start > 0  # up to the first newline at or after start - 1: the previous range's line
    pending: list[bytes] = []  # the pieces of a line that runs across chunks (joined once, not chunk by chunk)
    for data in decompressed(path, pos):
        if isinstance(data, StreamBreak):
            partial = b"".join(pending)
            yield Damaged(pos, data.reason, partial or data.raw)
            pos, pending = pos + len(partial), []
            continue
        i = 0
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                pos += len(data)
                continue
            pos, i, skipping = pos + nl + 1, nl + 1, False
        if pending:
            nl = data.find(b"\n")
            if nl < 0:
                pending.append(data)
                continue
            line = b"".join(pending) + data[:nl]
            pending = []
            yield pos, line
            pos += len(line) + 1
            i = nl + 1
        # Lines are sliced out of the chunk where they lie; only a line cut by the chunk's edge is joined.
        find = data.find
        while end is None or pos < end:
            nl = find(b"\n", i)
            if nl < 0:
                break
            yield pos, data[i:nl]
            pos += nl + 1 - i
            i = nl + 1
        else:
            return
        if i < len(data):
            pending.append(data[i:])
    if pending and (end is None or pos < end):
        yield pos, b"".join(pending)


def read_whole(path: str | Path) -> tuple[bytes, StreamBreak | None]:
    """All the bytes of a (possibly compressed) file up to its first damage, and that damage (None: none)."""
    chunks: list[bytes] = []
    for data in decompressed(path):
        if isinstance(data, StreamBreak):
            return b"".join(chunks), data
        chunks.append(data)
    return b"".join(chunks), None


def read_head(path: str | Path, size: int) -> bytes:
    """The first `size` decompressed bytes of a file (fewer where it ends or breaks first)."""
    chunks, have = [], 0
    for data in decompressed(path):
        if isinstance(data, StreamBreak):
            break
        chunks.append(data)
        have += len(data)
        if have >= size:
            break
    return b"".join(chunks)[:size]
