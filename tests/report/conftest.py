"""A real headless Chromium (Debian's ``chromium``) driven by Playwright."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import need

#: found as scripts/system-deps.sh finds it (`command -v chromium`)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
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
