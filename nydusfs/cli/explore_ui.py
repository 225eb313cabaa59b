"""The interactive browser of `nydusfs explore` (Textual): layers, a tree, details.

Everything shown comes from nydusfs/explore/browse.py; this module only lays it out. Names
from the image go into widgets as rich Text made safe by `shown`, never as markup."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.scroll_view import ScrollView
from textual.widgets import Input, Label, ListItem, ListView, Static, Tree
from textual.widgets.tree import TreeNode

from ..explore.analysis import Analysis, figures
from ..explore.browse import MERGED, Browser, Item
from ..explore.layers import LayerInput
from .explore import size_text
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


class ImageTree(Tree[Any]):
    """Textual's Tree without two passes over every expanded entry: a line's width is its
    label's length plus the expand icon (no label rendered), and a change of style (the tree
    gaining or losing focus) redraws the lines shown without rebuilding the list of lines."""

    def get_label_width(self, node: TreeNode[Any]) -> int:
        text = node.label
        width = text.cell_len if isinstance(text, Text) else cell_len(text)
        if not node.allow_expand:
            return width
        return width + cell_len(self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE)

    def notify_style_update(self) -> None:
        ScrollView.notify_style_update(self)   # Tree's own also drops its list of lines
        self._line_cache.clear()
        self.refresh()


class ExploreApp(App[None]):
    TITLE = "nydusfs explore"
    CSS = """
    #layers { width: 40; border: round $accent; }
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

    def compose(self) -> ComposeResult:
        yield Input(placeholder="glob, e.g. *.so or /usr/lib/*", id="search")
        with Horizontal():
            yield ListView(*self._layer_items(), id="layers")
            yield ImageTree(Text("/"), id="tree")
            with Vertical(id="details"):
                yield Static(id="info")
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
        self.query_one("#tree", Tree).focus()
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
        self.query_one("#layers").border_subtitle = (f"efficiency {100 * s.efficiency:.1f}% · "
                                                     f"wasted {size_text(s.wasted_bytes)}")
        for i, label in enumerate(self._layer_labels):
            label.update(self._layer_text(i))
        tree = self.query_one("#tree", Tree)
        if self.by_size:
            self._reload()
            return
        self._relabel(tree.root)
        node = tree.cursor_node
        self._show(node.data if node is not None and node.data is not None else b"/")

    # --- the tree ---------------------------------------------------------------------------------
    def _reload(self) -> None:
        tree = self.query_one("#tree", Tree)
        tree.clear()
        title = "merged image" if self.view == MERGED else f"layer {self.view}: {self.analysis.layers[self.view].name}"
        tree.root.set_label(Text(shown(title)))
        tree.root.data = b"/"
        self._fill(tree.root, b"/")
        tree.root.expand()
        tree.move_cursor(tree.root)
        self._show(b"/")

    def _fill(self, node: TreeNode[Any], path: bytes | None) -> None:
        node.remove_children()
        for item in self.browser.children(self.view, path or b"/", self.changes_only, self.by_size):
            if item.is_dir:
                child = node.add(label(item), data=item.path)
                child.add_leaf(Text("…"), data=None)       # filled when expanded
            else:
                node.add_leaf(label(item), data=item.path)

    def _relabel(self, node: TreeNode[Any]) -> None:
        """New labels (with directory sizes) for the entries already in the tree: the
        directories filled so far, each listed once more."""
        stack = [node]
        while stack:
            n = stack.pop()
            if not n.children or n.children[0].data is None:
                continue
            items = {i.path: i for i in self.browser.children(self.view, n.data or b"/", self.changes_only,
                                                               self.by_size)}
            for child in n.children:
                item = items.get(child.data) if child.data is not None else None
                if item is not None:
                    child.set_label(label(item))
                stack.append(child)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Any]) -> None:
        node = event.node
        if node.data is not None and node.children and node.children[0].data is None:
            self._fill(node, node.data)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Any]) -> None:
        if event.node.data is not None:
            self._show(event.node.data)

    def _show(self, path: bytes) -> None:
        text = Text()
        for key, value in self.browser.details(path):
            text.append(f"{key}: ", style="bold")
            text.append(shown(value) + "\n")
        self.query_one("#info", Static).update(text)

    # --- layers -------------------------------------------------------------------------------------
    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        lv = self.query_one("#layers", ListView)
        index = lv.index if lv.index is not None else 0
        view = MERGED if index == 0 else index - 1
        if view != self.view:
            self.view = view
            self._reload()

    # --- actions ------------------------------------------------------------------------------------
    def action_changes_only(self) -> None:
        self.changes_only = not self.changes_only
        self._reload()
        self.notify("changes only" if self.changes_only else "all entries")

    def action_sort(self) -> None:
        self.by_size = not self.by_size
        self._reload()
        if self.by_size and not self.ready:
            self.notify("directory sizes are being computed: sorted when they are in")
        else:
            self.notify("sorted by size" if self.by_size else "sorted by name")

    def action_expand_all(self) -> None:
        tree = self.query_one("#tree", Tree)
        node = tree.cursor_node or tree.root
        stack = [node]
        budget = 5000                                  # keep the screen responsive on huge trees
        while stack and budget > 0:
            n = stack.pop()
            if n.allow_expand:
                if n.children and n.children[0].data is None:
                    self._fill(n, n.data)
                n.expand()
                budget -= len(n.children)
                stack.extend(n.children)

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
            self.query_one("#tree", Tree).focus()
            return
        self.select(hits[0])

    def select(self, path: bytes) -> None:
        """Expand the tree down to `path` and put the cursor on it."""
        tree = self.query_one("#tree", Tree)
        node = tree.root
        walked = b""
        for part in [p for p in path.split(b"/") if p]:
            walked += b"/" + part
            if node.children and node.children[0].data is None:
                self._fill(node, node.data)
            node.expand()
            found = next((c for c in node.children if c.data == walked), None)
            if found is None:
                break
            node = found
        tree.focus()
        # the node's line is known once the tree has laid out its new children
        self.call_after_refresh(tree.move_cursor, node)
        self._show(node.data if node.data is not None else b"/")


def run_ui(analysis: Analysis, layers: list[LayerInput] | None = None) -> None:
    ExploreApp(analysis, layers).run()
