"""The documentation site: ``mkdocs build --strict`` succeeds, every page is in it, nothing is
fetched from the network, and in headless Chromium every page loads without console errors,
every image decodes, and search finds pages.

Needs the ``docs`` extra (mkdocs-material, mkdocstrings) and, for the browser tests, Chromium
(``tests/_browser.py``); without them the tests skip locally and FAIL when ``CI`` is set. The
site is built once per module into a temporary folder (a few seconds) and opened from the file
system, as a reader who ran ``make docs`` would open it (the offline plugin makes search work
there too).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _browser import _unavailable, chromium, console_errors, load_and_check

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        _unavailable(f"the docs extra is not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as drv:
        yield drv


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def test_every_markdown_page_is_built(site: Path) -> None:
    sources = sorted(p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*.md"))
    assert sources, "no pages under docs/"
    missing = [str(p) for p in sources if not (site / p).is_file()]
    assert missing == []
    # the API reference is generated from the docstrings, shapes included
    api = (site / "api" / "inference.html").read_text(encoding="utf-8")
    assert "bayesmeta.inference.MAML" in api and "meta_loss" in api and "[T, Q" in api
    # Sphinx roles in docstrings are rendered as code, not as literal ":class:" (mkdocs_hooks.py)
    assert ":class:" not in api and ":func:" not in api and "<code>~" not in api


def test_site_needs_no_network(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["theme"]["font"] is False  # no Google Fonts
    remote = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)
    offenders = {str(p.relative_to(site)): remote.findall(p.read_text(encoding="utf-8"))[:3] for p in pages(site)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_page_loads_cleanly_and_every_image_decodes(site: Path, driver: Any) -> None:
    problems, n_images = [], 0
    for page in pages(site):
        errors, images = load_and_check(driver, page)
        n_images += len(images)
        bad = [img["src"] for img in images if not img["ok"] or img["w"] <= 0 or img["h"] <= 0]
        if errors or bad:
            problems.append((str(page.relative_to(site)), errors, bad))
    assert problems == []
    # the tutorials' figures are there: one per figure the pages reference
    figures = {m for p in DOCS.rglob("*.md") for m in re.findall(r"assets/tutorials/[\w-]+\.png", p.read_text(encoding="utf-8"))}
    assert len(figures) >= 8 and n_images >= len(figures)


def search(driver: Any, site: Path, query: str) -> list[str]:
    """Type ``query`` into the site's search box; return the titles of the results shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((site / "index.html").as_uri())
    box = driver.find_element(By.CSS_SELECTOR, "input[data-md-component='search-query']")
    driver.execute_script("arguments[0].focus();", box)
    # the search index loads in a worker; the result meta line changes from "Initializing search"
    WebDriverWait(driver, 60).until(
        lambda d: "Initializing" not in d.find_element(By.CSS_SELECTOR, ".md-search-result__meta").get_attribute("textContent")
    )
    box.send_keys(query)
    meta = driver.find_element(By.CSS_SELECTOR, ".md-search-result__meta")
    WebDriverWait(driver, 30).until(lambda d: re.search(r"\d+ matching|No matching", meta.get_attribute("textContent")))
    items = driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item h1, .md-search-result__item h2")
    return [i.get_attribute("textContent").strip() for i in items]


def test_search_finds_pages(site: Path, driver: Any) -> None:
    titles = search(driver, site, "conformal")
    assert titles, "typing a query showed no results"
    assert any("onformal" in t for t in titles), titles
    assert console_errors(driver) == []
    # and a word in no page finds nothing: the results above come from the query
    assert search(driver, site, "qqxyzzyqq") == []


def test_ci_and_make_build_the_site_strictly() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^\.venv/bin/mkdocs build --strict$", ci, re.M)
    assert re.search(r"^docs:.*\n\t\$\(BIN\)/mkdocs build --strict$", make, re.M)
    # `make test` (README's command, CI's first step) installs the docs extra these tests need
    assert '-e ".[dev,docs]"' in make


def test_every_public_module_has_an_api_page() -> None:
    """A new subpackage or public module must get a ``::: bayesmeta.NAME`` block in docs/api/."""
    package = ROOT / "bayesmeta"
    public = {p.stem for p in package.glob("*.py") if not p.name.startswith("_")}
    public |= {p.parent.name for p in package.glob("*/__init__.py") if not p.parent.name.startswith("_")}
    public -= {"cli", "demo"}  # the command line: documented in docs/overview.md, not an API
    documented = set(re.findall(r"^::: bayesmeta\.(\w+)", "\n".join(
        p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md")), flags=re.M))
    assert sorted(public - documented) == []
