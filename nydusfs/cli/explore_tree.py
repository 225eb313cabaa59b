"""The tree pane of `nydusfs explore`: a virtual list of the entries shown.

Textual's Tree keeps one line object per expanded entry and walks them all on every expand or
collapse, and draws a line in about a millisecond; on 100k entries that is what a key cost.
Here the lines are a flat list of the visible nodes, spliced on expand and collapse (the rows
below the directory go in or out, nothing else is touched), and only the lines on screen are
drawn (Textual's Line API): a node's label is built the first time its line is drawn, a drawn
line is kept until the node, the cursor or the widget's style changes, and a cursor move
repaints the two lines it leaves and reaches."""

from __future__ import annotations

from typing import Callable, ClassVar, Iterator

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..explore.browse import Item

Reader = Callable[[bytes], list[Item]]       # a directory's entries, sorted as shown
Labeller = Callable[[Item], Text]
ICON_OPEN, ICON_CLOSED = "▼ ", "▶ "
GUIDE_SPACE, GUIDE_DOWN, GUIDE_LAST, GUIDE_CROSS = "    ", "│   ", "└── ", "├── "
KEPT_STRIPS = 4096                            # drawn lines kept (a few screens' worth)
LABEL_EXTRA = 28                              # icon, mark, "/", size and layer after a name


def width_bound(node: Node) -> int:
    """About the width of a node's line without building its label: the scrollbar must
    reach every line before the lines are drawn (a line found wider when drawn widens it)."""
    name = node.item.name if node.item is not None else b""
    return 4 * node.depth + (len(name) if name.isascii() else 4 * len(name)) + LABEL_EXTRA


class Node:
    """One entry: a directory's children are read when it is first expanded."""

    __slots__ = ("path", "item", "parent", "depth", "last", "children", "expanded", "text")

    def __init__(self, path: bytes, item: Item | None, parent: Node | None, last: bool) -> None:
        self.path = path
        self.item = item                      # None: the root
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.last = last                      # the last of its siblings (the guide ends here)
        self.children: list[Node] | None = None   # None: not read yet
        self.expanded = False
        self.text: Text | None = None         # the label, built when the line is first drawn

    @property
    def data(self) -> bytes:
        return self.path

    @property
    def allow_expand(self) -> bool:
        return self.item is None or self.item.is_dir

    @property
    def is_expanded(self) -> bool:
        return self.expanded

    @property
    def label(self) -> Text:
        """The line's text after the guides, built on first use by the root's labeller."""
        if self.text is None:
            root = self
            while root.parent is not None:
                root = root.parent
            assert isinstance(root, Root) and self.item is not None
            self.text = root.labeller(self.item)
        return self.text

    def __repr__(self) -> str:
        return f"Node({self.path!r})"


class Root(Node):
    """The top line: the view's title, and how the lines below it are labelled."""

    __slots__ = ("labeller",)

    def __init__(self, title: Text, labeller: Labeller) -> None:
        super().__init__(b"/", None, None, True)
        self.text = title
        self.labeller = labeller


class EntryTree(ScrollView, can_focus=True):
    """The entries of one view as an expandable tree, read through `reader`, labelled by
    `labeller`; `on_cursor` is called (in the same step, so that the details and the tree
    are drawn in one screen update) with the node the cursor lands on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "up", show=False),
        Binding("down", "cursor_down", "down", show=False),
        Binding("pageup", "page_up", "page up", show=False),
        Binding("pagedown", "page_down", "page down", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end", "last", "last", show=False),
        Binding("enter", "toggle_node", "expand or collapse", show=False),
        Binding("space", "toggle_node", "expand or collapse", show=False),
        Binding("shift+left", "parent", "parent", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"entry-tree--cursor", "entry-tree--cursor-blurred",
                                             "entry-tree--guides"}
    # Focus changes the cursor's colours alone, and no style of the widget depends on it (no
    # :focus rule): a pane change redraws the cursor's line, where a rule or a tint of the
    # whole pane (Tree's) would restyle the widget and redraw every line.
    DEFAULT_CSS = """
    EntryTree {
        background: $surface;
        color: $foreground;
        & > .entry-tree--guides { color: $surface-lighten-3; }
        & > .entry-tree--cursor {
            color: $block-cursor-foreground;
            background: $block-cursor-background;
            text-style: $block-cursor-text-style;
        }
        & > .entry-tree--cursor-blurred {
            text-style: $block-cursor-blurred-text-style;
            background: $block-cursor-blurred-background;
        }
        &:light > .entry-tree--guides { color: $surface-darken-1; }
    }
    """

    def __init__(self, reader: Reader, labeller: Labeller, on_cursor: Callable[[Node], None] | None = None,
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._reader = reader
        self._labeller = labeller
        self._on_cursor = on_cursor
        self.root: Node = Root(Text("/"), labeller)
        self.rows: list[Node] = [self.root]   # the lines, top to bottom
        self.cursor = 0
        self._strips: dict[Node, tuple[tuple[bool, bool, bool], Strip]] = {}
        self._styles: dict[bool, tuple[Style, Style, Style]] = {}     # focused or not -> styles
        self._drawn_with: tuple[Style, ...] = ()    # the styles of the lines kept
        self._widest = 0                      # the widest line known since the last reset

    # --- the model ------------------------------------------------------------------------------
    def _read(self, node: Node) -> list[Node]:
        if node.children is None:
            items = self._reader(node.path)
            last = len(items) - 1
            node.children = [Node(item.path, item, node, i == last) for i, item in enumerate(items)]
        return node.children

    @staticmethod
    def _shown_below(node: Node) -> list[Node]:
        """The lines under an expanded `node`: its children, and theirs where expanded."""
        out: list[Node] = []
        stack = list(reversed(node.children or ()))
        while stack:
            n = stack.pop()
            out.append(n)
            if n.expanded and n.children:
                stack.extend(reversed(n.children))
        return out

    def _row(self, node: Node) -> int | None:
        """The line of `node`, None when a collapsed directory above hides it."""
        if self.cursor < len(self.rows) and self.rows[self.cursor] is node:
            return self.cursor
        p = node.parent
        while p is not None:
            if not p.expanded:
                return None
            p = p.parent
        try:
            return self.rows.index(node)            # identity: nodes do not define equality
        except ValueError:
            return None

    def _end_below(self, row: int) -> int:
        """The first line after the lines under `row` (they are the deeper ones that follow)."""
        depth, rows, end = self.rows[row].depth, self.rows, row + 1
        while end < len(rows) and rows[end].depth > depth:
            end += 1
        return end

    @property
    def cursor_node(self) -> Node | None:
        return self.rows[self.cursor] if self.cursor < len(self.rows) else None

    @staticmethod
    def label_of(node: Node) -> Text:
        return node.label

    def walk(self) -> Iterator[Node]:
        """Every node read so far, depth first."""
        stack = [self.root]
        while stack:
            n = stack.pop()
            yield n
            if n.children:
                stack.extend(reversed(n.children))

    # --- changes --------------------------------------------------------------------------------
    def reset(self, root_label: Text) -> None:
        """A new tree: the root's entries, the cursor on the root."""
        self._rebuild(root_label, set(), b"/")
        self.scroll_x = self.scroll_target_x = 0
        self._scroll_top(0)

    def reload(self, root_label: Text | None = None) -> None:
        """The tree read again (a new sort, a filter, new sizes, more of the image): the
        directories expanded stay expanded where they still are, and the cursor stays on its
        path, or on the nearest directory above it still shown, at the same height on screen."""
        node = self.cursor_node
        at = self.cursor - round(self.scroll_y)
        expanded = {n.path for n in self.walk() if n.expanded}
        self._rebuild(self.root.label if root_label is None else root_label, expanded,
                      node.path if node is not None else b"/")
        self._scroll_top(self.cursor - at)

    def _rebuild(self, root_label: Text, expanded: set[bytes], cursor_path: bytes) -> None:
        self.root = Root(root_label, self._labeller)
        self.root.expanded = True
        stack: list[Node] = [self.root]
        while stack:
            for child in self._read(stack.pop()):
                if child.path in expanded and child.allow_expand:
                    child.expanded = True
                    stack.append(child)
        self.rows = [self.root, *self._shown_below(self.root)]
        self._strips.clear()
        self._widest = max(map(width_bound, self.rows))
        target = self._nearest_shown(cursor_path)
        self.cursor = self._row(target) or 0
        self._rows_changed(0)
        self._cursor_moved()

    def _nearest_shown(self, path: bytes) -> Node:
        node, walked = self.root, b""
        for part in [p for p in path.split(b"/") if p]:
            walked += b"/" + part
            if not node.expanded or not node.children:
                break
            found = next((c for c in node.children if c.path == walked), None)
            if found is None:
                break
            node = found
        return node

    def expand_node(self, node: Node) -> None:
        if not node.allow_expand or node.expanded:
            return
        self._read(node)
        node.expanded = True
        row = self._row(node)
        if row is None:
            return
        below = self._shown_below(node)
        self.rows[row + 1:row + 1] = below
        self._widest = max(self._widest, max(map(width_bound, below), default=0))
        if self.cursor > row:
            self.cursor += len(below)
        self._rows_changed(row)

    def collapse_node(self, node: Node) -> None:
        if not node.expanded:
            return
        row = self._row(node)
        node.expanded = False
        if row is None:
            return
        end = self._end_below(row)
        del self.rows[row + 1:end]
        if row < self.cursor < end:
            self.cursor = row
            self._cursor_moved()
        elif self.cursor >= end:
            self.cursor -= end - row - 1
        self._rows_changed(row)

    def toggle_node(self, node: Node) -> None:
        if node.expanded:
            self.collapse_node(node)
        else:
            self.expand_node(node)

    def expand_all(self, node: Node, budget: int = 5000) -> None:
        """Expand `node` and the directories below it, depth first, until about `budget`
        entries have been added; one splice of the lines."""
        stack = [node]
        while stack and budget > 0:
            n = stack.pop()
            if n.allow_expand:
                children = self._read(n)
                n.expanded = True
                budget -= len(children)
                stack.extend(reversed(children))
        row = self._row(node)
        if row is None:
            return
        end = self._end_below(row)
        below = self._shown_below(node)
        self.rows[row + 1:end] = below
        self._widest = max(self._widest, max(map(width_bound, below), default=0))
        if self.cursor >= end:
            self.cursor += len(below) - (end - row - 1)
        self._rows_changed(row)

    def select_path(self, path: bytes) -> Node:
        """Expand the directories down to `path` and put the cursor on it (or on the deepest
        directory above it the view has)."""
        node, walked = self.root, b""
        for part in [p for p in path.split(b"/") if p]:
            walked += b"/" + part
            self.expand_node(node)
            found = next((c for c in self._read(node) if c.path == walked), None)
            if found is None:
                break
            node = found
        self.move_cursor(node)
        return node

    def move_cursor(self, node: Node | None) -> None:
        row = self._row(node) if node is not None else None
        if row is not None:
            self._set_cursor(row)

    # --- the cursor -----------------------------------------------------------------------------
    def _set_cursor(self, row: int, scroll_by: int = 0) -> None:
        row = max(0, min(row, len(self.rows) - 1))
        old = self.cursor
        self.cursor = row
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height
        new_top = top + scroll_by
        if row < new_top:
            new_top = row
        elif height and row >= new_top + height:
            new_top = row - height + 1
        new_top = max(0, min(new_top, len(self.rows) - height if height else new_top))
        if new_top != top:
            self._scroll_top(new_top)          # repaints every line (cached ones are cheap)
        else:
            self.refresh_line(old)
            self.refresh_line(row)
        if row != old:
            self._cursor_moved()

    def _scroll_top(self, top: int) -> None:
        height = self.scrollable_content_region.height
        top = max(0, min(top, len(self.rows) - height))
        self.scroll_target_y = top
        self.scroll_y = top

    def _cursor_moved(self) -> None:
        node = self.cursor_node
        if node is not None and self._on_cursor is not None:
            self._on_cursor(node)

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor + 1)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def action_page_down(self) -> None:
        self._set_cursor(self.cursor + self._page(), self._page())

    def action_page_up(self) -> None:
        self._set_cursor(self.cursor - self._page(), -self._page())

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(len(self.rows) - 1)

    def action_toggle_node(self) -> None:
        node = self.cursor_node
        if node is not None:
            self.toggle_node(node)

    def action_parent(self) -> None:
        node = self.cursor_node
        if node is not None and node.parent is not None:
            self.move_cursor(node.parent)

    def on_click(self, event: events.Click) -> None:
        """A click selects the line, and expands or collapses a directory (as Tree did)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = offset.y + round(self.scroll_y)
        if row < len(self.rows):
            self._set_cursor(row)
            self.toggle_node(self.rows[row])

    # --- drawing --------------------------------------------------------------------------------
    def _rows_changed(self, first: int) -> None:
        """The lines from `first` down moved: a new height, and those on screen redrawn."""
        self._resize(Size(self._widest, len(self.rows)))
        top = round(self.scroll_y)
        if top > max(0, len(self.rows) - self.scrollable_content_region.height):
            self._scroll_top(top)
        self.refresh(Region(0, max(0, first - top), self.size.width, max(0, self.size.height)))

    def _on_focus(self, event: events.Focus) -> None:
        event.prevent_default()               # Widget's own repaints the whole pane
        self.has_focus = True
        self.refresh_line(self.cursor)
        if self.parent is not None:
            self.parent.post_message(events.DescendantFocus(self))

    def _on_blur(self, event: events.Blur) -> None:
        event.prevent_default()
        self.has_focus = False
        self.refresh_line(self.cursor)
        if self.parent is not None:
            self.parent.post_message(events.DescendantBlur(self))

    def notify_style_update(self) -> None:
        super().notify_style_update()         # focus or theme: the styles are read again
        self._styles.clear()

    def render_lines(self, crop: Region) -> list[Strip]:
        widest = self._widest
        lines = super().render_lines(crop)
        if self._widest > widest:             # a wider line seen: the scrollbar can reach it
            self.call_later(self._grow)
        return lines

    def _grow(self) -> None:
        if self._widest > self.virtual_size.width:
            self._resize(Size(self._widest, len(self.rows)))

    def _resize(self, size: Size) -> None:
        """A new virtual size without a layout of the screen (setting `virtual_size` lays out
        everything, and the scrollbars are drawn one screen update later): the scrollbars are
        updated here, and only a scrollbar appearing or going asks for a layout."""
        if size != self.virtual_size:
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)

    def _line_styles(self) -> tuple[Style, Style, Style]:
        styles = self._styles.get(self.has_focus)
        if styles is None:
            cursor = "entry-tree--cursor" if self.has_focus else "entry-tree--cursor-blurred"
            styles = self._styles[self.has_focus] = (
                self.rich_style, self.get_component_rich_style("entry-tree--guides", partial=True),
                self.get_component_rich_style(cursor, partial=False))
            if styles[:2] != self._drawn_with:        # lines drawn in other colours: drop them
                self._strips.clear()
                self._drawn_with = styles[:2]
        return styles

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        width = self.size.width
        base = self._line_styles()[0]
        if row >= len(self.rows):
            return Strip.blank(width, base)
        return self._strip(self.rows[row], row == self.cursor).crop_extend(scroll_x, scroll_x + width, base)

    def _strip(self, node: Node, cursor: bool) -> Strip:
        key = (node.expanded, cursor, cursor and self.has_focus)
        got = self._strips.get(node)
        if got is not None and got[0] == key:
            return got[1]
        base, guide_style, cursor_style = self._line_styles()
        line = Text(style=base, end="", no_wrap=True)
        for guide in self._guides(node):
            line.append(guide, style=guide_style if guide != GUIDE_SPACE else "")
        if node.allow_expand:
            line.append(ICON_OPEN if node.expanded else ICON_CLOSED, style=base)
        label = node.label
        if cursor:
            label = label.copy()
            label.stylize(cursor_style)
        line.append_text(label)
        strip = Strip(list(line.render(self.app.console)), line.cell_len)
        if len(self._strips) >= KEPT_STRIPS:
            self._strips.clear()
        self._strips[node] = (key, strip)
        self._widest = max(self._widest, line.cell_len)
        return strip

    @staticmethod
    def _guides(node: Node) -> list[str]:
        """The indentation of a line: a vertical guide for each directory above that has more
        entries below, and the branch to the node."""
        if node.depth == 0:
            return []
        parts = [GUIDE_LAST if node.last else GUIDE_CROSS]
        p = node.parent
        while p is not None and p.depth > 0:
            parts.append(GUIDE_SPACE if p.last else GUIDE_DOWN)
            p = p.parent
        parts.reverse()
        return parts
