"""Real-browser fixtures: Playwright (Python) driving Debian's chromium, headless."""

import os
import re
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session", autouse=True)
def _allow_orm_beside_playwright():
    """Playwright's sync API runs an event loop in the test thread; the test's own ORM calls
    (setting up data, and the live server's database flush at teardown) would otherwise be
    refused as async-unsafe. Only for browser tests: child processes never inherit it
    (tests/helpers.py strips it)."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"chromium not found at {CHROMIUM}: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def login(page, live_server):
    def do_login(email: str, password: str):
        page.goto(live_server.url + "/login/")
        page.fill("input[name=username]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(live_server.url + "/")
        return page

    return do_login


@pytest.fixture
def open_editor():
    """open_editor(page) -> (the embedded Label Studio editor's frame locator, its frame, the
    image's box on the page), once the editor on that annotate page is ready and has drawn its
    image (the same as tests/e2e/test_misuse.py's _editor, which can use this)."""
    from playwright.sync_api import expect

    def wait_until_drawn(page):
        editor = page.frame_locator("#editor")
        expect(editor.locator("body[data-editor=ready]")).to_have_count(1, timeout=30_000)
        frame = page.frame(url=re.compile(r"/editor/$"))
        frame.wait_for_function(
            "[...document.querySelectorAll('#root img')].some(i => i.complete && i.naturalWidth > 0)")
        return editor, frame, frame.locator("#root img").first.bounding_box()

    return wait_until_drawn
