"""The explore browser, driven headless with Textual's pilot (keys in, panes read back), SVG
snapshots of its main screens, and the real command in tmux read off the terminal."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any

from conftest import require_tool
from corpus import Layer, pattern
from stacks import REFUSED, STACKS, build_layers

from nydusfs import sample
from nydusfs.cli.explore_ui import ExploreApp
from nydusfs.errors import LayerError
from nydusfs.explore.analysis import analyze, walk
from nydusfs.explore.inputs import load_image, plan_image, plan_layers
from nydusfs.explore.layers import from_nydus_layer, from_oci_tar

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"
SIZE = (140, 36)


def three_layers(tmp: pathlib.Path) -> tuple[Any, list[str]]:
    tars = [str(layer.write(tmp / f"l{i}.tar")) for i, layer in enumerate(STACKS["three_layers"]().layers)]
    return analyze([from_oci_tar(t) for t in tars]), tars


def run(app: ExploreApp, steps: Any) -> Any:
    async def main() -> Any:
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            return await steps(app, pilot)
    return asyncio.run(main())


async def ready(app: ExploreApp, pilot: Any) -> None:
    """Wait for the worker that computes the figures and the index, and for the screen it
    updates."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert app.ready


def labels(app: ExploreApp) -> list[str]:
    tree = app.query_one("#tree")
    return [str(n.label) for n in tree.root.children]


def details(app: ExploreApp) -> str:
    return str(app.query_one("#info").render())


def test_keys_move_through_tree_layers_and_details(tmp_path: pathlib.Path) -> None:
    analysis, _ = three_layers(tmp_path)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        assert labels(app) == ["+ a/  6 B  L0", "~ d/  2 B  L1", "+ o/  1 B  L0"]
        await pilot.press("down", "down")
        assert app.query_one("#tree").cursor_node.data == b"/d"
        assert "written by: layer 1 (l1.tar)" in details(app)
        assert "layer 0: added (dir)" in details(app) and "layer 1: modified (dir)" in details(app)
        await pilot.press("enter")                      # expand /d: filled on demand
        await pilot.pause()
        d = app.query_one("#tree").cursor_node
        assert [str(c.label) for c in d.children] == ["+ h  2 B  L2"]
        # to the layer list, down to layer 2: its changes, with removal marks
        await pilot.press("shift+tab", "down", "down", "down")
        await pilot.pause()
        assert app.view == 2
        assert labels(app) == ["  a/  2 B", "  d/  2 B", "  o/"]
        await pilot.press("tab", "down", "enter", "down")
        await pilot.pause()
        node = app.query_one("#tree").cursor_node
        assert node.data == b"/a/x"
        assert str(node.label) == "+ x  2 B  L2"
        assert app.query_one("#tree").root.children[1].children is None   # read when first expanded
        app.select(b"/d/e")
        await pilot.pause()
        assert app.query_one("#tree").cursor_node.data == b"/d/e"
        assert str(app.query_one("#tree").cursor_node.label).startswith("h e/")
        assert "in the image: no" in details(app)
        assert "layer 2: hidden (dir)" in details(app)

    run(ExploreApp(analysis), steps)


def test_search_sort_and_changes_only(tmp_path: pathlib.Path) -> None:
    layers = [Layer().dir("usr").file("usr/small", b"s").file("usr/big", pattern(9000, 1))
              .dir("etc").file("etc/motd", b"hello"),
              Layer().file("usr/lib.so", pattern(3000, 2))]
    tars = [str(layer.write(tmp_path / f"l{i}.tar")) for i, layer in enumerate(layers)]
    analysis = analyze([from_oci_tar(t) for t in tars])

    async def steps(app: ExploreApp, pilot: Any) -> None:
        await pilot.press("slash", *"*.so", "enter")
        await pilot.pause()
        assert app.query_one("#tree").cursor_node.data == b"/usr/lib.so"
        assert "written by: layer 1" in details(app)
        await pilot.press("s")
        await pilot.pause()
        usr = next(n for n in app.query_one("#tree").root.children if n.data == b"/usr")
        app.select(b"/usr/big")
        await pilot.pause()
        usr = next(n for n in app.query_one("#tree").root.children if n.data == b"/usr")
        assert [c.data for c in usr.children] == [b"/usr/big", b"/usr/lib.so", b"/usr/small"]
        await pilot.press("s")
        await pilot.pause()
        assert [n.data for n in app.query_one("#tree").root.children] == [b"/etc", b"/usr"]
        # changes only, on layer 1's view: only what layer 1 touched
        await pilot.press("shift+tab", "down", "down")
        await pilot.pause()
        assert [n.data for n in app.query_one("#tree").root.children] == [b"/usr"]
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.query_one("#help").has_class("visible")

    run(ExploreApp(analysis), steps)


def test_nydus_details_show_chunks_and_sharing(tmp_path: pathlib.Path) -> None:
    data = pattern(8192, 3)
    layers = [Layer().file("a", data).hardlink("a2", "a"), Layer().file("b", data)]
    files = build_layers(layers, tmp_path, version=6, layout="B")
    # as the command opens the browser: the walk first, chunk lists read with the figures
    inputs = [from_nydus_layer(str(f), chunks=False) for f in files]
    analysis = walk(inputs)
    assert not analysis.complete and all(not i.chunks for i in inputs)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        app.select(b"/a")
        await pilot.pause()
        text = details(app)
        assert "hard links: /a2" in text
        assert "chunks: 2 in blob" in text
        assert "shares chunks with: /a2, /b" in text

    run(ExploreApp(analysis, inputs), steps)


def _one_layer(tmp: pathlib.Path, layer: Layer) -> Any:
    return analyze([from_oci_tar(str(layer.write(tmp / "l0.tar")))])


def _expected_rows(paths: list[bytes], expanded: set[bytes]) -> list[bytes]:
    """What the tree should show, worked out from the paths alone: an entry is shown when
    every directory above it is expanded, in the order of its components (each directory's
    entries sorted by name, under the directory)."""
    def shown(p: bytes) -> bool:
        parts = p.split(b"/")[1:-1]
        return all(b"/" + b"/".join(parts[:i + 1]) in expanded for i in range(len(parts)))
    return [b"/"] + sorted((p for p in paths if p != b"/" and shown(p)), key=lambda p: p.split(b"/"))


def _screen_lines(tree: Any) -> list[str]:
    """The tree's lines as drawn (Textual's Line API), trailing blanks dropped."""
    lines = [tree.render_line(y).text.rstrip() for y in range(tree.scrollable_content_region.height)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_tree_splices_rows_on_expand_and_collapse(tmp_path: pathlib.Path) -> None:
    layer = (Layer().dir("a").dir("a/b").file("a/b/f1", b"1").file("a/b/f2", b"22").dir("a/c")
             .file("a/c/g", b"3").file("a/z", b"4").dir("m").file("m/n", b"5").file("z", b"6"))
    analysis = _one_layer(tmp_path, layer)
    paths = sorted(analysis.final)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        tree = app.query_one("#tree")

        def check(expanded: set[bytes]) -> None:
            assert [n.path for n in tree.rows] == _expected_rows(paths, expanded)
            # the lines drawn are the rows: each shows its own name, in order
            drawn = _screen_lines(tree)
            assert len(drawn) == len(tree.rows)
            for line, node in zip(drawn, tree.rows, strict=True):
                name = "merged image" if node.path == b"/" else node.path.rsplit(b"/", 1)[1].decode()
                assert name in line, (line, node)

        check({b"/"})
        app.select(b"/z")                               # the cursor below what changes
        await pilot.pause()
        a = tree.root.children[0]
        tree.expand_node(a)
        await pilot.pause()
        check({b"/", b"/a"})
        assert tree.cursor_node.path == b"/z"           # the rows above it moved, not the cursor
        app.select(b"/a/b")
        await pilot.press("enter")                       # expand /a/b
        await pilot.pause()
        check({b"/", b"/a", b"/a/b"})
        assert tree.cursor_node.path == b"/a/b"
        assert "a/b: /a/b" not in details(app) and "path: /a/b" in details(app)
        await pilot.press("down", "down")
        assert tree.cursor_node.path == b"/a/b/f2"
        assert "path: /a/b/f2" in details(app)          # the details follow the cursor
        tree.collapse_node(a)                            # the cursor was inside: it lands on /a
        await pilot.pause()
        check({b"/"})
        assert tree.cursor_node.path == b"/a"
        await pilot.press("space")                       # /a again: /a/b kept its state
        await pilot.pause()
        check({b"/", b"/a", b"/a/b"})
        await pilot.press("e")                           # everything below /a
        await pilot.pause()
        check({b"/", b"/a", b"/a/b", b"/a/c"})
        await pilot.press("home", "e")                   # everything
        await pilot.pause()
        check({p for p in paths if analysis.final[p].kind == "dir"})
        assert tree.cursor_node.path == b"/"
        # a click on a line selects it, and expands or collapses a directory
        row = next(i for i, n in enumerate(tree.rows) if n.path == b"/m")
        await pilot.click("#tree", offset=(3, 1 + row))  # 1: the border
        await pilot.pause()
        assert tree.cursor_node.path == b"/m" and not tree.cursor_node.expanded
        assert b"/m/n" not in [n.path for n in tree.rows]

    run(ExploreApp(analysis), steps)


def test_tree_page_moves_stop_at_the_ends(tmp_path: pathlib.Path) -> None:
    layer = Layer().dir("d")
    for i in range(100):
        layer.file(f"d/f{i:03d}", b"x")
    analysis = _one_layer(tmp_path, layer)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        tree = app.query_one("#tree")
        await pilot.press("down", "enter")
        await pilot.pause()
        height = tree.scrollable_content_region.height
        assert len(tree.rows) == 102 and height < 102
        await pilot.press("pagedown")
        await pilot.pause()
        assert tree.cursor == height - 1 + 1               # a page is the height less one line
        for _ in range(5):
            await pilot.press("pagedown")
        await pilot.pause()
        assert tree.cursor_node.path == b"/d/f099"         # the last line, no further
        assert tree.scroll_y == 102 - height               # the last screenful
        assert _screen_lines(tree)[-1].endswith("f099  1 B  L0")
        assert "path: /d/f099" in details(app)
        await pilot.press("down", "end", "pagedown")
        await pilot.pause()
        assert tree.cursor_node.path == b"/d/f099"
        for _ in range(5):
            await pilot.press("pageup")
        await pilot.pause()
        assert tree.cursor == 0 and tree.scroll_y == 0
        assert "merged image" in _screen_lines(tree)[0]
        await pilot.press("end", "up")
        await pilot.pause()
        assert tree.cursor_node.path == b"/d/f098"
        await pilot.press("pageup")
        await pilot.pause()
        assert tree.cursor == 100 - (height - 1)
        assert tree.scroll_y <= tree.cursor < tree.scroll_y + height

    run(ExploreApp(analysis), steps)


def test_tree_keeps_the_cursor_path_on_sort_and_filter(tmp_path: pathlib.Path) -> None:
    # /w/sub is only implied by its file: no layer wrote it, "changes only" leaves it out
    layer = (Layer().dir("w").file("w/zbig", pattern(5000, 1)).file("w/small", b"s").file("w/sub/f", b"f")
             .dir("x").file("x/a", b"a"))
    analysis = _one_layer(tmp_path, layer)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        tree = app.query_one("#tree")
        app.select(b"/w/small")
        app.select(b"/x/a")
        app.select(b"/w/small")
        await pilot.pause()
        before = [n.path for n in tree.rows]
        await pilot.press("s")                           # by size: /w/zbig first
        await pilot.pause()
        assert tree.cursor_node.path == b"/w/small"
        after = [n.path for n in tree.rows]
        assert sorted(after) == sorted(before) and after != before
        assert after.index(b"/w/zbig") < after.index(b"/w/small")
        assert tree.root.children[1].expanded            # /x stayed expanded
        assert "path: /w/small" in details(app)
        await pilot.press("s")
        await pilot.pause()
        assert [n.path for n in tree.rows] == before
        app.select(b"/w/sub/f")
        await pilot.press("c")                           # changes only: the cursor stays
        await pilot.pause()
        assert tree.cursor_node.path == b"/w/sub/f"
        assert "path: /w/sub/f" in details(app)

    run(ExploreApp(analysis), steps)


def test_tree_reload_falls_back_to_the_nearest_directory(tmp_path: pathlib.Path) -> None:
    """The tree read again with the cursor's entry gone (as when more of the image comes in):
    the cursor goes to the nearest directory above it that is still there."""
    analysis, _ = three_layers(tmp_path)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        tree = app.query_one("#tree")
        app.select(b"/a/y")                              # written by layer 0 only
        await pilot.pause()
        app.view = 2                                     # layer 2's changes: /a/x, not /a/y
        app._refresh_tree()
        await pilot.pause()
        assert tree.cursor_node.path == b"/a"
        assert [n.path for n in tree.cursor_node.children] == [b"/a/x"]
        assert tree.cursor_node.expanded
        assert "path: /a" in details(app).splitlines()[0]
        assert "layer 2: l2.tar" in _screen_lines(tree)[0]

    run(ExploreApp(analysis), steps)


def test_tree_escapes_names(tmp_path: pathlib.Path) -> None:
    analysis = _one_layer(tmp_path, Layer().file(b"evil\x1b[31mred\x07", b"x").file("[red]b[red]", b"y"))

    async def steps(app: ExploreApp, pilot: Any) -> None:
        lines = _screen_lines(app.query_one("#tree"))
        assert any("evil\\x1b[31mred\\x07" in line for line in lines), lines
        assert any("+ [red]b[red]  1 B" in line for line in lines), lines   # as text, not markup
        assert not any("\x1b" in line or "\x07" in line for line in lines)

    run(ExploreApp(analysis), steps)


def _snapshot(name: str, svg: str) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("NYDUSFS_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(svg)
    assert path.exists(), f"{path} missing: run with NYDUSFS_UPDATE_SNAPSHOTS=1 once"
    assert svg == path.read_text(), f"screen {name} differs from {path} (NYDUSFS_UPDATE_SNAPSHOTS=1 to renew)"


def test_main_screens_match_snapshots(tmp_path: pathlib.Path) -> None:
    analysis, _ = three_layers(tmp_path)

    async def steps(app: ExploreApp, pilot: Any) -> None:
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        _snapshot("explore-merged", app.export_screenshot())
        await pilot.press("shift+tab", "down", "down", "down", "tab", "e")
        await pilot.pause()
        _snapshot("explore-layer", app.export_screenshot())
        await pilot.press("question_mark")
        await pilot.pause()
        _snapshot("explore-help", app.export_screenshot())

    run(ExploreApp(analysis), steps)


def _tmux(session: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """tmux on a server of the test's own (-L): a shared server carries its starter's
    environment (COLUMNS, LINES) into every session, and another user may stop it."""
    return subprocess.run(["tmux", "-L", session, *args], capture_output=True, text=True, check=check)


def _screen(session: str) -> str:
    return _tmux(session, "capture-pane", "-p", "-t", session).stdout


def test_real_command_in_tmux(tmp_path: pathlib.Path) -> None:
    require_tool("tmux")
    _, tars = three_layers(tmp_path)
    session = f"nydusfs-explore-{os.getpid()}"
    cmd = " ".join([sys.executable, "-m", "nydusfs", "explore", *tars])
    _tmux(session, "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", "140", "-y", "36",
          "env", "-u", "COLUMNS", "-u", "LINES", "TERM=xterm-256color", "sh", "-c", cmd)
    try:
        deadline = time.monotonic() + 60
        # the layer list comes first, the tree once the layers are read ("9 entries")
        while not all(s in (screen := _screen(session)) for s in ("9 entries", "L2 l2.tar", "d/")):
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
        _tmux(session, "send-keys", "-t", session, "Down", "Down")
        while "written by: layer 1 (l1.tar)" not in (screen := _screen(session)):
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
        _tmux(session, "send-keys", "-t", session, "q")
        while _tmux(session, "has-session", "-t", session, check=False).returncode == 0:
            assert time.monotonic() < deadline, "explore did not quit on q"
            time.sleep(0.2)
    finally:
        _tmux(session, "kill-server", check=False)


# --- the progressive start: the browser opens before the layers are read ------------------------

def gate(plan: Any) -> list[threading.Event]:
    """Hold each layer's (real) read until the test lets it through."""
    gates = [threading.Event() for _ in plan.layers]
    for pending, event in zip(plan.layers, gates, strict=True):
        read = pending.read
        pending.read = lambda read=read, event=event: (event.wait(60), read())[1]
    return gates


async def until(pilot: Any, done: Any) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, "the browser did not get there"
        await pilot.pause(0.01)


def progress(app: ExploreApp) -> str | None:
    line = app.query_one("#progress")
    return str(line.render()) if line.has_class("visible") else None


def layer_list(app: ExploreApp) -> list[str]:
    return [str(item.query_one("Label").render()) for item in app.query_one("#layers").children]


def test_progressive_start_fills_layer_by_layer_and_keeps_the_cursor(tmp_path: pathlib.Path) -> None:
    _, tars = three_layers(tmp_path)
    plan = plan_layers(tars, chunks=False)
    gates = gate(plan)

    async def main() -> None:
        app = ExploreApp(plan=plan)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            # the layer list is there before a layer is read; the tree is empty
            rows = layer_list(app)
            assert len(rows) == 4 and rows[0].startswith("merged image")
            assert all("not read yet" in r for r in rows[1:])
            assert rows[1].startswith("L0 l0.tar") and rows[3].startswith("L2 l2.tar")
            assert labels(app) == []
            assert progress(app) == "reading layer 1 of 3…"
            gates[0].set()
            await until(pilot, lambda: len(app.analysis.layers) == 1)
            await pilot.pause()
            assert labels(app) == ["+ a/  L0", "+ d/  L0", "+ o/  L0"]
            assert progress(app) == "reading layer 2 of 3…"
            assert "not read yet" not in layer_list(app)[1] and "not read yet" in layer_list(app)[2]
            # a path chosen while the next layers are read stays chosen
            await pilot.press("down", "enter", "down", "down")
            await pilot.pause()
            assert app.query_one("#tree").cursor_node.data == b"/a/y"
            gates[1].set()
            await until(pilot, lambda: len(app.analysis.layers) == 2)
            await pilot.pause()
            assert labels(app) == ["+ a/  L0", "~ d/  L1", "+ o/  L0"]
            assert app.query_one("#tree").cursor_node.data == b"/a/y"
            assert "pending" in details(app)
            gates[2].set()
            await until(pilot, lambda: app.tree_complete)
            await pilot.pause()
            assert progress(app) is None
            assert app.query_one("#tree").cursor_node.data == b"/a/y"
            await until(pilot, lambda: app.ready)
            await pilot.pause()
            assert labels(app) == ["+ a/  6 B  L0", "~ d/  2 B  L1", "+ o/  1 B  L0"]
            assert app.query_one("#tree").cursor_node.data == b"/a/y"
            assert "written by: layer 0 (l0.tar)" in details(app) and "pending" not in details(app)
    asyncio.run(main())


def test_progressive_nydus_image_shows_the_merged_tree_first(tmp_path: pathlib.Path) -> None:
    oci = sample.write_layout(str(tmp_path / "src"), "v1")
    ref = f"oci:{tmp_path / 'nydus'}:v1"
    r = subprocess.run([sys.executable, "-m", "nydusfs", "convert", oci, ref, "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    expected = analyze(load_image(oci))               # the OCI layers: a reader of their own
    top = sorted(p for p in expected.final if p.count(b"/") == 1 and p != b"/")
    deep = sorted(p for p, seen in expected.final.items() if p.count(b"/") == 2 and seen.kind == "file")[0]

    async def main() -> None:
        with plan_image(ref, chunks=False) as plan:
            gates = gate(plan)
            app = ExploreApp(plan=plan)
            async with app.run_test(size=SIZE) as pilot:
                await pilot.pause()
                # before any layer: the final tree from the merged bootstrap, without marks
                tree = app.query_one("#tree")
                assert [n.data for n in tree.root.children] == top
                assert all(not str(n.label).startswith(("+", "~")) for n in tree.root.children)
                rows = layer_list(app)
                assert len(rows) == 4 and all("not read yet" in r for r in rows[1:])
                assert "sample layer update" in rows[2]          # created_by from the config
                assert progress(app) == "reading layer 1 of 3…"
                app.select(deep)
                await pilot.pause()
                assert tree.cursor_node.data == deep
                assert "mode:" in details(app) and "pending" in details(app)
                for g in gates:
                    g.set()
                await until(pilot, lambda: app.tree_complete)
                await pilot.pause()
                assert progress(app) is None
                assert tree.cursor_node.data == deep
                assert [n.data for n in tree.root.children] == top
                writer = expected.writer(deep)
                assert f"written by: layer {writer}" in details(app)
                assert str(tree.cursor_node.label).split()[-1] == f"L{writer}"
                await until(pilot, lambda: app.ready)
    asyncio.run(main())


def test_progressive_start_with_a_bad_layer_quits_with_its_error(tmp_path: pathlib.Path) -> None:
    _, tars = three_layers(tmp_path)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(pathlib.Path(tars[1]).read_bytes()[:700])      # cut inside a member's data
    # a layer that reads but cannot be applied: a hard link to a file its own layer removed
    refused = [str(layer.write(tmp_path / f"r{i}.tar"))
               for i, layer in enumerate(REFUSED["marker-link-then-dir-replaced"]())]

    async def main(plan: Any) -> ExploreApp:
        app = ExploreApp(plan=plan)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app._error is not None)
        return app
    for paths, name in (([tars[0], str(bad)], "bad.tar"), (refused, "r1.tar")):
        app = asyncio.run(main(plan_layers(paths, chunks=False)))
        assert isinstance(app._error, LayerError) and name in str(app._error)
        assert app.return_code == 2


def test_a_layer_chosen_before_it_is_read_fills_when_it_arrives(tmp_path: pathlib.Path) -> None:
    _, tars = three_layers(tmp_path)
    plan = plan_layers(tars, chunks=False)
    gates = gate(plan)

    async def main() -> None:
        app = ExploreApp(plan=plan)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("shift+tab", "down", "down", "down")
            await pilot.pause()
            assert app.view == 2
            tree = app.query_one("#tree")
            assert str(tree.root.label) == "layer 2: l2.tar (not read yet)" and labels(app) == []
            for g in gates:
                g.set()
            await until(pilot, lambda: app.tree_complete)
            await pilot.pause()
            assert str(tree.root.label) == "layer 2: l2.tar"
            assert labels(app) == ["  a/  2 B", "  d/  2 B", "  o/"]
            await until(pilot, lambda: app.ready)
    asyncio.run(main())
