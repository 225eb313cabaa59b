"""The interactive browser of `nydusfs explore` (Textual): layers, a tree, details.

Everything shown comes from nydusfs/explore/browse.py; this module only lays it out. Names
from the image go into widgets as rich Text made safe by `shown`, never as markup."""

from __future__ import annotations

import gc
import threading
from typing import Any, Callable

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Label, ListItem, ListView, Static

from ..explore.analysis import Analysis, Walk, figures
from ..explore.browse import MERGED, Browser, Item
from ..explore.inputs import Plan, read_in_order
from ..explore.layers import LayerInput
from ..explore.preview import Loading, Preview
from .explore import size_text
from .explore_details import DetailsView
from .explore_tree import EntryTree, Node
from .show import shown

KEY_BAR = ("tab pane  ↑↓ move  enter expand  c changes only  s sort by size  / search  "
           "e expand all  ? help  q quit")
MARK_STYLE = {"added": "green", "modified": "yellow", "type-changed": "magenta", "deleted": "red",
              "hidden": "red", "replaced": "red"}
MARK_SIGN = {"added": "+", "modified": "~", "type-changed": "T", "deleted": "-", "hidden": "h",
             "replaced": "r"}

HELP = """\
keys: tab/shift+tab next/previous pane · up/down move · enter/space expand or collapse ·
c changes only · s sort by size/name · / search (glob, enter to jump) · e expand all here ·
? this help · q quit
marks: + added  ~ modified  T type changed  - deleted by whiteout  h hidden by an opaque
directory  r removed with a replaced parent.  In the merged view a mark tells how the visible
version came, with the layer that wrote it."""


def label(item: Item) -> Text:
    t = Text()
    if item.mark:
        t.append(f"{MARK_SIGN.get(item.mark, ' ')} ", style=MARK_STYLE.get(item.mark, ""))
    else:
        t.append("  ")
    t.append(shown(item.name.decode("utf-8", "surrogateescape")), style="bold" if item.is_dir else "")
    if item.is_dir:
        t.append("/")
    extra = size_text(item.size) if item.size or (item.kind == "file" and item.size is not None) else ""
    if item.layer is not None and item.mark:
        extra += f"  L{item.layer}"
    if extra:
        t.append(f"  {extra.strip()}", style="dim")
    return t


class ExploreScreen(Screen[None]):
    """Textual's Screen repaints all of itself when the focus moves; the two panes whose style
    changes repaint themselves, so a pane change draws those two alone."""

    focused: Reactive[Widget | None] = Reactive(None, repaint=False)


class LayerList(ListView):
    """A ListView that calls `on_index` in the step that moves the highlight (its Highlighted
    message would change the tree one screen update later), and does not repaint itself on a
    change of focus (only the highlighted item's colours change, and the item repaints)."""

    def __init__(self, *items: ListItem, on_index: Callable[[int], None], id: str | None = None) -> None:
        super().__init__(*items, id=id)
        self._on_index = on_index

    def watch_index(self, old_index: int | None, new_index: int | None) -> None:
        super().watch_index(old_index, new_index)
        if new_index is not None:
            self._on_index(new_index)

    def _on_focus(self, event: events.Focus) -> None:
        event.prevent_default()
        self.has_focus = True
        if self.parent is not None:
            self.parent.post_message(events.DescendantFocus(self))

    def _on_blur(self, event: events.Blur) -> None:
        event.prevent_default()
        self.has_focus = False
        if self.parent is not None:
            self.parent.post_message(events.DescendantBlur(self))


class ExploreApp(App[None]):
    TITLE = "nydusfs explore"
    CSS = """
    /* no tint when focused (the highlight's colours show it): a tint redraws the whole pane */
    #layers { width: 40; border: round $accent; background-tint: transparent; }
    #tree { width: 1fr; border: round $accent; }
    #details { width: 48; border: round $accent; padding: 0 1; }
    #search { dock: top; display: none; }
    #search.visible { display: block; }
    #help { dock: bottom; height: auto; display: none; background: $panel; padding: 0 1; }
    #help.visible { display: block; }
    #keys { dock: bottom; height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    #progress { height: 1; display: none; padding: 0 1; color: $warning; }
    #progress.visible { display: block; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("c", "changes_only", "changes only"),
        Binding("s", "sort", "sort by size"),
        Binding("slash", "search", "search"),
        Binding("e", "expand_all", "expand all"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, analysis: Analysis | None = None, layers: list[LayerInput] | None = None,
                 plan: Plan | None = None) -> None:
        """`analysis` may be a bare walk (`complete` false): the figures are then computed from
        `layers` in a worker thread, with the browser's index, and filled in when ready. With
        `plan` instead (layers not read yet), the browser opens with the layer list the plan
        knows (and a Nydus image's merged tree) and reads the layers in the background."""
        super().__init__()
        self._plan = plan
        self._error: BaseException | None = None
        self.browser: Browser | Loading
        if plan is not None:
            self._walk = Walk()
            analysis, layers = self._walk.analysis, []
            preview = Preview(plan.merged()) if plan.merged is not None else None
            self.browser = Loading(Browser(analysis), preview)
        else:
            assert analysis is not None
            self.browser = Browser(analysis)
        self.analysis = analysis
        self._layers = layers
        self.view = MERGED
        self.changes_only = False
        self.by_size = False
        self.started = False                    # the first screen is composed
        self.tree_complete = plan is None       # every layer in: the merged tree is final
        self.ready = False                      # figures and index in

    def get_default_screen(self) -> Screen[None]:
        return ExploreScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield Input(placeholder="glob, e.g. *.so or /usr/lib/*", id="search")
        with Horizontal():
            yield LayerList(*self._layer_items(), on_index=self._view_chosen, id="layers")
            yield EntryTree(self._entries, label, self._cursor_on, id="tree")
            with Vertical(id="details"):
                yield DetailsView(id="info")
        yield Static(id="progress")                 # below the panes while layers are read
        yield Static(Text(HELP), id="help")
        # a fixed key bar: Textual's Footer is rebuilt on every change of focus
        yield Static(Text(KEY_BAR), id="keys")

    def _layer_items(self) -> list[ListItem]:
        self._merged_label = Label(self._merged_text())
        items = [ListItem(self._merged_label)]
        count = len(self._plan.layers) if self._plan is not None else len(self.analysis.layers)
        self._layer_labels = [Label(self._layer_text(i)) for i in range(count)]
        items.extend(ListItem(label) for label in self._layer_labels)
        return items

    def _merged_text(self) -> Text:
        if not self.tree_complete:
            return Text("merged image\n  reading the layers…", style="bold")
        return Text(f"merged image\n  {len(self.analysis.final)} entries", style="bold")

    def _layer_name(self, i: int) -> str:
        if i < len(self.analysis.layers):
            return self.analysis.layers[i].name
        assert self._plan is not None
        return self._plan.layers[i].name

    def _layer_text(self, i: int) -> Text:
        if i >= len(self.analysis.layers):          # not read yet: what the manifest says
            assert self._plan is not None
            p = self._plan.layers[i]
            text = Text(f"L{i} ", style="bold")
            text.append(shown(p.name[:20]))
            text.append(f"\n  not read yet  {size_text(p.source_size if p.source_size is not None else p.nydus_size)}",
                        style="dim")
            if p.created_by:
                text.append("\n  " + shown(p.created_by[:60]), style="italic dim")
            return text
        r = self.analysis.layers[i]
        c = r.counts()
        text = Text(f"L{r.index} ", style="bold")
        text.append(shown(r.name[:20]))
        wasted = size_text(r.wasted_bytes) if self.analysis.complete else "…"
        text.append(f"\n  +{c['added']} ~{c['modified']} -{c['deleted'] + c['hidden'] + c['replaced']}"
                    f"  {size_text(r.source_size if r.source_size is not None else r.nydus_size)}"
                    f"  wasted {wasted}", style="dim")
        if r.created_by:
            text.append("\n  " + shown(r.created_by[:60]), style="italic dim")
        return text

    def on_mount(self) -> None:
        self.query_one("#layers").border_title = "layers"
        self.query_one("#layers").border_subtitle = "computing waste and dedup…"
        self.query_one("#tree").border_title = "tree"
        self.query_one("#details").border_title = "details"
        self._reload()
        self.query_one("#tree").focus()
        if self._plan is None:
            self.run_worker(self._prepare, thread=True, exit_on_error=True, group="figures")
        else:
            self.query_one("#layers").border_subtitle = ""
            self._progress()
            # after the first screen is drawn: the readers would delay it (the GIL)
            self.call_after_refresh(self._start_reading)
        self.started = True

    # --- the layers, read in the background --------------------------------------------------------
    def _start_reading(self) -> None:
        threading.Thread(target=self._read_layers, name="explore-layers", daemon=True).start()

    def _read_layers(self) -> None:
        """A daemon thread (quitting does not wait for a layer): the layers in order, each
        applied on the app's thread (the tree it changes is the one the screen reads)."""
        assert self._plan is not None
        try:
            for layer in read_in_order(self._plan.layers):
                self._from_thread(self._layer_in, layer)
        except BaseException as e:  # noqa: BLE001 - bad input: the app quits and says why
            self._from_thread(self._failed, e)
            return
        self._from_thread(self._all_in)

    def _from_thread(self, callback: Any, *args: Any) -> None:
        try:
            self.call_from_thread(callback, *args)
        except RuntimeError:                        # the app has quit meanwhile
            pass

    def _progress(self) -> None:
        line = self.query_one("#progress", Static)
        if self.tree_complete or self._plan is None:
            line.remove_class("visible")
            return
        n, total = len(self.analysis.layers), len(self._plan.layers)
        line.update(Text(f"reading layer {n + 1} of {total}…"))
        line.add_class("visible")

    def _layer_in(self, layer: LayerInput) -> None:
        i = len(self.analysis.layers)
        self._walk.add(layer)
        assert self._layers is not None
        self._layers.append(layer)
        self._layer_labels[i].update(self._layer_text(i))
        self._progress()
        loading = self.browser
        if self.view == i or (self.view == MERGED and isinstance(loading, Loading) and loading.preview is None):
            self._refresh_tree()

    def _all_in(self) -> None:
        loading = self.browser
        assert isinstance(loading, Loading)
        self.browser = loading.browser
        self.tree_complete = True
        self._merged_label.update(self._merged_text())
        self._progress()
        if self.view == MERGED and loading.preview is not None:
            self._refresh_tree()                    # the preview's tree, now with marks
        self.query_one("#layers").border_subtitle = "computing waste and dedup…"
        self.run_worker(self._prepare, thread=True, exit_on_error=True, group="figures")

    def _failed(self, error: BaseException) -> None:
        self._error = error
        self.exit(return_code=2)

    # --- the figures, in a worker thread ------------------------------------------------------------
    def _prepare(self) -> None:
        """Waste, dedup and the browser's index: whole-image passes kept off the first screen
        and off every key press."""
        if not self.analysis.complete:
            figures(self.analysis, self._layers or [])
        assert isinstance(self.browser, Browser)
        self.browser.prepare()
        self.call_from_thread(self._figures_ready)

    def _figures_ready(self) -> None:
        s = self.analysis
        self.ready = True
        # the image's millions of objects are there to stay: out of the collector's full
        # passes, which would otherwise stop a key press for a few hundred milliseconds
        gc.freeze()
        self.query_one("#layers").border_subtitle = (f"efficiency {100 * s.efficiency:.1f}% · "
                                                     f"wasted {size_text(s.wasted_bytes)}")
        for i, label in enumerate(self._layer_labels):
            label.update(self._layer_text(i))
        self._refresh_tree()                         # directory sizes in (and their order)

    def on_unmount(self) -> None:
        gc.unfreeze()                                # the image's objects can go with the app

    # --- the tree ---------------------------------------------------------------------------------
    def _title(self) -> Text:
        title = "merged image" if self.view == MERGED else f"layer {self.view}: {self._layer_name(self.view)}"
        if self.view >= len(self.analysis.layers):
            title += " (not read yet)"
        return Text(shown(title))

    def _reload(self) -> None:
        """The tree of the current view from its root, the cursor on the root."""
        self.query_one("#tree", EntryTree).reset(self._title())

    def _refresh_tree(self) -> None:
        """The tree of the current view anew (sort, filter, sizes or entries changed): what
        was expanded stays expanded, the cursor stays on its path (or on the nearest directory
        above it that is still there)."""
        self.query_one("#tree", EntryTree).reload(self._title())

    def _entries(self, path: bytes) -> list[Item]:
        return self.browser.children(self.view, path, self.changes_only, self.by_size)

    def _cursor_on(self, node: Node) -> None:
        self._show(node.path)

    def _show(self, path: bytes) -> None:
        text = Text()
        for key, value in self.browser.details(path):
            text.append(f"{key}: ", style="bold")
            text.append(shown(value) + "\n")
        self.query_one("#info", DetailsView).update(text)

    # --- layers -------------------------------------------------------------------------------------
    def _view_chosen(self, index: int) -> None:
        view = MERGED if index == 0 else index - 1
        if view != self.view:
            self.view = view
            self._reload()

    # --- actions ------------------------------------------------------------------------------------
    def action_changes_only(self) -> None:
        self.changes_only = not self.changes_only
        self._refresh_tree()
        self.notify("changes only" if self.changes_only else "all entries")

    def action_sort(self) -> None:
        self.by_size = not self.by_size
        self._refresh_tree()
        if self.by_size and not self.ready:
            self.notify("directory sizes are being computed: sorted when they are in")
        else:
            self.notify("sorted by size" if self.by_size else "sorted by name")

    def action_expand_all(self) -> None:
        tree = self.query_one("#tree", EntryTree)
        # up to 5000 entries at once: the screen stays responsive on huge trees
        tree.expand_all(tree.cursor_node or tree.root, budget=5000)

    def action_help(self) -> None:
        self.query_one("#help", Static).toggle_class("visible")

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("visible")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        box = event.input
        box.remove_class("visible")
        hits = self.browser.search(self.view, event.value, limit=1) if event.value else []
        if not hits:
            self.notify(f"no match for {shown(event.value)!s}", severity="warning")
            self.query_one("#tree").focus()
            return
        self.select(hits[0])

    def select(self, path: bytes, focus: bool = True) -> None:
        """Expand the tree down to `path` and put the cursor on it."""
        tree = self.query_one("#tree", EntryTree)
        tree.select_path(path)
        if focus:
            tree.focus()


def run_ui(analysis: Analysis | None = None, layers: list[LayerInput] | None = None,
           plan: Plan | None = None) -> None:
    """The browser; with `plan`, a layer that cannot be read closes it and its error is raised."""
    app = ExploreApp(analysis, layers, plan)
    app.run()
    if app._error is not None:
        raise app._error
