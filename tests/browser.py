"""Browser tests on the system's headless Chromium, driven by Playwright's sync API.

`browser_page` gives a fresh Page (1200x800) whose console errors and uncaught exceptions are kept
in `page.console_errors`, for `assert_no_console_errors`. Playwright never downloads a browser
here: it launches the Debian `chromium` package (or $SIDREC_CHROMIUM), and the tests skip, saying
what to install, when either that binary or the `playwright` package is missing.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SIDREC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1200, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "images"


@pytest.fixture(scope="module")
def chromium_browser():
    """One headless Chromium per test module (each test still gets its own context). Not per session:
    Playwright's sync API keeps an asyncio loop running in the main thread while it is open, and every
    later test calling asyncio.run() failed ("cannot be called from a running event loop")."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing: pip install -e '.[test]' "
                    "(no browser download needed, the system chromium is used)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or point SIDREC_CHROMIUM at one)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium_browser):
    context = chromium_browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)  # a local page answers in milliseconds: fail fast, not after 30 s
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    yield page
    context.close()


def assert_no_console_errors(page, allow: str | None = None) -> None:
    """No console error or uncaught exception so far, except messages matching the regex `allow`.

    Chromium logs every 4xx/5xx answer to fetch as a console error, so a test that provokes one on
    purpose allows it (e.g. `allow="status of 422"`).
    """
    errors = [e for e in page.console_errors if not (allow and re.search(allow, e))]
    assert not errors, f"console errors: {errors}"


def save_screenshot(page, name: str) -> None:
    """Write docs/images/NAME for the documentation, only when SIDREC_SCREENSHOTS=1 (tests stay read-only)."""
    if os.environ.get("SIDREC_SCREENSHOTS") == "1":
        page.screenshot(path=SCREENSHOTS / name)


def expect(target, *args, **kwargs):
    """Playwright's auto-waiting `expect`, imported lazily so test modules import without playwright."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target, *args, **kwargs)
