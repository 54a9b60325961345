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

from .card import PAGES, TITLES, Card
from . import distribution_cards, model_cards, solver_cards

CARDS: list[Card] = [*solver_cards.CARDS, *model_cards.CARDS, *distribution_cards.CARDS]

__all__ = ["CARDS", "PAGES", "TITLES", "Card", "get", "tour"]


def get(slug: str) -> Card:
    """The card named `slug` (ValueError naming the known ones otherwise)."""
    for card in CARDS:
        if card.slug == slug:
            return card
    raise ValueError(f"no gallery card {slug!r}; known: {', '.join(c.slug for c in CARDS)}")


def tour(base: str = "http://localhost:8501", thumbnails: str = "data/gallery") -> str:
    """The README's tour of the gallery: one table row per card (its thumbnail, title, claim and the
    link to its view under `base`). tests/test_gallery.py checks that the README holds this text."""
    rows = ["| | Phenomenon | What the view shows |", "|---|---|---|"]
    for card in CARDS:
        image = f'<img src="{thumbnails}/{card.slug}.webp" width="220">'
        rows.append(f"| {image} | [**{card.title}**]({card.link(base)}) | {card.claim} |")
    return "\n".join(rows)
