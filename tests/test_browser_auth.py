"""A shared server, started the way an operator starts it (`spuraudit app --host ... --users ... --token`), in a
real browser: nothing but the sign-in before signing in; votes carry the signed-in name whatever `?annotator=`
says; no "I trust this file" box."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from spuraudit.auth import TOKEN_ENV, add_user

from .browser_support import REPO, _free_port, chromium_page, require_browser, screenshot

pytestmark = pytest.mark.browser

SLOW = 180_000  # ms: the first run of a page computes evidence on a busy CPU
# Another loopback address: the test server is unreachable from other machines, yet `spuraudit app` treats
# the address as shared (only 127.0.0.1, localhost and ::1 count as local), so sign-in is required.
HOST = "127.0.0.2"
TOKEN = "fixed-test-token-0123456789abcdef"


@contextmanager
def shared_server(home: Path, users: Path, timeout: float = 120.0):
    port = _free_port()
    env = {**os.environ, "SPURAUDIT_HOME": str(home), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
           TOKEN_ENV: TOKEN, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(home / f"app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "spuraudit.cli", "app", "--host", HOST, "--port", str(port),
                             "--users", str(users), "--token", "--data-root", str(home)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"spuraudit app exited early; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"spuraudit app did not start within {timeout} s; see {log.name}")
        yield url
    finally:
        proc.terminate()  # `spuraudit app` and the Streamlit process it started, both ours
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _sign_in(page, name: str, password: str) -> None:
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_a_shared_server_in_the_browser(demo_copy, tmp_path):
    require_browser()
    from playwright.sync_api import expect

    home = demo_copy.folder.parent.parent
    users = tmp_path / "users.tsv"
    add_user(users, "bo", "annotator", "pw-bo")
    with shared_server(home, users) as url, chromium_page() as page:
        # Not signed in: the sign-in form and nothing else, whatever page the address asks for.
        page.goto(f"{url}/review?project=demo&annotator=mallory", wait_until="domcontentloaded")
        page.get_by_role("heading", name="spuraudit: sign in").wait_for(timeout=SLOW)
        expect(page.get_by_role("heading", name="Review features")).to_have_count(0)
        expect(page.get_by_text("Reviewed by you")).to_have_count(0)
        screenshot(page, "shared-sign-in")

        # Signed in as bo: the name box says bo and cannot be changed; the vote is bo's, not mallory's.
        _sign_in(page, "bo", "pw-bo")
        page.get_by_role("heading", name="Review features", exact=True).wait_for(timeout=SLOW)
        name = page.get_by_role("textbox", name="Your name", exact=True)
        expect(name).to_have_value("bo", timeout=SLOW)
        expect(name).to_be_disabled()
        background = page.locator(".st-key-vote-background button")
        expect(background).to_be_enabled(timeout=SLOW)
        background.click()
        expect(page.get_by_text(re.compile(r"Class \d+, feature \d+: "))).to_be_visible(timeout=SLOW)
        votes = demo_copy.labels().votes()
        assert [v.annotator for v in votes] == ["bo"]

        # The token's address signs in as an admin; the Add data page offers no "I trust this file".
        page.goto(f"{url}/data?token={TOKEN}", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Add data & model").wait_for(timeout=SLOW)
        page.get_by_role("heading", name="2. Model").wait_for(timeout=SLOW)
        expect(page.get_by_text("I trust this file")).to_have_count(0)
        assert "token=" not in page.url  # taken out of the address once used
        screenshot(page, "shared-add-data")
