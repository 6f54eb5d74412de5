"""The report's pages in headless Chromium, opened from file://: no console errors, charts drawn,
and the semantic-ID explorer's search, tree and prefix sharing agree with the run's codes."""

import pytest

from browser import assert_no_console_errors, expect
from sidrec.reporting.inspect import run_sids
from sidrec.serving.catalogue import open_run

PAGES = ["index.html", "compare.html", "results.html", "runs/tiger/index.html", "runs/tiger/explorer.html",
         "runs/tiger/users.html", "runs/card_asymrec/index.html", "runs/card_asymrec/explorer.html",
         "runs/card_asymrec/users.html", "runs/card_asymrec/gallery.html", "runs/sasrec-seed1/index.html"]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_loads_without_errors_and_draws_its_charts(browser_page, site, name):
    browser_page.goto((site / name).as_uri())
    expect(browser_page.locator("h1")).to_be_visible()
    for chart in browser_page.locator("svg.chart").all():
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100
        marks = chart.locator("path.series, rect.bar")
        if "no data" not in chart.text_content():
            assert marks.count() > 0
            assert all(m.get_attribute("d") not in (None, "") for m in chart.locator("path.series").all())
    for image in browser_page.locator("img").all():
        assert image.evaluate("i => i.complete && i.naturalWidth > 0")
    assert_no_console_errors(browser_page)


def test_run_page_curves_have_a_point_per_epoch(browser_page, site, report_runs):
    browser_page.goto((site / "runs" / "tiger" / "index.html").as_uri())
    curve = browser_page.locator("svg.chart").first
    assert curve.locator("path.series").count() >= 2  # loss + validation
    assert curve.locator("path.series").first.get_attribute("d").count("L") == 1  # 2 epochs: M + one L


def test_explorer_search_tree_and_shared_prefixes_match_the_codes(browser_page, site, report_runs):
    served = open_run(report_runs["tiger"])
    codes = run_sids(served.run_dir).codes
    ids = served.catalogue.item_ids.tolist()
    browser_page.goto((site / "runs" / "tiger" / "explorer.html").as_uri())

    # The root lists level-0 codes with their item counts.
    children = browser_page.locator("#children button.prefix")
    counts = {int(b.get_attribute("data-code")): int(b.get_attribute("data-count")) for b in children.all()}
    expected = {int(c): int((codes[:, 0] == c).sum()) for c in codes[:, 0].unique()}
    assert counts == expected

    # Descending into a code lists the next level under that prefix.
    first = max(expected, key=expected.get)
    browser_page.locator(f'#children button.prefix[data-code="{first}"]').click()
    below = {int(b.get_attribute("data-code")): int(b.get_attribute("data-count"))
             for b in browser_page.locator("#children button.prefix").all()}
    under = codes[codes[:, 0] == first]
    assert below == {int(c): int((under[:, 1] == c).sum()) for c in under[:, 1].unique()}

    # Search by title finds the item (its title holds markup, shown as text); clicking shows its code and sharers.
    browser_page.fill("#search", "bold")
    match = browser_page.locator("#results li.match")
    expect(match).to_have_count(1)
    assert "<b>bold</b>" in match.inner_text()
    match.click()
    item = ids.index("i03")
    expect(browser_page.locator("#item-code")).to_have_text("code <" + " ".join(map(str, codes[item].tolist())) + ">")
    for heading in browser_page.locator("h3.share").all():
        level = int(heading.get_attribute("data-level"))
        sharing = int((codes[:, :level] == codes[item, :level]).all(1).sum()) - 1
        assert int(heading.get_attribute("data-count")) == sharing
    assert_no_console_errors(browser_page)


def test_user_inspector_marks_hits(browser_page, site):
    browser_page.goto((site / "runs" / "card_asymrec" / "users.html").as_uri())
    users = browser_page.locator("details.user")
    assert browser_page.locator('details.user[data-part="test"]').count() == 8
    assert browser_page.locator('details.user[data-part="valid"]').count() == 8
    for user in users.all():
        summary = user.locator("summary").inner_text()
        hits = user.locator("tr.hit").count()
        assert hits == (0 if "no hit" in summary else 1)
    assert_no_console_errors(browser_page)
