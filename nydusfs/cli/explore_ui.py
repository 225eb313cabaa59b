"""The interactive browser of `nydusfs explore` (Textual): layers, a tree, details.

Everything shown comes from nydusfs/explore/browse.py; this module only lays it out. Names
from the image go into widgets as rich Text made safe by `shown`, never as markup."""

from __future__ import annotations

import gc
from typing import Callable

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Label, ListItem, ListView, Static

from ..explore.analysis import Analysis, figures
from ..explore.browse import MERGED, Browser, Item
from ..explore.layers import LayerInput
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
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("c", "changes_only", "changes only"),
        Binding("s", "sort", "sort by size"),
        Binding("slash", "search", "search"),
        Binding("e", "expand_all", "expand all"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, analysis: Analysis, layers: list[LayerInput] | None = None) -> None:
        """`analysis` may be a bare walk (`complete` false): the figures are then computed from
        `layers` in a worker thread, with the browser's index, and filled in when ready."""
        super().__init__()
        self.browser = Browser(analysis)
        self.analysis = analysis
        self._layers = layers
        self.view = MERGED
        self.changes_only = False
        self.by_size = False
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
        yield Static(Text(HELP), id="help")
        # a fixed key bar: Textual's Footer is rebuilt on every change of focus
        yield Static(Text(KEY_BAR), id="keys")

    def _layer_items(self) -> list[ListItem]:
        s = self.analysis
        items = [ListItem(Label(Text(f"merged image\n  {len(s.final)} entries", style="bold")))]
        self._layer_labels = [Label(self._layer_text(i)) for i in range(len(s.layers))]
        items.extend(ListItem(label) for label in self._layer_labels)
        return items

    def _layer_text(self, i: int) -> Text:
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
        self.run_worker(self._prepare, thread=True, exit_on_error=True, group="figures")

    # --- the figures, in a worker thread ------------------------------------------------------------
    def _prepare(self) -> None:
        """Waste, dedup and the browser's index: whole-image passes kept off the first screen
        and off every key press."""
        if not self.analysis.complete:
            figures(self.analysis, self._layers or [])
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
        title = "merged image" if self.view == MERGED else f"layer {self.view}: {self.analysis.layers[self.view].name}"
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


def run_ui(analysis: Analysis, layers: list[LayerInput] | None = None) -> None:
    ExploreApp(analysis, layers).run()
