"""The page at GET / and the item search behind its autocomplete: served as-is, then driven in Chromium.

The browser tests check that what the page shows is exactly what POST /recommend answers for the
request the page sent, so the page can never drift from the API a client uses.
"""

import pytest

from browser import assert_no_console_errors, expect, save_screenshot
from sidrec.serving import create_app


@pytest.fixture
def server(sasrec_run, live_server):
    with live_server(create_app(sasrec_run)) as running:
        yield running


def test_page_is_self_contained_html(server, client_for):
    with client_for(server) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>sidrec" in page.text and "://" not in page.text  # nothing fetched from elsewhere
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'sha256-" in policy
        assert "/" not in http.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_item_search_ranks_ids_then_titles_and_validates(server, client_for):
    with client_for(server) as http:
        def found(**params):
            answer = http.get("/items", params=params)
            assert answer.status_code == 200, answer.text
            return [item["item_id"] for item in answer.json()["items"]]

        assert found(q="NUMBER 1") == ["i01", "i10", "i11"]  # title substring, any case, catalogue order
        assert found(q="i0", limit=3) == ["i00", "i01", "i02"]  # id prefix
        assert found(q="I03")[0] == "i03" and found(q="nothing like it") == []
        first = http.get("/items", params={"q": "i03"}).json()["items"][0]
        assert first == {"item_id": "i03", "title": "item number 3"}
        assert http.get("/health").json()["limits"]["max_search"] == 50
        for params, field in (({"q": "i", "limit": 51}, "limit"), ({"q": "i", "limit": 0}, "limit"),
                              ({"q": ""}, "q"), ({"q": "x" * 257}, "q"), ({}, "q")):
            answer = http.get("/items", params=params)
            assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", field], params


def shown_after(page, action) -> tuple[dict, dict]:
    """Do `action`, wait for the page's POST /recommend and its rendering: (request sent, what is shown)."""
    with page.expect_response("**/recommend") as answer:
        action()
    expect(page.locator("#output")).to_have_attribute("aria-busy", "false")
    rows = page.locator("#results tbody tr")
    scores = page.eval_on_selector_all("#results td.score", "cells => cells.map(c => Number(c.dataset.score))")
    shown = {"items": rows.locator("td.item").all_text_contents(),
             "titles": rows.locator("td.title").all_text_contents(), "scores": scores}
    return answer.value.request.post_data_json, shown


def test_page_shows_what_the_api_answers(server, client_for, browser_page):
    page = browser_page
    page.goto(server.url)
    expect(page.locator("#model")).to_have_text("sasrec · 12 items · 40 users")

    search = page.locator("#item-input")
    search.press_sequentially("number 3")
    page.get_by_role("option", name="i03 item number 3").click()  # picked by title
    search.fill("i05")
    search.press("Enter")  # typed id
    expect(page.locator("#history li")).to_have_text(["i03 item number 3×", "i05 item number 5×"])
    page.locator("#k").fill("12")

    with client_for(server) as http:
        def api(request):
            answer = http.post("/recommend", json=request).json()
            return {key: answer[key] for key in ("items", "titles", "scores")}

        request, excluded = shown_after(page, page.locator("#recommend").click)
        assert request == {"history": ["i03", "i05"], "k": 12, "exclude_history": True}
        assert excluded == api(request) and not {"i03", "i05"} & set(excluded["items"])
        save_screenshot(page, "serve-page.png")

        request, everything = shown_after(page, page.locator("#exclude").uncheck)  # the toggle asks again
        assert request == {"history": ["i03", "i05"], "k": 12, "exclude_history": False}
        assert everything == api(request) and len(everything["items"]) == 12
    assert_no_console_errors(page)

    page.locator("#clear").click()
    search.fill("ghost")
    search.press("Enter")
    page.locator("#recommend").click()
    expect(page.locator("#error")).to_have_text("unknown item ids in history: ghost")
    expect(page.locator("#results")).to_be_hidden()
    assert_no_console_errors(page, allow="status of 422")  # Chromium logs the API's 422 itself


def test_titles_are_shown_as_text(sasrec_run, live_server, browser_page):
    app = create_app(sasrec_run)
    markup = '<img src="x" onerror="window.injected = 1">item number 3'
    app.state.service.served.catalogue.titles[3] = markup  # a title that would run if parsed as HTML
    page = browser_page
    with live_server(app) as server:
        page.goto(server.url)
        page.locator("#item-input").fill("i03")
        page.get_by_role("option").first.click()
        page.locator("#exclude").uncheck()
        page.locator("#recommend").click()
        expect(page.locator("#results td.title").filter(has_text="item number 3")).to_have_text(markup)
        expect(page.locator("#history li").first).to_contain_text(markup)
        assert page.locator("img").count() == 0 and page.evaluate("window.injected") is None
    assert_no_console_errors(page)
