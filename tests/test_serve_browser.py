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
from serve_support import XSS_NAME, has_bundled_model, shared_server

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
