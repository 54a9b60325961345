"""Gallery cards of the pages listed in explorer/gallery/__init__.py."""

from __future__ import annotations

from .card import Card

CARDS: list[Card] = []
