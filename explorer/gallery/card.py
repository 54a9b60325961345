"""One gallery card: a phenomenon, the link that opens the exact view showing it, the number the
view shows for it, and the figure that draws it outside the app."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlencode

# The app's pages by url path (app.py's PAGES; tests/test_gallery.py checks they agree), with the file
# each one runs and its title; "" is Trajectories.
PAGES = {
    "": "trajectories.py", "solver-lab": "solver_lab.py", "stability": "stability.py",
    "mode-interpolation": "mode_interpolation.py", "images": "images.py", "schedules": "schedules.py",
    "audit": "audit.py", "guidance": "guidance.py", "search": "search.py", "starts": "starts.py",
    "learned-fields": "learned_fields.py", "few-steps": "few_steps.py",
}
TITLES = {
    "": "Trajectories", "solver-lab": "Solver lab", "stability": "Stability",
    "mode-interpolation": "Mode interpolation", "images": "Images", "schedules": "Schedules",
    "audit": "Scheduler audit", "guidance": "Guidance", "search": "Solver search", "starts": "Starts",
    "learned-fields": "Learned fields", "few-steps": "Few steps",
}


@dataclass(frozen=True)
class Card:
    """A phenomenon worth a lecture.

    slug:    a short name (the thumbnail's file name).
    title:   the phenomenon in one line.
    text:    two or three sentences: what to look at and why it happens.
    page:    the app page's url path ("" for Trajectories), a key of PAGES.
    params:  the query parameters of the view, as the page's URL-bound widgets spell them (a list
             for a multiselect).
    claim:   the number, as the card states it ("DPM-Solver++(3M) measures order 2.0").
    reads:   a regular expression over the page's visible text (`page_text` in tests/apptest.py:
             metrics as "label: value", then markdown, captions and alerts) whose first
             group is the claimed number; the page must show it.
    expect:  the range [low, high] the number must lie in for the claim to hold.
    figure:  draws the card's figure with explorer.figures alone (no app): the notebook's view.
    chart:   which of the page's plotly charts (in page order) the thumbnail shows.
    """

    slug: str
    title: str
    text: str
    page: str
    params: dict
    claim: str
    reads: str
    expect: tuple[float, float]
    figure: Callable[[], object] = field(compare=False, repr=False)
    chart: int = 0

    def __post_init__(self):
        if self.page not in PAGES:
            raise ValueError(f"card {self.slug!r}: page {self.page!r} is not one of {sorted(PAGES)}")
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", self.slug):
            raise ValueError(f"card slug {self.slug!r}: lower-case words joined by '-'")
        if re.compile(self.reads).groups < 1:
            raise ValueError(f"card {self.slug!r}: reads={self.reads!r} needs a group around the number")
        low, high = self.expect
        if not low <= high:
            raise ValueError(f"card {self.slug!r}: expect={self.expect} is not a range")

    @property
    def query_params(self) -> dict:
        """The view's query parameters as the URL spells them (text, 'true'/'false', lists for multiselects)."""
        return {k: _text(v) for k, v in self.params.items()}

    @property
    def query(self) -> str:
        """The view's query string, e.g. 'solver=heun&steps=8' (values as strings, keys in order)."""
        return urlencode(self.query_params, doseq=True)

    def link(self, base: str = "") -> str:
        """The URL of the exact view, under `base` (e.g. 'http://localhost:8501'; '' gives a path)."""
        return f"{base}/{self.page}" + (f"?{self.query}" if self.params else "")

    @property
    def page_file(self) -> str:
        """The page's script, relative to the project root."""
        return f"app_pages/{PAGES[self.page]}"

    def read(self, text: str) -> float:
        """The claimed number in a page's visible text (ValueError if the page does not show it)."""
        match = re.search(self.reads, text)
        if match is None:
            raise ValueError(f"card {self.slug!r}: the page does not show {self.reads!r}")
        return float(match.group(1).replace(",", "").replace("−", "-").rstrip("%×x"))

    def holds(self, value: float) -> bool:
        return self.expect[0] <= value <= self.expect[1]


def _text(value):
    """A query-parameter value as Streamlit reads it: booleans lower case; a list or tuple (a
    multiselect) as the list of its items' texts, which the URL repeats under one key."""
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
