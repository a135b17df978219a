"""The search page in a real headless Chromium against a real uvicorn server.

Needs /usr/bin/chromium and /usr/bin/chromedriver (.ci/run installs them). Set
DISTILSEARCH_SCREENSHOTS to a folder to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import uvicorn

from api.app import create_app
from api.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1100,900",
)
DOCS = [
    ("s1", "Stem cells", "Stem cells differentiate into many tissue types in the embryo."),
    ("s2", "Gene expression", "Transcription factors regulate gene expression in cells."),
    ("s3", "Viral replication", "Viruses replicate inside host cells and hijack ribosomes."),
    ("s4", "Vaccines", "Vaccines train the immune system to recognise pathogens."),
    ("s5", "<img src=x onerror=alert(1)>", "A title that is HTML must show as text, not run."),
    ("s6", "Protein folding", "Chaperones help proteins fold into their native shape."),
]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def base_url(
    tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    idx = tiny_index(DOCS, tmp_path_factory.mktemp("browser") / "idx")
    config = uvicorn.Config(
        create_app(Settings(index_dir=idx)), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 60 s")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(browser: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def _screenshot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 5000  # a rendered page, not a blank
    keep = os.environ.get("DISTILSEARCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def _search(base_url: str, query: str, mode: str) -> Any:
    """The server's own answer to ``GET /search`` (k 10, as the page asks)."""
    url = f"{base_url}/search?{urlencode({'q': query, 'mode': mode, 'k': 10})}"
    with urlopen(url, timeout=30) as response:
        return json.load(response)


def _status(browser: Any, fragment: str) -> Any:
    from selenium.webdriver.common.by import By

    def ready(driver: Any) -> bool:
        return fragment in driver.find_element(By.ID, "status").text

    return _wait(browser, ready)


def test_search_modes_scores_and_snippets(browser: Any, base_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of

    browser.get(base_url + "/")
    assert browser.title == "distilsearch"
    _wait(browser, lambda d: "6 documents" in d.find_element(By.ID, "about").text)

    # The index has BM25, so the page starts in the server's default mode, hybrid.
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input[value=hybrid]").is_selected())
    box = browser.find_element(By.ID, "query")
    box.send_keys("cells")
    browser.find_element(By.ID, "go").click()
    _status(browser, "(hybrid)")
    fused = [h.get_attribute("data-id") for h in browser.find_elements(By.CSS_SELECTOR, "li.hit")]
    assert set(fused[:3]) == {"s1", "s2", "s3"} and len(fused) == 6  # k=10, six documents
    first = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")[0]
    assert first.find_element(By.CSS_SELECTOR, ".score-value").text.replace(".", "").isdigit()
    assert first.find_element(By.CSS_SELECTOR, ".snippet").text
    _screenshot(browser, tmp_path, "search-hybrid")

    browser.find_element(By.CSS_SELECTOR, "input[value=bm25]").find_element(By.XPATH, "..").click()
    _status(browser, "(bm25)")
    ids = [h.get_attribute("data-id") for h in browser.find_elements(By.CSS_SELECTOR, "li.hit")]
    assert set(ids) == {"s1", "s2", "s3"}  # the documents that say "cells"
    assert "mode=bm25" in browser.current_url and "q=cells" in browser.current_url

    browser.find_element(By.CSS_SELECTOR, "input[value=dense]").find_element(By.XPATH, "..").click()
    _status(browser, "(dense)")
    assert len(browser.find_elements(By.CSS_SELECTOR, "li.hit")) == 6

    # A query whose dense answer is known from the data: a document's own text (title
    # and text, as it was embedded) has cosine 1 with it, and no other document does.
    s6 = next(doc for doc in DOCS if doc[0] == "s6")
    first = browser.find_element(By.CSS_SELECTOR, "li.hit")
    box.clear()
    box.send_keys(f"{s6[1]} {s6[2]}\n")
    _wait(browser, staleness_of(first))  # the hits of "cells" were replaced
    _status(browser, "(dense)")
    hits = browser.find_elements(By.CSS_SELECTOR, "li.hit")
    ids = [h.get_attribute("data-id") for h in hits]
    assert ids[0] == "s6", ids
    assert hits[0].find_element(By.CSS_SELECTOR, ".score-value").text == "1.0000"
    assert float(hits[1].find_element(By.CSS_SELECTOR, ".score-value").text) < 0.999
    served = _search(base_url, f"{s6[1]} {s6[2]}", "dense")
    assert ids == [h["id"] for h in served["hits"]]  # the page keeps the server's order


def test_html_in_documents_is_shown_as_text(browser: Any, base_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/?q=title+HTML+text&mode=bm25")
    _status(browser, "(bm25)")
    titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "li.hit .title")]
    assert "<img src=x onerror=alert(1)>" in titles
    assert browser.find_elements(By.CSS_SELECTOR, "#results img") == []


def test_errors_are_shown(browser: Any, base_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/?q=" + "x" * 2100)  # over the service's query limit
    _status(browser, "Error:")
    text = browser.find_element(By.ID, "status").text
    assert "the limit is 2000" in text
    assert browser.find_elements(By.CSS_SELECTOR, "li.hit") == []
    _screenshot(browser, tmp_path, "search-error")
