"""The search page of `torchclip serve` in a real browser: Debian's headless Chromium driven by Playwright,
against a real server (see serve_support). Skipped, with the reason, only where no chromium binary exists
(`make test` installs it); nothing is downloaded at run time."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from serve_support import XSS_NAME, has_bundled_model, paging_server, shared_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The docs' picture (docs/serve-page.png) is refreshed with TORCHCLIP_DOCS_SCREENSHOT=docs/serve-page.png;
# a plain test run writes it to a temporary folder, so running the tests leaves the checkout unchanged.
SCREENSHOT = Path(
    os.environ.get("TORCHCLIP_DOCS_SCREENSHOT") or Path(tempfile.gettempdir()) / "torchclip-serve-page.png"
)

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no browser: {CHROMIUM} is missing (make browser)"),
    pytest.mark.skipif(not has_bundled_model(), reason="needs the bundled model (its queries are checked)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Contexts bypass the page's Content-Security-Policy: Playwright's waits evaluate strings, which it forbids. The
# markup test is the stronger for it: the page's escaping alone must keep an injected script from running.


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.dialogs = []  # an alert() from injected markup would land here
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    assert page.dialogs == [] and page.errors == []
    context.close()


def results_of(page) -> list[dict]:
    page.wait_for_function("document.querySelectorAll('#results .card').length > 0", timeout=20_000)
    return page.eval_on_selector_all(
        "#results .card",
        "cards => cards.map(c => ({name: c.querySelector('.name').textContent, title: c.querySelector('.name').title,"
        " score: Number(c.querySelector('.score').textContent), img: c.querySelector('img.thumb') &&"
        " c.querySelector('img.thumb').getAttribute('src')}))",
    )


def wait_for_thumbnails(page, count: int) -> None:
    page.wait_for_function(
        f"[...document.querySelectorAll('#results img.thumb')].slice(0, {count})"
        ".every(img => img.complete && img.naturalWidth > 0)",
        timeout=20_000,
    )


def label(name: str) -> str:
    return Path(name).stem.rsplit("_", 1)[0].replace("_", " ")


def test_typing_a_query_shows_thumbnails_and_keeps_it_in_the_url(page):
    server = shared_server("main")
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('stats').textContent.includes('photos')")
    page.fill("#q", "a blue square")
    results = results_of(page)
    assert [label(r["name"]) for r in results[:3]] == ["blue square"] * 3
    assert all(r["img"].startswith("/api/thumbnail/") for r in results)
    wait_for_thumbnails(page, 3)
    assert parse_qs(urlparse(page.url).query)["q"] == ["a blue square"]
    page.wait_for_function("document.getElementById('message').textContent.includes('results')")
    page.wait_for_function(  # every thumbnail in view has loaded
        "[...document.querySelectorAll('#results img.thumb')].filter(img => img.getBoundingClientRect().top"
        " < innerHeight).every(img => img.complete && img.naturalWidth > 0)"
    )
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_url_round_trip_and_back_button(page):
    server = shared_server("main")
    page.goto(server.url + "/?q=a+green+star&min=0.05")
    assert page.input_value("#q") == "a green star"
    assert label(results_of(page)[0]["name"]) == "green star"
    assert page.text_content("#min-score-value") == "0.05"
    page.fill("#q", "a yellow square")
    page.wait_for_function("location.search.includes('yellow')")
    page.wait_for_function("document.querySelector('#results .card .name')?.textContent.startsWith('yellow')")
    page.go_back()
    page.wait_for_function("document.getElementById('q').value === 'a green star'")
    page.wait_for_function("document.querySelector('#results .card .name')?.textContent.startsWith('green')")


def test_more_like_this_and_the_detail_view_by_keyboard(page):
    server = shared_server("main")
    page.goto(server.url + "/?q=a+red+circle")
    first = results_of(page)[0]
    page.focus("#results .card")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.text_content("#detail-meta").count(first["title"]) == 1  # the full path
    page.wait_for_function("document.getElementById('detail-image').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert page.is_hidden("#detail")
    page.click("#results .card:nth-child(2) .more")
    page.wait_for_function("location.search.includes('id=')")
    page.wait_for_function("document.getElementById('query-label').textContent.startsWith('More like')")
    similar = results_of(page)
    assert similar[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(label(r["name"]) == "red circle" or r["name"] == XSS_NAME for r in similar[:3])  # a copy of one


def test_dropping_an_image_searches_with_it(page):
    server = shared_server("main")
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('stats').textContent.includes('photos')")
    data = base64.b64encode((server.photos / "green_star_2.jpg").read_bytes()).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'query.jpg', {type: 'image/jpeg'}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    results = results_of(page)
    assert results[0]["name"] == "green_star_2.jpg" and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert page.text_content("#query-label") == "Image: query.jpg"
    page.set_input_files("#pick", str(server.photos / "yellow_square_0.jpg"))  # the file picker too
    page.wait_for_function("document.getElementById('query-label').textContent.includes('yellow_square_0')")
    page.wait_for_function("document.querySelector('#results .card .name')?.textContent === 'yellow_square_0.jpg'")


def test_a_file_named_like_markup_renders_as_text(page):
    server = shared_server("main")
    page.goto(server.url + "/?q=a+red+circle")
    names = [r["name"] for r in results_of(page)]
    assert XSS_NAME in names
    assert page.eval_on_selector_all("img[src='x']", "found => found.length") == 0
    page.click(f"#results .card:nth-child({names.index(XSS_NAME) + 1}) img.thumb")
    page.wait_for_selector("#detail:not([hidden])")
    assert XSS_NAME in page.text_content("#detail-meta")
    assert page.eval_on_selector_all("#detail-meta img", "found => found.length") == 0


def test_phone_width_and_empty_state(browser):
    server = shared_server("main")
    context = browser.new_context(viewport={"width": 390, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.goto(server.url + "/?q=a+red+circle&where=width+%3E+5000")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('No results')")
    page.goto(server.url + "/?q=a+red+circle&where=no_such_column+%3E+1")
    page.wait_for_function("document.getElementById('message').classList.contains('error')")
    assert "filter" in page.text_content("#message")
    page.goto(server.url + "/?q=a+red+circle")
    results_of(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()


def test_signing_in_with_the_token(browser):
    server = shared_server("live")
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", server.token)
    page.click("#login button")
    page.wait_for_function("document.getElementById('stats').textContent.includes('photos')")
    page.fill("#q", "a red circle")
    assert results_of(page)
    wait_for_thumbnails(page, 1)  # the cookie lets <img> load too
    context.close()


# ---------------------------------------------------------------------- paging (infinite scroll)
# On paging_server's 150 rows: pages of 40 (the page's PAGE), and duplicate rows whose equal scores fall on
# the pages' boundaries.

ANSWERED = """(() => {
    window.answered = 0;  // search answers the page has read: what a test waits on before it looks
    const read = Response.prototype.json;
    Response.prototype.json = function () {
        const reading = read.call(this);
        const count = () => { window.answered += 1; };
        if (this.url.endsWith('/api/search')) reading.then(count, count);
        return reading;
    };
})();"""


@pytest.fixture
def paging(page):
    """The page, with `page.sent` the bodies of its searches as sent and the counter of ANSWERED."""
    page.add_init_script(ANSWERED)
    page.sent = []

    def record(request) -> None:
        if request.url.endswith("/api/search"):
            page.sent.append(request.post_data_json)

    page.on("request", record)
    return page


def ranking(text: str) -> list[str]:
    """The keys `/api/search` ranks for `text`, all of them in one request."""
    with paging_server().client() as api:
        answer = api.post("/api/search", json={"text": text, "k": 1000}).json()
    assert answer["next_offset"] is None and answer["total"] == len(answer["results"]) == 150
    return [result["key"] for result in answer["results"]]


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#results .card .name", "names => names.map(name => name.title)")


def wait_for_cards(page, more_than: int) -> int:
    page.wait_for_function(f"document.querySelectorAll('#results .card').length > {more_than}", timeout=20_000)
    return len(shown(page))


def wait_for_answers(page, count: int) -> None:
    page.wait_for_function(f"window.answered >= {count}", timeout=20_000)


def settle(page) -> None:
    """Let the page act on what it has seen: two frames (intersection observers run then) and a task."""
    page.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done))))"
    )


def scroll_to_the_end(page) -> None:
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")


def hold(page, should_hold) -> list:
    """Routes of the searches `should_hold(body)` picks, kept unanswered until the test continues them."""
    held = []

    def hold_or_continue(route) -> None:
        if should_hold(route.request.post_data_json):
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/search", hold_or_continue)
    return held


def wait_until_held(page, held: list, count: int) -> None:
    for _ in range(200):  # Playwright hands requests to the route while it waits
        if len(held) >= count:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{count} requests were not held within 10 s (held {len(held)})")


def test_scrolling_to_the_end_loads_page_after_page_until_the_last(paging):
    page, everything = paging, ranking("a red circle")
    page.goto(paging_server().url + "/?q=a+red+circle")
    counts = [wait_for_cards(page, 0)]
    settle(page)
    assert len(page.sent) == 1  # the first page fills the window: nothing is asked before the user scrolls
    wait_for_thumbnails(page, 3)
    while counts[-1] < len(everything) and len(counts) < 10:
        scroll_to_the_end(page)
        counts.append(wait_for_cards(page, counts[-1]))
    assert counts == [40, 80, 120, 150]
    assert shown(page) == everything  # the ranking of one big request: no repeat, no gap, in score order
    scores = page.eval_on_selector_all("#results .card .score", "found => found.map(s => Number(s.textContent))")
    assert scores == sorted(scores, reverse=True)
    for _ in range(3):  # at the end, more scrolling asks for nothing more
        page.evaluate("window.scrollTo(0, 0)")
        settle(page)
        scroll_to_the_end(page)
        settle(page)
    assert [body["offset"] for body in page.sent] == [0, 40, 80, 120]
    assert all(body["k"] == 40 and body["text"] == "a red circle" for body in page.sent)
    assert page.text_content("#message").startswith("150 results")  # no "150+"
    assert page.is_hidden("#more")


def test_a_window_taller_than_a_page_is_filled_without_scrolling(paging):
    page = paging
    page.set_viewport_size({"width": 1100, "height": 2600})  # one page of cards ends within it
    page.goto(paging_server().url + "/?q=a+red+circle")
    page.wait_for_function(  # the grid's end lies beyond the window's, and beyond AHEAD_PX (300) more
        "document.getElementById('sentinel').getBoundingClientRect().top > innerHeight + 300"
        " || document.querySelectorAll('#results .card').length === 150",
        timeout=20_000,
    )
    settle(page)
    count = len(shown(page))
    assert count > 40 and [body["offset"] for body in page.sent] == list(range(0, count, 40))
    wait_for_answers(page, len(page.sent))
    assert shown(page) == ranking("a red circle")[:count]


def test_a_late_page_of_the_previous_query_is_not_added_to_the_new_one(paging):
    page = paging
    held = hold(page, lambda body: body["text"] == "a red circle" and body["offset"] > 0)
    page.goto(paging_server().url + "/?q=a+red+circle")
    wait_for_cards(page, 0)
    scroll_to_the_end(page)
    wait_until_held(page, held, 1)  # page 2 of the red circles is on its way
    squares = ranking("a blue square")
    page.evaluate("window.scrollTo(0, 0)")
    page.fill("#q", "a blue square")
    page.wait_for_function(f"document.querySelector('#results .card .name')?.title === {squares[0]!r}")
    held[0].continue_()  # the red circles' page 2 arrives now, after the new query's first page
    wait_for_answers(page, 3)
    settle(page)
    assert shown(page) == squares[:40]
    assert "failed" not in page.text_content("#message")
    scroll_to_the_end(page)
    assert wait_for_cards(page, 40) == 80
    assert shown(page) == squares[:80]
    assert [(body["text"], body["offset"]) for body in page.sent] == [
        ("a red circle", 0),
        ("a red circle", 40),
        ("a blue square", 0),
        ("a blue square", 40),
    ]


def test_an_answer_arriving_after_the_box_is_cleared_is_dropped(paging):
    page = paging
    held = hold(page, lambda body: body["text"] == "a green star")
    page.goto(paging_server().url + "/")
    page.wait_for_function("document.getElementById('stats').textContent.includes('photos')")
    page.fill("#q", "a green star")
    wait_until_held(page, held, 1)
    page.fill("#q", "")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('Type to search')")
    held[0].continue_()
    wait_for_answers(page, 1)
    settle(page)
    assert shown(page) == [] and page.text_content("#message").startswith("Type to search")
    assert page.is_hidden("#more") and page.url.endswith("/")


def test_a_failed_page_is_not_retried_by_itself_and_the_button_asks_again(paging):
    page = paging
    failures = []

    def fail_page_two_once(route):
        if route.request.post_data_json["offset"] == 40 and not failures:
            failures.append(route.request.post_data_json)
            route.fulfill(status=503, json={"error": "the search queue is full; try again shortly"})
        else:
            route.continue_()

    page.route("**/api/search", fail_page_two_once)
    page.goto(paging_server().url + "/?q=a+red+circle")
    wait_for_cards(page, 0)
    scroll_to_the_end(page)
    page.wait_for_function("document.getElementById('message').classList.contains('error')", timeout=20_000)
    assert page.text_content("#message") == "Loading more failed: the search queue is full; try again shortly"
    settle(page)
    assert [body["offset"] for body in page.sent] == [0, 40] and len(shown(page)) == 40
    page.focus("#more")  # the button is in the tab order after the cards: keyboard users page with it
    page.keyboard.press("Enter")
    assert wait_for_cards(page, 40) == 80
    assert shown(page) == ranking("a red circle")[:80]
    assert [body["offset"] for body in page.sent] == [0, 40, 40]
    assert not page.is_hidden("#more") and page.text_content("#more") == "More results"
