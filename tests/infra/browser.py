"""A headless Chromium from Debian, driven by Playwright, for tests of the Dagster UI.

Chromium is Debian's ``chromium`` package at ``/usr/bin/chromium``; when it is missing it is
installed with ``apt-get`` (CI runs as root with the Debian package registry reachable). If it
cannot be installed or started, the test fails with the reason: it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock

from infra.apt import AptInstallError, apt_install

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused here and it
# stalls; none of them changes how pages render.
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


def ensure_chromium(lock_directory: Path) -> Path:
    """``/usr/bin/chromium``, installed from Debian first when missing; fails the test if not.

    Example:
        >>> ensure_chromium(tmp_path)  # doctest: +SKIP
        PosixPath('/usr/bin/chromium')
    """
    with FileLock(str(lock_directory / "chromium-install.lock")):
        if CHROMIUM.exists():
            return CHROMIUM
        try:
            apt_install(["chromium"])
        except AptInstallError as error:
            pytest.fail(f"could not install Debian's chromium:\n{error}", pytrace=False)
        if not CHROMIUM.exists():
            pytest.fail(f"apt-get installed chromium but {CHROMIUM} is missing", pytrace=False)
        return CHROMIUM


@contextmanager
def chromium_page(executable: Path) -> Iterator[object]:
    """A Playwright page in a headless Chromium, closed with its browser at the end.

    Example:
        >>> with chromium_page(ensure_chromium(tmp_path)) as page:  # doctest: +SKIP
        ...     page.goto("http://127.0.0.1:3000/assets")
    """
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
            )
        except Error as error:
            pytest.fail(f"Chromium ({executable}) did not start: {error}", pytrace=False)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            yield page
        finally:
            browser.close()
