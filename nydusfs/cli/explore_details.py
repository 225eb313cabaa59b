"""The details pane of `nydusfs explore`: lines of text wrapped to the pane's width.

It changes on every cursor move, and the details of one entry share most of their lines with
the next one's (layer, mode, owner, the empty lines below): a new text repaints only the lines
that differ, where a Static would lay out and draw the whole pane again."""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


class DetailsView(Widget):
    DEFAULT_CSS = """
    DetailsView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text()
        self._lines: list[Strip] = []

    def update(self, text: Text) -> None:
        self.text = text
        old, self._lines = self._lines, self._wrap(text)
        width = self.size.width
        for y in range(max(len(old), len(self._lines))):
            if y >= len(old) or y >= len(self._lines) or old[y] != self._lines[y]:
                self.refresh(Region(0, y, width, 1))

    def _wrap(self, text: Text) -> list[Strip]:
        width = self.size.width
        if width <= 0:
            return []
        console, base = self.app.console, self.rich_style
        return [Strip(Segment.apply_style(line.render(console), style=base), line.cell_len)
                for line in text.wrap(console, width)]

    def on_resize(self, event: events.Resize) -> None:
        self._lines = self._wrap(self.text)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted:
            self._lines = self._wrap(self.text)

    def render(self) -> Text:
        return self.text                      # the whole text (drawing goes by render_line)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y < len(self._lines):
            return self._lines[y].crop_extend(0, width, base)
        return Strip.blank(width, base)
