"""Make the gallery's thumbnails from the cards' own links: start the app, open each card's link in
headless Chromium, wait for the page to settle, and save the card's chart, shrunk, as
data/gallery/<slug>.webp. data/gallery/thumbnails.json records the link and chart each one was made
from; tests/test_gallery.py fails when a card's link or chart no longer matches.

    python scripts/thumbnails.py                # every card
    python scripts/thumbnails.py euler-ten-steps  # some cards, by slug

Needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from bench_app import App, busy, chromium, open_cold  # noqa: E402  (the app started as the README does)

from app_pages import chart as app_chart  # noqa: E402

from explorer import gallery  # noqa: E402

OUT = ROOT / "data" / "gallery"
WIDTH, HEIGHT = 480, 320  # pixels, every thumbnail: the gallery shows three cards a row, aligned
CHART = f".{app_chart.CLASS}.js-plotly-plot"  # a div app_pages/chart.py has drawn a figure in


def shoot(driver, app_url: str, card: gallery.Card) -> bytes:
    """The card's chart, settled, as a WIDTH x HEIGHT WebP: a tall chart keeps its top (title and first
    panels), a wide one is centred on white."""
    first, settled = open_cold(driver, card.link(app_url), timeout=300)
    if settled is None:
        raise RuntimeError(f"{card.slug}: {card.link()} did not settle")
    deadline = time.monotonic() + 120  # a page may settle between two streamed sections: wait for the chart
    while len(charts := driver.find_elements(By.CSS_SELECTOR, CHART)) <= card.chart or busy(driver):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{card.slug}: the page has {len(charts)} charts, the card shows chart {card.chart}")
        time.sleep(0.2)
    chart = charts[card.chart]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    driver.execute_script("const s = document.createElement('style'); s.textContent = '.modebar-container "
                          "{display: none !important}'; document.head.appendChild(s);")  # no mode bar
    time.sleep(0.8)  # plotly's last layout pass
    image = Image.open(io.BytesIO(chart.screenshot_as_png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, round(image.width * HEIGHT / WIDTH))))
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    framed = Image.new("RGB", (WIDTH, HEIGHT), "white")
    framed.paste(image, (0, (HEIGHT - image.height) // 2))
    image = framed
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=72, method=6)
    return buffer.getvalue()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slugs", nargs="*", help="cards to remake (default: every card)")
    args = parser.parse_args(argv)
    cards = [gallery.get(s) for s in args.slugs] if args.slugs else gallery.CARDS
    OUT.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT / "thumbnails.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = {slug: entry for slug, entry in manifest.items() if slug in {c.slug for c in gallery.CARDS}}
    app, driver = App(), chromium()
    try:
        for k, card in enumerate(cards, 1):
            start = time.perf_counter()
            data = shoot(driver, app.url, card)
            file = f"{card.slug}.webp"
            (OUT / file).write_bytes(data)
            manifest[card.slug] = {"link": card.link(), "chart": card.chart, "file": file}
            manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
            print(f"[{k}/{len(cards)}] {card.slug}: {len(data) / 1e3:.0f} kB in {time.perf_counter() - start:.1f} s")
    finally:
        driver.quit()
        app.close()
    for orphan in set(p.name for p in OUT.glob("*.webp")) - {e["file"] for e in manifest.values()}:
        (OUT / orphan).unlink()


if __name__ == "__main__":
    main()
