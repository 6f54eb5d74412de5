"""Screenshots of a report site for the README (docs/images/report-*.png), in headless Chromium.

    sidrec report runs/demo/* --html site/ --results benchmarks/results/reproduce.json
    .venv/bin/python docs/screenshots.py site/

Each page is opened from file:// and, where it has controls, used as a reader would (a code clicked
in the explorer, an item searched, a user opened), so the picture shows what a click shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (one place for the Chromium flags)

IMAGES = Path(__file__).resolve().parent / "images"


def shoot(site: Path, run: str, card_run: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def save(name: str, full: bool = False) -> None:
            path = IMAGES / f"report-{name}.png"
            page.screenshot(path=path, full_page=full)
            written.append(path)

        page.goto((site / "runs" / card_run / "index.html").as_uri())
        save("run", full=True)
        page.goto((site / "runs" / run / "explorer.html").as_uri())
        page.locator("#children button.prefix").first.click()
        page.fill("#search", page.locator("#tree li.match").first.inner_text().split(" ", 1)[0])
        page.locator("#results li.match").first.click()
        save("explorer")
        page.goto((site / "runs" / run / "users.html").as_uri())
        page.locator("details.user").first.locator("summary").click()
        save("users")
        page.goto((site / "runs" / card_run / "gallery.html").as_uri())
        save("gallery")
        for name in ("compare", "results"):
            if (site / f"{name}.html").exists():
                page.goto((site / f"{name}.html").as_uri())
                save(name, full=True)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path)
    parser.add_argument("--run", default="tiger", help="run whose explorer and user pages are shown")
    parser.add_argument("--card-run", default="card", help="run whose overview and gallery are shown")
    args = parser.parse_args()
    for path in shoot(args.site.resolve(), args.run, args.card_run):
        print(path)


if __name__ == "__main__":
    main()
