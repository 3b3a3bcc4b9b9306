"""Headless Chromium driven by Selenium (Debian's chromium-driver), for the report's page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from services import service_unavailable

WAIT = 30  # seconds for the page to draw


def start_chromium() -> Iterator:
    """A headless Chromium, quit when done; skipped without one, failed in CI."""
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        if not Path(driver_path).is_file():
            raise FileNotFoundError(driver_path)
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        options.add_argument("--window-size=1400,1100")
        options.add_argument("--force-device-scale-factor=1")
        options.add_argument("--allow-file-access-from-files")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as exc:
        service_unavailable("Chromium and chromedriver (Debian package chromium-driver)", exc)
    yield driver
    driver.quit()


def open_page(browser, url: str) -> None:
    """Open a page and wait until the grid is drawn."""
    browser.get("about:blank")
    browser.get(url)
    ready(browser)


def ready(browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(
        lambda b: b.execute_script("return document.body.dataset.state") == "ready"
    )
