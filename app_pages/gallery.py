"""Gallery: phenomena worth showing in class, each a card whose link opens the exact view showing it.
The cards are explorer.gallery.CARDS; tests/test_gallery.py keeps each card's number true."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from app_pages import controls
from explorer import gallery

THUMBNAILS = Path(__file__).resolve().parent.parent / "data" / "gallery"
PER_ROW = 3


@st.cache_data(show_spinner=False)
def thumbnails() -> dict:
    """slug -> thumbnail path, for the cards whose thumbnail was made from their current link."""
    try:
        made = json.loads((THUMBNAILS / "thumbnails.json").read_text())
    except FileNotFoundError:
        return {}
    return {c.slug: str(THUMBNAILS / made[c.slug]["file"]) for c in gallery.CARDS
            if c.slug in made and made[c.slug]["link"] == c.link() and (THUMBNAILS / made[c.slug]["file"]).exists()}


st.title("Gallery")
st.caption(
    "Phenomena worth a lecture, each one click from the exact view that shows it. Every number below is "
    "checked by the test suite against what its view shows, so a card that stops showing its phenomenon "
    "fails the build. The same cards are drawn in notebooks/00_gallery.ipynb."
)

pages = [p for p in gallery.TITLES if any(c.page == p for c in gallery.CARDS)]
chosen = st.pills("Pages", pages, selection_mode="multi", format_func=gallery.TITLES.get, key="pages", bind=controls.URL,
                  help="Show the cards of these pages only (none chosen: every card).")
cards = [c for c in gallery.CARDS if not chosen or c.page in chosen]
shots = thumbnails()
for start in range(0, len(cards), PER_ROW):
    for column, card in zip(st.columns(PER_ROW), cards[start:start + PER_ROW]):
        with column.container(border=True):
            if card.slug in shots:
                st.image(shots[card.slug], width="stretch")
            st.markdown(f"##### {card.title}")
            st.markdown(card.text)
            st.markdown(f"**{card.claim}**")
            st.page_link(card.page_file, label=f"Open in {gallery.TITLES[card.page]}", icon=":material/open_in_new:",
                         query_params=card.query_params)
