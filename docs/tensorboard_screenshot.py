"""Screenshot of one TensorBoard tab of a run, taken in headless Chromium: `docs/tensorboard.png`.

Why a script: the picture in the README should show what TensorBoard really draws for a run of the
current code, and anyone should be able to remake it the same way (`make screenshot`) instead of
cropping a capture by hand that drifts out of date. It starts the venv's TensorBoard on a free port of
127.0.0.1 (no other traffic), drives Debian's `chromium` through `chromedriver` with selenium, waits
until the tab has drawn its charts (or table, or images), saves the PNG and always stops both.

    python docs/tensorboard_screenshot.py RUN_OR_LOGDIR OUT.png [--tab custom_scalars]
        [--width 1400 --height 1000 --zoom 1.25]

Charts are drawn unsmoothed and with outliers kept in the y range: a short run has a handful of points
and the default smoothing (0.6) and outlier clipping would misdraw them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = (
    "install them with `make screenshot` "
    "(apt-get install -y chromium chromium-driver; pip install -e '.[dev]')"
)
TABS = ("custom_scalars", "hparams", "scalars", "images")
SERVER_TIMEOUT_SECONDS = 60
PAGE_TIMEOUT_SECONDS = 60
SETTLE_SECONDS = 1.0
ZOOM = 1.25  # TensorBoard's chart cards have a fixed size: zoomed, four fill 1400 × 1000 and read better

# Every element matching a selector, in the document and in every (nested) shadow root.
FIND_DEEP = """
function findDeep(root, selector, found) {
  found = found || [];
  root.querySelectorAll(selector).forEach((element) => found.push(element));
  root.querySelectorAll('*').forEach((element) => {
    if (element.shadowRoot) findDeep(element.shadowRoot, selector, found);
  });
  return found;
}
"""

# Opens collapsed categories (custom scalars, scalars) so their charts are drawn.
OPEN_CATEGORIES = (
    FIND_DEEP
    + """
findDeep(document, 'tf-category-paginated-view').forEach((view) => {
  const heading = view.shadowRoot && view.shadowRoot.querySelector('button.heading');
  if (heading && !heading.hasAttribute('open-button')) heading.click();
});
"""
)

# Turns off "Ignore outliers in chart scaling" (kept in localStorage, not in the URL).
KEEP_OUTLIERS = (
    FIND_DEEP
    + """
findDeep(document, 'paper-checkbox').forEach((box) => {
  if (box.textContent.includes('Ignore outliers') && box.checked) box.click();
});
"""
)

CHARTS_DRAWN = (
    FIND_DEEP
    + """
const charts = findDeep(document, 'vz-line-chart2');
const drawn = (chart) => Array.from(chart.shadowRoot.querySelectorAll('path.line'))
  .some((line) => (line.getAttribute('d') || '').length > 0);
return charts.length > 0 && charts.every(drawn);
"""
)

TABLE_FILLED = (
    FIND_DEEP
    + """
const grids = findDeep(document, 'tf-hparams-table-view vaadin-grid, vaadin-grid');
return grids.length > 0 && grids.some((grid) => grid.items && grid.items.length > 0);
"""
)

IMAGES_LOADED = (
    FIND_DEEP
    + """
const images = findDeep(document, 'tf-image-loader img, img#main-image');
return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
"""
)

READY_CHECKS = {
    "custom_scalars": CHARTS_DRAWN,
    "scalars": CHARTS_DRAWN,
    "hparams": TABLE_FILLED,
    "images": IMAGES_LOADED,
}

# The text a person sees, shadow roots included (TensorBoard's plugins are Polymer elements).
PAGE_TEXT = """
function textOf(root) {
  let text = '';
  root.childNodes.forEach((node) => {
    if (node.nodeType === Node.TEXT_NODE) text += node.textContent + ' ';
    else if (node.nodeType === Node.ELEMENT_NODE && !['STYLE', 'SCRIPT', 'TEMPLATE'].includes(node.tagName)) {
      if (node.shadowRoot) text += textOf(node.shadowRoot);
      text += textOf(node);
    }
  });
  return text;
}
return textOf(document.body).replace(/\\s+/g, ' ');
"""


def missing_browser_parts() -> list[str]:
    """What of chromium, chromedriver and selenium is not installed."""
    missing = []
    if shutil.which("chromium") is None:
        missing.append("chromium")
    if not CHROMEDRIVER.exists():
        missing.append(f"chromedriver ({CHROMEDRIVER})")
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium")
    return missing


def log_directory(run_or_logdir: Path) -> Path:
    """A run folder's `logs/`, or the folder itself when it is already a log directory."""
    logs = run_or_logdir / "logs"
    return logs if logs.is_dir() else run_or_logdir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_tensorboard(logdir: Path, port: int, log) -> subprocess.Popen:
    """The venv's tensorboard on 127.0.0.1:port; its output goes to the file `log` (a pipe could fill)."""
    tensorboard = Path(sys.executable).parent / "tensorboard"
    command = [str(tensorboard), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_until_serving(server: subprocess.Popen, port: int, log, timeout: float = SERVER_TIMEOUT_SECONDS):
    """Until TensorBoard lists its runs (it has read the logs); its output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"tensorboard exited with {server.returncode}: {output}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"tensorboard did not answer on port {port} within {timeout:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """Terminate, then kill if it does not end within 10 s."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def open_browser(width: int, height: int, zoom: float = 1.0):
    """Headless Debian chromium through /usr/bin/chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={width},{height}",
        # no traffic but to TensorBoard: no updates or other background calls, no name resolves
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    # the PNG exactly width × height (the window size would include the browser's frame), drawn at `zoom`
    viewport = {"width": round(width / zoom), "height": round(height / zoom)}
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {**viewport, "deviceScaleFactor": zoom, "mobile": False}
    )
    return driver


def wait_until_drawn(driver, tab: str, timeout: float = PAGE_TIMEOUT_SECONDS) -> None:
    """Until the tab's charts (table, images) are on the page; categories opened, outliers kept."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        driver.execute_script(OPEN_CATEGORIES)
        driver.execute_script(KEEP_OUTLIERS)
        if driver.execute_script(READY_CHECKS[tab]):
            time.sleep(SETTLE_SECONDS)  # the last transitions and redraws
            return
        time.sleep(0.5)
    raise TimeoutError(f"the {tab} tab drew nothing within {timeout:.0f} s")


@contextmanager
def tensorboard_page(
    run_or_logdir: Path,
    tab: str = "custom_scalars",
    width: int = 1400,
    height: int = 1000,
    zoom: float = ZOOM,
):
    """A browser showing `tab` of TensorBoard on the run, drawn; both are stopped on leaving."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = start_tensorboard(log_directory(Path(run_or_logdir)), port, log)
        driver = None
        try:
            wait_until_serving(server, port, log)
            driver = open_browser(width, height, zoom)
            driver.get(f"http://127.0.0.1:{port}/#{tab}&_smoothingWeight=0")
            wait_until_drawn(driver, tab)
            yield driver
        finally:
            if driver is not None:
                driver.quit()
            stop(server)


def page_text(driver) -> str:
    """What the page says, shadow roots included."""
    return driver.execute_script(PAGE_TEXT)


def screenshot(
    run_or_logdir: Path,
    out: Path,
    tab: str = "custom_scalars",
    width: int = 1400,
    height: int = 1000,
    zoom: float = ZOOM,
) -> str:
    """Saves the tab as `out` (PNG, width × height); returns the page's text, for checks."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tensorboard_page(run_or_logdir, tab, width, height, zoom) as driver:
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium could not save {out}")
        return page_text(driver)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (its logs/ is used) or a log directory")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--tab", choices=TABS, default="custom_scalars")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--zoom", type=float, default=ZOOM, help="page zoom (default %(default)s)")
    arguments = parser.parse_args(argv)
    missing = missing_browser_parts()
    if missing:
        print(f"error: {', '.join(missing)} not installed; {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not arguments.run.is_dir():
        print(f"error: {arguments.run} is not a folder", file=sys.stderr)
        return 2
    screenshot(arguments.run, arguments.out, arguments.tab, arguments.width, arguments.height, arguments.zoom)
    print(f"{arguments.out} ({arguments.width}×{arguments.height}, {arguments.tab} tab of {arguments.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
