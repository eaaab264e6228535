"""The built book as a reader opens it, offline: a build of the committed notebooks (nothing is
executed; the runner's build step, seconds to a minute) served on a local port and loaded in
headless Chromium whose proxy points nowhere, so any request that would leave the machine fails.

Every page loads with no console error and fetches nothing from outside, every image loads, and
formulas are rendered by the MathJax the site serves itself (runner.stage_mathjax).
Needs Debian's chromium and chromium-driver (as tests/test_user_study_browser.py) and npm.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradcam_lib.runner import Book, build_html, prepare_copy

ROOT = Path(__file__).resolve().parent.parent
BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None or shutil.which("npm") is None,
                                reason="needs chromium, chromedriver (apt) and npm (MathJax for the site)")
# Console errors that are not the book's: the browser's own favicon request, and sphinx-thebe (loaded
# by Jupyter Book 1.x on every page) declaring its `const THEBE_JS_URL` twice on pages with code.
UPSTREAM = ("favicon.ico", "Identifier 'THEBE_JS_URL' has already been declared")
MATH_PAGES = ("book/02_pointing_game.html", "book/07_fidelity_contrastivity.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """The committed book built into a temporary folder and served on a free local port."""
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(ROOT / "book", root / "book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    book = Book(root)
    html = build_html(book, "committed", prepare_copy(book, "committed"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield html, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--window-size=1300,1400",
                     "--proxy-server=http://127.0.0.1:9"):  # nothing listens there: the outside is unreachable
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(180)  # MathJax and axe on a long chapter page, on a loaded machine
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str) -> dict:
    driver.get_log("browser")  # forget the previous page's messages
    driver.get(url)
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const settle = () => setTimeout(done, 300);
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(settle, settle);
        else if (document.readyState === "complete") settle(); else window.addEventListener("load", settle);
    """)
    errors = [m["message"] for m in driver.get_log("browser") if m["level"] == "SEVERE"]
    return driver.execute_script("""
        return {
          resources: performance.getEntriesByType("resource").map(e => e.name),
          broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
          images: document.images.length,
          math: document.querySelectorAll("mjx-container").length,
          raw_math: document.querySelectorAll(".math:not(:has(mjx-container))").length,
        };""") | {"errors": [e for e in errors if not any(known in e for known in UPSTREAM)]}


def test_the_site_serves_its_own_mathjax(site) -> None:
    html, _ = site
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    page = (html / MATH_PAGES[0]).read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in page and "_static/mathjax/tex-mml-chtml.js" in page


def test_every_page_loads_offline(site, browser) -> None:
    html, base = site
    pages = ["index.html", *sorted(str(p.relative_to(html)) for p in (html / "book").glob("*.html"))]
    assert len(pages) >= 10, pages
    for name in pages:
        seen = open_page(browser, f"{base}/{name}")
        outside = [url for url in seen["resources"] if not url.startswith(base)]
        assert seen["errors"] == [], (name, seen["errors"])
        assert outside == [], (name, outside)
        assert seen["broken"] == [], (name, seen["broken"])
        if name in MATH_PAGES:
            assert seen["math"] > 0 and seen["raw_math"] == 0, (name, seen)


def test_offline_browser_notices_an_outside_request(site, browser, tmp_path) -> None:
    """The check above can fail: a page that loads a script from a CDN logs an error here."""
    html, base = site
    (html / "cdn_probe.html").write_text(
        '<html><head><script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '</head><body>$x$</body></html>', encoding="utf-8")
    seen = open_page(browser, f"{base}/cdn_probe.html")
    assert seen["errors"] and seen["math"] == 0, seen


def test_api_page_covers_the_public_surface(site) -> None:
    """Every module that the package top level exports from has its section on the API page, and
    the built page documents the public functions from their docstrings."""
    import re

    import gradcam_lib

    documented = set(re.findall(r"automodule:: gradcam_lib\.([\w.]+)", (ROOT / "book" / "api.md").read_text()))
    assert set(gradcam_lib._PUBLIC.values()) <= documented
    html, _ = site
    page = (html / "book" / "api.html").read_text(encoding="utf-8")
    for name, module in gradcam_lib._PUBLIC.items():
        assert f'id="gradcam_lib.{module}.{name}"' in page or f'id="gradcam_lib.{name}"' in page, name


def test_sidebar_links_every_chapter_and_search_finds_pointing(site, browser) -> None:
    import yaml
    from selenium.webdriver.common.by import By

    html, base = site
    chapters = [entry["file"] for entry in yaml.safe_load((ROOT / "_toc.yml").read_text())["chapters"]]
    open_page(browser, f"{base}/book/intro.html")
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav.bd-docs-nav a")}
    missing = [c for c in chapters if not any(link and link.endswith(f"{c}.html") for link in links)]
    assert missing == [], (missing, sorted(links))
    open_page(browser, f"{base}/search.html?q=pointing")
    deadline = time.monotonic() + 30
    found = []
    while not found and time.monotonic() < deadline:
        found = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#search-results li a")]
        time.sleep(0.3)
    assert any(href.endswith("book/02_pointing_game.html") for href in found), found


def test_chapter_pages_read_as_reports(site, browser) -> None:
    """The defaults parameters cell is not on the page; every other cell's code is collapsed behind
    a toggle (runner.tag_for_reading) that opens on a click, outputs shown."""
    from selenium.webdriver.common.by import By

    html, base = site
    page = (html / "book" / "01_localization.html").read_text(encoding="utf-8")
    assert "Parameters (papermill overrides these" not in page
    open_page(browser, f"{base}/book/01_localization.html")
    toggles = browser.find_elements(By.CSS_SELECTOR, "details.hide.above-input")
    assert len(toggles) >= 10, len(toggles)
    code = toggles[0].find_element(By.CSS_SELECTOR, "pre")
    assert not code.is_displayed()
    summary = toggles[0].find_element(By.CSS_SELECTOR, "summary")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
    summary.click()
    deadline = time.monotonic() + 15  # the theme's toggle script opens it; give a loaded machine time
    while not code.is_displayed() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code.is_displayed() and code.text.strip()
    assert browser.execute_script("return arguments[0].open;", toggles[0])


def test_linkchecker_finds_no_broken_internal_link(site) -> None:
    """LinkChecker (PyPI) crawls the served site from its start page; external links are not
    followed (the book is read offline too), every internal page, image, script and anchor must
    resolve."""
    import re
    import subprocess
    import sys

    _, base = site
    linkchecker = Path(sys.executable).with_name("linkchecker")
    result = subprocess.run([str(linkchecker), "--no-status", "--no-warnings", "--recursion-level=3",
                             "--ignore-url=^https?://(?!127\\.0\\.0\\.1)", "-o", "text",
                             f"{base}/index.html"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    checked = re.search(r"(\d+) links? in (\d+) URLs? checked", result.stdout)
    assert checked and int(checked.group(2)) >= 50 and "0 errors found" in result.stdout, result.stdout[-2000:]


def test_no_critical_accessibility_violation(site, browser) -> None:
    """axe-core 4 (npm, installed by `make test` into .venv/node; driven through
    axe-selenium-python) on the introduction, a chapter and the API page: no violation of impact
    "critical". (axe-selenium-python's own bundled axe-core 3 wrongly requires `listitem` children
    of docutils' bibliography list, whose entries are `doc-biblioentry`, a listitem subclass.)"""
    from axe_selenium_python import Axe

    script = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        pytest.skip("axe-core is not installed: `make test` installs it (npm)")
    _, base = site
    critical = {}
    for name in ("book/intro.html", "book/01_localization.html", "book/api.html"):
        open_page(browser, f"{base}/{name}")
        axe = Axe(browser, script_url=str(script))
        axe.inject()
        found = [(v["id"], [n["target"] for n in v["nodes"]][:3])
                 for v in axe.run()["violations"] if v.get("impact") == "critical"]
        if found:
            critical[name] = found
    assert critical == {}, critical
