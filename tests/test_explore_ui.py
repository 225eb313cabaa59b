"""The explore browser, driven headless with Textual's pilot (keys in, panes read back), SVG
snapshots of its main screens, and the real command in tmux read off the terminal."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from conftest import require_tool
from corpus import Layer, pattern
from stacks import STACKS, build_layers

from nydusfs.cli.explore_ui import ExploreApp
from nydusfs.explore.analysis import analyze, walk
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
        d_children = [str(c.label) for c in app.query_one("#tree").root.children[1].children]
        assert d_children == ["…"]                      # filled when first expanded
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


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


def test_real_command_in_tmux(tmp_path: pathlib.Path) -> None:
    require_tool("tmux")
    _, tars = three_layers(tmp_path)
    session = f"nydusfs-explore-{os.getpid()}"
    cmd = " ".join([sys.executable, "-m", "nydusfs", "explore", *tars])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "36",
                    "env", "TERM=xterm-256color", "sh", "-c", cmd], check=True)
    try:
        deadline = time.monotonic() + 60
        # the layer list may be drawn after the tree: wait for both
        while not all(s in (screen := _screen(session)) for s in ("merged image", "L2 l2.tar")):
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "Down", "Down"], check=True)
        while "written by: layer 1 (l1.tar)" not in (screen := _screen(session)):
            assert time.monotonic() < deadline, screen
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "explore did not quit on q"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
