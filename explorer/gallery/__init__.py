"""The gallery: phenomena worth showing in class, each a Card with one link that opens the exact view
of the app showing it, the number that view shows for it, and the figure that draws it in a notebook.

The cards live by the pages they open:
- solver_cards.py: Trajectories, Solver lab, Stability, Solver search (how solvers step);
- model_cards.py: Mode interpolation, Images, Schedules, Learned fields (learned models and schedules);
- distribution_cards.py: Scheduler audit, Guidance, Starts, Few steps (what a sampler really samples).

tests/test_gallery.py opens every card's link and checks its number, so a card that stops showing its
phenomenon fails the suite. `python scripts/thumbnails.py` remakes the thumbnails in data/gallery/.
This package sits on top of the whole package: it may import anything in explorer (`import explorer as
ex` included, as a user would), and nothing in explorer imports it. It never imports the UI.
"""

from __future__ import annotations

from .card import PAGES, Card
from . import distribution_cards, model_cards, solver_cards

CARDS: list[Card] = [*solver_cards.CARDS, *model_cards.CARDS, *distribution_cards.CARDS]

__all__ = ["CARDS", "PAGES", "Card", "get"]


def get(slug: str) -> Card:
    """The card named `slug` (ValueError naming the known ones otherwise)."""
    for card in CARDS:
        if card.slug == slug:
            return card
    raise ValueError(f"no gallery card {slug!r}; known: {', '.join(c.slug for c in CARDS)}")
