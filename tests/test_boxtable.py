"""nydusfs/cli/boxtable.py draws dump's large tables without rich: checked against rich
itself, which draws the same tables (same box, padding, title) when they fit the width."""

from __future__ import annotations

import io
import random

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from nydusfs.cli import boxtable

COLUMNS = ("path", "ino", "type", "digest")


def _rich(title: str | None, rows: list[list[str]], width: int, header: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False, markup=False, color_system=None)
    t = Table(title=title, show_header=header)
    for col in COLUMNS:
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    return out.getvalue()


def _rows(seed: int, n: int, longest: int) -> list[list[str]]:
    rnd = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz/_-.0123456789" + "\u00e9\u4e2d\u6587\\"
    return [["/" + "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, longest))),
             str(rnd.randrange(1 << 32)), rnd.choice(["file", "dir", "symlink"]),
             "%064x" % rnd.getrandbits(256)] for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("header", [True, False])
def test_same_as_rich_when_the_rows_fit(seed: int, header: bool) -> None:
    rows = _rows(seed, 40, 30)
    title = "Inodes" if header else None
    assert boxtable.render(title, COLUMNS, rows, width=200, flexible=(0, 3),
                           header=header) == _rich(title, rows, 200, header)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_folded_rows_keep_every_cell_and_the_width(width: int) -> None:
    rows = _rows(7, 30, 150)
    text = boxtable.render("Chunks", COLUMNS, rows, width=width, flexible=(0, 3))
    lines = text.splitlines()
    assert all(cell_len(line) == cell_len(lines[1]) <= width for line in lines[1:])
    # every cell's text comes back from its folded pieces, in order
    body = [line for line in lines[4:-1]]
    cells: list[list[str]] = []
    for line in body:
        parts = [p[1:-1].rstrip() for p in line[1:-1].split("│")]
        if parts[1]:            # a row's first line carries its ino
            cells.append(parts)
        else:
            cells[-1] = [a + b for a, b in zip(cells[-1], parts, strict=True)]
    assert cells == rows
    # the widest flexible columns gave up cells alike, as rich does
    w = boxtable.widths(COLUMNS, rows, width, (0, 3))
    assert abs(w[0] - w[3]) <= 1 or min(w[0], w[3]) == max(cell_len(c) for r in rows
                                                            for c in (r[0], r[3]) if c)


def test_ascii_only_box() -> None:
    text = boxtable.render("T", COLUMNS, _rows(3, 5, 20), width=200, flexible=(0,),
                           ascii_only=True)
    assert all(ch in "+-|" for ch in text.splitlines()[1]) and "┃" not in text
