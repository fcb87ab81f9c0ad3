"""The HTML report in a real browser: headless Chromium loads it without console errors and every
image decodes.

The browser comes from ``tests/_browser.py`` (Debian's ``chromium`` and ``chromium-driver``,
selenium): skipped locally without them, a failure when ``CI`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import _unavailable, chromium, load_and_check

from bayesmeta.report import build_report


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as drv:
        yield drv


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
