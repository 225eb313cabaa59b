"""Tables of many rows drawn the way rich draws its default table, at a fraction of the cost.

`dump` lists every inode and chunk: rich measures and renders each cell through several layers
of objects (about 1 ms a row), so a bootstrap of 100,000 inodes took three minutes to print.
This draws the same box (heavy header, light body; ASCII when the output cannot encode it), one
space of padding, cells folded to their column's width, the title centred above. Cells must
already be escaped (`nydusfs.util.show.printable`); widths are terminal cells.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len

# rules are (left, line, joint, right); rows are cut by the vertical bar
_UNICODE = {"head_top": "┏━┳┓", "head": "┃", "head_rule": "┡━╇┩", "top": "┌─┬┐",
            "body": "│", "bottom": "└─┴┘"}
_ASCII = {"head_top": "+-++", "head": "|", "head_rule": "|-+|", "top": "+-++",
          "body": "|", "bottom": "+-++"}
MIN_FOLDED = 8      # a column shrunk to fit the width keeps at least this many cells


def widths(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int,
           flexible: Sequence[int]) -> list[int]:
    """Each column's width: its widest cell (or header); when the table is wider than `width`,
    the `flexible` columns give up cells, the widest first."""
    w = [cell_len(c) for c in columns]
    for row in rows:
        for k, cell in enumerate(row):
            n = len(cell) if cell.isascii() else cell_len(cell)
            if n > w[k]:
                w[k] = n
    excess = sum(w) + 3 * len(w) + 1 - width
    floors = {k: max(MIN_FOLDED, cell_len(columns[k])) for k in flexible}
    while excess > 0 and flexible:  # a cell at a time from the widest: they end up alike
        k = max(flexible, key=lambda i: w[i] - floors[i])
        if w[k] <= floors[k]:
            break
        w[k] -= 1
        excess -= 1
    return w


def fold(cell: str, width: int) -> list[str]:
    """The cell cut into lines of at most `width` cells."""
    if cell.isascii():
        if len(cell) <= width:
            return [cell]
        return [cell[i:i + width] for i in range(0, len(cell), width)]
    lines: list[str] = []
    line: list[str] = []
    used = 0
    for ch in cell:
        n = cell_len(ch)
        if used + n > width and line:
            lines.append("".join(line))
            line, used = [], 0
        line.append(ch)
        used += n
    lines.append("".join(line))
    return lines


def _pad(text: str, width: int) -> str:
    n = len(text) if text.isascii() else cell_len(text)
    return text + " " * (width - n)


def render(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
           width: int, flexible: Sequence[int], header: bool = True,
           ascii_only: bool = False) -> str:
    """The table as text, ending with a newline."""
    box = _ASCII if ascii_only else _UNICODE
    w = widths(columns, rows, width, flexible)

    def rule(chars: str) -> str:
        return chars[0] + chars[2].join(chars[1] * (n + 2) for n in w) + chars[3]

    def row_lines(cells: Sequence[str], vertical: str) -> list[str]:
        parts = [fold(c, w[k]) for k, c in enumerate(cells)]
        height = max(len(p) for p in parts)
        return [vertical + vertical.join(" " + _pad(p[i] if i < len(p) else "", w[k]) + " "
                                         for k, p in enumerate(parts)) + vertical
                for i in range(height)]

    out: list[str] = []
    total = sum(w) + 3 * len(w) + 1
    if title:
        out.append(_pad(" " * max(0, (total - cell_len(title)) // 2) + title, total))
    if header:
        out.append(rule(box["head_top"]))
        out.extend(row_lines(columns, box["head"]))
        out.append(rule(box["head_rule"]))
    else:
        out.append(rule(box["top"]))
    for cells in rows:
        out.extend(row_lines(cells, box["body"]))
    out.append(rule(box["bottom"]))
    return "\n".join(out) + "\n"
