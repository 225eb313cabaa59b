#!/usr/bin/env python3
"""How fast `nydusfs explore` answers: first screen, key presses, and the figures in the
background. Run with the project's Python (it drives the Textual app headless with its pilot);
tools/bench runs it in its explore section.

  bench_explore.py first-screen IMAGE|LAYER... [--runs N]
      a fresh process per run, the browser opened as `nydusfs explore` opens it: from the
      process's start (interpreter and imports included) to the first screen (the layer list
      from the manifest and config, and the tree as docs/explore.md defines it), to the tree
      complete (every layer read and applied, the merged tree final), and to the figures
      filled in; wall time and the process's CPU time (which a loaded machine disturbs much
      less)
  bench_explore.py keys IMAGE|LAYER... [--presses N]
      one process: after the figures are in and everything below the root is expanded (the
      browser's `e`: up to 5000 entries), N key presses of each kind (cursor down and up,
      page down and up, expand/collapse, next pane, the next layer in the layer list); the time from
      a key to the end of the screen update it causes, and the CPU time it took

Prints one JSON document: seconds for first-screen, milliseconds (median, p95, max, per key
and over all keys) for keys, with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def _load(args: list[str]) -> tuple[Any, Any]:
    from nydusfs.explore.analysis import walk
    from nydusfs.explore.inputs import is_reference, load_image, load_layers

    # as `nydusfs explore` opens the browser: chunk lists are read with the figures
    layers = (load_image(args[0], chunks=False) if len(args) == 1 and is_reference(args[0])
              else load_layers(args, chunks=False))
    return walk(layers), layers


def _hook_refresh(app: Any, stamps: list[float]) -> None:
    """Record the end of every screen update that had something to draw (Textual's update
    timer: layout, then the compositor's render of the dirty widgets)."""
    screen = app.screen
    inner = screen._on_timer_update

    def update() -> None:
        work = bool(screen._dirty_widgets or screen._layout_required or screen._repaint_required
                    or screen._scroll_required)
        inner()
        if work:
            stamps.append(time.perf_counter())
    screen._on_timer_update = update
    screen._update_timer._callback = update      # the timer holds the method it was made with


def child_first_screen(start: float, args: list[str]) -> None:
    """Runs in a fresh process: `start` is the parent's clock (time.time()) at spawn. Opens
    the browser as `nydusfs explore` does (the layers read in its background) and stamps the
    first screen (layer list and tree as docs/explore.md defines them), the tree complete
    (every layer in, the merged tree final) and the figures in."""
    from contextlib import ExitStack

    from nydusfs.cli.explore_ui import ExploreApp
    from nydusfs.explore.inputs import is_reference, plan_image, plan_layers

    out: dict[str, float] = {}
    with ExitStack() as stack:
        plan = (stack.enter_context(plan_image(args[0], chunks=False)) if len(args) == 1 and is_reference(args[0])
                else plan_layers(args, chunks=False))
        app = ExploreApp(plan=plan)

        def stamp(name: str) -> None:
            app.screen._on_timer_update()        # draw what is pending
            out[name] = time.time() - start
            out[name + "_cpu"] = time.process_time()

        async def main() -> None:
            async with app.run_test(size=(140, 40)) as pilot:
                while not app.started:
                    await asyncio.sleep(0.002)
                stamp("first_screen")
                while not app.tree_complete:
                    await asyncio.sleep(0.002)
                stamp("tree_complete")
                while not app.ready:
                    await asyncio.sleep(0.005)
                await pilot.pause()
                stamp("figures")
        asyncio.run(main())
    print(json.dumps(out))


def first_screen(args: list[str], runs: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {k: [] for k in ("first_screen", "first_screen_cpu", "tree_complete",
                                                       "tree_complete_cpu", "figures", "figures_cpu")}
    for _ in range(runs):
        start = time.time()
        p = subprocess.run([sys.executable, __file__, "_child", repr(start), *args], capture_output=True,
                           text=True, timeout=600)
        if p.returncode:
            raise SystemExit(f"first-screen run failed: {p.stderr[-2000:]}")
        got = json.loads(p.stdout.strip().splitlines()[-1])
        for k in samples:
            samples[k].append(got[k])
    return {k: {"median": statistics.median(v), "samples": v} for k, v in samples.items()}


KEYS = ["down", "up", "page", "enter", "tab", "layer"]
CHARS = {"enter": "\r", "tab": "\t"}


def keys(args: list[str], presses: int) -> dict[str, Any]:
    from nydusfs.cli.explore_ui import ExploreApp

    analysis, layers = _load(args)
    app = ExploreApp(analysis, layers)
    wall: dict[str, list[float]] = {k: [] for k in KEYS}
    cpu: dict[str, list[float]] = {k: [] for k in KEYS}

    async def main() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            tree = app.query_one("#tree")
            await pilot.press("e")                      # expand all (up to 5000 entries): many rows
            await app.workers.wait_for_complete()
            await pilot.pause()
            stamps: list[float] = []
            _hook_refresh(app, stamps)

            from textual import events

            async def press(kind: str, key: str) -> None:
                """The key as the terminal driver delivers it (the pilot's own waits for idle
                would be measured too), then wait for the screen to settle."""
                stamps.clear()
                t, c = time.perf_counter(), time.process_time()
                app._driver.send_message(events.Key(key, CHARS.get(key)))
                while not stamps or time.perf_counter() - stamps[-1] < 0.03:   # screen settled
                    await asyncio.sleep(0.005)
                    if time.perf_counter() - t > 1:          # the key changed nothing
                        break
                if stamps:
                    wall[kind].append(stamps[-1] - t)
                    cpu[kind].append(time.process_time() - c)

            for _ in range(presses):
                await press("down", "down")
            for _ in range(presses):
                await press("up", "up")
            for i in range(presses):                    # a page down, a page up, ...
                await press("page", "pageup" if i % 2 else "pagedown")
            tree.move_cursor(tree.root)
            await pilot.pause()
            for _ in range(presses):                    # expand, then collapse, a directory
                for _ in range(100):                    # the next directory down
                    if tree.cursor_node is not None and tree.cursor_node.allow_expand:
                        break
                    await pilot.press("down")
                await press("enter", "enter")
                await press("enter", "enter")
                await pilot.press("down")
            for _ in range(presses):
                await press("tab", "tab")
            await pilot.press("tab", "tab")             # back on the tree
            app.query_one("#layers").focus()
            await pilot.pause()
            n = len(analysis.layers)                    # the next layer: the tree is rebuilt
            for i in range(presses):                    # down the list, then up it, ...
                await press("layer", "down" if (i // n) % 2 == 0 else "up")
    asyncio.run(main())

    def summary(v: list[float]) -> dict[str, float]:
        v = sorted(v)
        return {"n": len(v), "median_ms": 1000 * statistics.median(v),
                "p95_ms": 1000 * v[min(len(v) - 1, int(0.95 * len(v)))], "max_ms": 1000 * v[-1]}
    every = [x for k in KEYS for x in wall[k]]
    return {"entries": len(analysis.final),
            "keys": {k: {**summary(wall[k]), "cpu_median_ms": 1000 * statistics.median(cpu[k])}
                     for k in KEYS if wall[k]},
            "all": summary(every)}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        child_first_screen(float(sys.argv[2]), sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("first-screen", "keys"))
    ap.add_argument("image", nargs="+", metavar="IMAGE|LAYER")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--presses", type=int, default=40)
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    result = first_screen(a.image, a.runs) if a.what == "first-screen" else keys(a.image, a.presses)
    result["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
