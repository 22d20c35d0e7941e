"""A real headless Chromium (Debian's ``chromium``) driven by Playwright."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import need

#: found as scripts/system-deps.sh finds it (`command -v chromium`)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium_context(tmp_path_factory):
    """A fresh Chromium profile driven by Playwright's sync API, closed when the generator ends.

    Playwright's sync API holds an event loop on this thread while it is open:
    a fixture built on it must end with the tests that use it (the package's
    or module's, never the session's), or a later ``asyncio.run`` fails.
    """
    need(CHROMIUM is not None, "chromium (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    need(sync_api is not None, "playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=ARGS)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture(scope="package")
def browser_context(tmp_path_factory):
    yield from chromium_context(tmp_path_factory)
