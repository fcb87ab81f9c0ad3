"""The HTML report in a real browser: headless Chromium loads it without console errors and every
image decodes.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (a
dev extra). Without them the test is skipped locally but FAILS when the ``CI`` variable is set, so
CI cannot pass by silently skipping. The test starts and stops the browser itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bayesmeta.report import build_report

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason} (install with: apt-get install -y chromium chromium-driver)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable(f"chromium ({chromium}) and chromedriver ({chromedriver}) are not both on PATH")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium  # type: ignore[assignment]
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


_DECODE_ALL = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.images).map((img) =>
    img.decode().then(
        () => ({alt: img.alt, ok: true, w: img.naturalWidth, h: img.naturalHeight}),
        (e) => ({alt: img.alt, ok: false, w: img.naturalWidth, h: img.naturalHeight, err: String(e)}))))
  .then(done);
"""


def load_and_check(drv: Any, path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Open ``path``; return (console error messages, one record per <img>)."""
    drv.get_log("browser")  # drop anything left from a previous page
    drv.get(path.resolve().as_uri())
    assert drv.execute_script("return document.readyState") == "complete"
    images = drv.execute_async_script(_DECODE_ALL)
    errors = [f"{e['level']}: {e['message']}" for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return errors, images


def test_report_loads_cleanly_in_chromium(driver: Any, make_run: Any, tmp_path: Path) -> None:
    runs = [
        make_run("maml", "classification", seed=0, temperature=3.0),
        make_run("bmaml", "classification", seed=1, mask=True),
        make_run("dkt", "regression", seed=2),
        make_run("cnp <np>", "regression", seed=3, predictions=False),
    ]
    html_path = build_report(runs, tmp_path / "report")
    errors, images = load_and_check(driver, html_path)
    assert errors == []
    # classification: reliability + risk-coverage + per-task; regression: PIT + coverage + risk-coverage + per-task
    assert len(images) == 7
    bad = [img for img in images if not img["ok"] or img["w"] <= 0 or img["h"] <= 0]
    assert bad == []
    assert driver.title == "bayesmeta report"
    # the method name with markup characters is shown as text, not parsed as a tag
    assert "cnp <np>" in driver.find_element("tag name", "body").text


def test_checker_detects_broken_images_and_console_errors(driver: Any, tmp_path: Path) -> None:
    """The checks above can fail: a broken image and a script error are both caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>x</title></head>'
        '<body><img alt="broken" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom');</script></body></html>",
        encoding="utf-8",
    )
    errors, images = load_and_check(driver, page)
    assert any("boom" in e for e in errors)
    assert len(images) == 1 and (not images[0]["ok"] or images[0]["w"] == 0)


def test_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        _unavailable("chromium is not on PATH")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _unavailable("chromium is not on PATH")
