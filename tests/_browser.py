"""Headless Chromium for the browser tests (the HTML report, the documentation site).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (a
dev extra). Without them a test is skipped locally but FAILS when the ``CI`` variable is set, so
CI cannot pass by silently skipping. The flags keep the browser off the network (no component
updates, sync or background requests), which CI's closed network needs.

Imported by test modules as ``from _browser import ...`` (``tests/`` is on ``sys.path`` because
``tests/conftest.py`` lives there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator[Any]:
    """A selenium driver of headless Chromium with its own profile; quits on exit."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if binary is None or chromedriver is None:
        _unavailable(f"chromium ({binary}) and chromedriver ({chromedriver}) are not both on PATH")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary  # type: ignore[assignment]
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir}")
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
        () => ({alt: img.alt, src: img.currentSrc, ok: true, w: img.naturalWidth, h: img.naturalHeight}),
        (e) => ({alt: img.alt, src: img.currentSrc, ok: false, w: img.naturalWidth, h: img.naturalHeight, err: String(e)}))))
  .then(done);
"""


def console_errors(drv: Any) -> list[str]:
    """Console messages of level SEVERE/ERROR since the last call (the log is drained)."""
    return [f"{e['level']}: {e['message']}" for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def load_and_check(drv: Any, path: Path | str) -> tuple[list[str], list[dict[str, Any]]]:
    """Open ``path`` (a file or a URL); return (console error messages, one record per <img>)."""
    drv.get_log("browser")  # drop anything left from a previous page
    drv.get(path.resolve().as_uri() if isinstance(path, Path) else path)
    assert drv.execute_script("return document.readyState") == "complete"
    images = drv.execute_async_script(_DECODE_ALL)
    return console_errors(drv), images
