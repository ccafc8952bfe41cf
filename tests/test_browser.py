"""The notebooks' widgets in a real browser: JupyterLab + Debian's Chromium driven by Playwright.

For the masking and GRN notebooks: open the notebook in JupyterLab, run all cells (smoke scale),
focus the first slider's handle, press ArrowRight and check that the readout text and the figure
change. A screenshot of each notebook after the change goes to ``runs/browser_test/`` (or
``$CNX2LITE_SCREENSHOTS``).

Needs ``/usr/bin/chromium`` and the ``playwright`` Python package (``scripts/install_browser.sh``);
never ``playwright install``, which downloads a browser. Skips with the reason when either is
missing, or when there are no photos for the notebooks.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from test_notebooks import NOTEBOOKS, REPO, notebook_env, photo_root

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("CNX2LITE_SCREENSHOTS", REPO / "runs" / "browser_test"))
# notebook -> what the first slider is, for messages
CASES = {"01_masking": "mask ratio", "03_grn": "gamma"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() or importlib.util.find_spec("playwright") is None
    or importlib.util.find_spec("jupyterlab") is None,
    reason=f"needs {CHROMIUM}, the playwright package and jupyterlab: run scripts/install_browser.sh",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JupyterLab server on a free local port serving copies of the notebooks (so autosave never
    touches the committed files), with private config/data/runtime dirs; yields its base URL."""
    if photo_root() is None and importlib.util.find_spec("skimage") is None:
        pytest.skip("no photos for the notebooks: set CNX2LITE_DATA_ROOT or install scikit-image")
    root = tmp_path_factory.mktemp("lab")
    for name in CASES:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / f"{name}.ipynb")
    env = notebook_env(root / "shared-runs")
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime")):
        env[var] = str(root / ".jupyter" / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.open_browser=False", "--ServerApp.allow_root=True", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start; log:\n{(root / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _accept_kernel_dialog(page, wait_s: float = 8.0) -> None:
    """JupyterLab may ask which kernel to start ("Select Kernel"); take the proposed one."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    with contextlib.suppress(Exception):
        accept.wait_for(timeout=wait_s * 1000)
        accept.click()


def _dismiss_news(page) -> None:
    """The 'get notified about Jupyter news?' toast would cover part of the screenshot."""
    no = page.locator(".jp-toast-button", has_text="No")
    with contextlib.suppress(Exception):
        no.first.click(timeout=2000)


@pytest.mark.parametrize("name", list(CASES))
def test_slider_redraws_readout_and_figure(lab: str, browser, name: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(int(os.environ.get("CNX2LITE_BROWSER_TIMEOUT_MS", 120_000)))
    try:
        page.goto(f"{lab}/lab/workspaces/{name}/tree/{name}.ipynb?reset")  # own workspace: only this notebook
        page.wait_for_selector(".jp-Notebook .jp-Cell")
        _accept_kernel_dialog(page)
        # the kernel is up when the toolbar's status says Idle
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        _dismiss_news(page)
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        # drop the committed outputs first, so everything checked below comes from this run
        page.get_by_role("menuitem", name="Edit", exact=True).click()
        page.locator("li.lm-Menu-item[data-command='editmenu:clear-all']").click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()

        explorer = page.locator(".cnx2lite-explorer")
        readout = explorer.locator(".cnx2lite-readout")
        readout.wait_for()
        figure = explorer.locator("img").first
        figure.wait_for()
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        errors = page.locator(".jp-OutputArea-output", has_text="Traceback")
        assert not errors.count(), f"{name}: a cell raised: {errors.all_inner_texts()[:1]}"
        explorer.scroll_into_view_if_needed()
        text_before, src_before = readout.inner_text(), figure.get_attribute("src")

        handle = explorer.locator(".noUi-handle").first  # the first slider: CASES[name]
        handle.focus()
        page.keyboard.press("ArrowRight")
        expect(readout).not_to_have_text(text_before, timeout=60_000)
        expect(figure).not_to_have_attribute("src", src_before or "", timeout=60_000)
        text_after, src_after = readout.inner_text(), figure.get_attribute("src")
        assert text_after != text_before, f"{name}: readout did not change after moving {CASES[name]}"
        assert src_after != src_before, f"{name}: figure did not change after moving {CASES[name]}"

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        explorer.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
        print(f"{name}: {text_before!r} -> {text_after!r}; screenshot {SCREENSHOTS / f'{name}.png'}")
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-failure.png"))
        raise
    finally:
        page.close()
