"""The gallery: every card's link opens its view cleanly, with its widgets set as the link says, and
the view shows the card's number inside the claimed range; the thumbnails were made from the cards'
current links; the README's tour and the notebook list every card."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from apptest import assert_clean, charts, open_app, page_text  # noqa: E402

from explorer import gallery  # noqa: E402
from explorer.gallery.card import _text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THUMBNAILS = ROOT / "data" / "gallery"
CARDS = {card.slug: card for card in gallery.CARDS}


def open_card(card: gallery.Card) -> AppTest:
    """The card's link under AppTest: the app opened on the card's page with the card's query."""
    return open_app(card.page_file, timeout=60, **card.query_params)


def _same(shown, wanted) -> bool:
    shown, wanted = _text(shown), _text(wanted)
    if isinstance(wanted, list):
        return isinstance(shown, list) and len(shown) == len(wanted) and all(map(_same, shown, wanted))
    try:
        return math.isclose(float(shown), float(wanted), rel_tol=1e-9)
    except (TypeError, ValueError):
        return shown == wanted


def test_the_cards_are_many_distinct_and_short():
    assert len(gallery.CARDS) >= 15
    assert len(CARDS) == len(gallery.CARDS), "two cards share a slug"
    assert len({c.title for c in gallery.CARDS}) == len(gallery.CARDS)
    assert len({c.link() for c in gallery.CARDS}) == len(gallery.CARDS), "two cards open the same view"
    assert len({c.page for c in gallery.CARDS}) >= 10, "the cards should cover the app's pages"
    for card in gallery.CARDS:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", card.text.strip()) if s]
        assert 2 <= len(sentences) <= 3, (card.slug, sentences)
        assert re.search(r"\d", card.claim), f"{card.slug}: the claim states no number"


def test_a_card_rejects_what_cannot_be_checked():
    base = dict(slug="x", title="t", text="a. b.", page="", params={}, claim="1", reads=r"(\d)",
                expect=(0, 1), figure=lambda: None)
    for bad, message in ((dict(page="nowhere"), "page"), (dict(slug="Not A Slug"), "slug"),
                         (dict(reads="no group"), "group"), (dict(expect=(2, 1)), "range")):
        with pytest.raises(ValueError, match=message):
            gallery.Card(**{**base, **bad})
    card = gallery.Card(**base)
    assert card.read("Distance: 1") == 1.0
    with pytest.raises(ValueError, match="does not show"):
        card.read("nothing here")
    with pytest.raises(ValueError, match="known"):
        gallery.get("no-such-card")


@pytest.mark.parametrize("slug", list(CARDS))
def test_each_card_shows_its_phenomenon(slug):
    card = CARDS[slug]
    at = open_card(card)
    assert_clean(at)
    for key, wanted in card.params.items():
        widget = at.get_by_key(key)
        assert widget is not None, f"{slug}: no widget {key!r} on {card.page_file}"
        assert _same(widget.value, wanted), f"{slug}: {key} is {widget.value!r}, the link says {wanted!r}"
    assert len(charts(at)) > card.chart, f"{slug}: the thumbnail's chart {card.chart} is not on the page"
    value = card.read(page_text(at))
    assert card.holds(value), f"{slug}: the page shows {value}, the card claims {card.expect} ({card.claim})"


def test_the_thumbnails_were_made_from_the_cards_links():
    made = json.loads((THUMBNAILS / "thumbnails.json").read_text())
    assert set(made) == set(CARDS), "python scripts/thumbnails.py remakes the thumbnails of new or removed cards"
    for slug, card in CARDS.items():
        assert made[slug]["link"] == card.link(), f"{slug}: its link changed; run python scripts/thumbnails.py {slug}"
        assert made[slug]["chart"] == card.chart, f"{slug}: its chart changed; run python scripts/thumbnails.py {slug}"
        image = THUMBNAILS / made[slug]["file"]
        assert image.exists() and 2_000 < image.stat().st_size < 60_000, image
    assert {p.name for p in THUMBNAILS.glob("*.webp")} == {m["file"] for m in made.values()}, "an orphan thumbnail"


def test_the_gallery_page_links_every_card():
    at = open_app("app_pages/gallery.py")
    assert_clean(at)
    assert at.title[0].value == "Gallery"
    shown = "\n".join(str(m.value) for m in at.markdown)
    for card in gallery.CARDS:
        assert card.title in shown and card.claim in shown, card.slug
    links = at.get("page_link")
    assert [link.proto.query_string for link in links] == [card.query for card in gallery.CARDS]  # the exact views
    pages = {}
    for link, card in zip(links, gallery.CARDS):
        pages.setdefault(card.page, set()).add(link.proto.page_script_hash)
    assert all(len(hashes) == 1 for hashes in pages.values())
    assert len(set.union(*pages.values())) == len(pages), "two pages' links lead to the same page"
    assert len(at.get("image")) == len(gallery.CARDS), "a card has no thumbnail (python scripts/thumbnails.py)"

    last = gallery.CARDS[-1].page
    at.pills(key="pages").set_value([last]).run()  # the filter keeps one page's cards
    assert [link.proto.query_string for link in at.get("page_link")] == [
        card.query for card in gallery.CARDS if card.page == last]


def test_the_readme_tour_and_the_notebook_list_every_card():
    readme = (ROOT / "README.md").read_text()
    assert gallery.tour() in readme, "the README's gallery tour is stale: paste explorer.gallery.tour() into it"
    notebook = (ROOT / "notebooks" / "00_gallery.ipynb").read_text()
    for card in gallery.CARDS:
        assert f"show({card.slug!r})" in notebook, f"notebooks/00_gallery.ipynb does not draw {card.slug}"


def test_the_gallerys_page_list_is_the_apps():
    """explorer.gallery.PAGES and TITLES (used by the links, AppTest's openings and bench_app) name each
    page of app.py's PAGES by its url path, file and title; the gallery itself is the one page without cards."""
    import ast

    pages = {}
    for node in ast.walk(ast.parse((ROOT / "app.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            file = node.args[0].value.split("/")[-1]
            url = "" if kw.get("default") else kw.get("url_path", file[:-3])
            pages[url] = (file, kw["title"])
    del pages["gallery"]
    assert pages == {url: (file, gallery.TITLES[url]) for url, file in gallery.PAGES.items()}
