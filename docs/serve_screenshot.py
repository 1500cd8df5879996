"""Screenshot of `attend serve`'s web page translating two sentences, in headless Chromium: `docs/serve.png`.

Like docs/tensorboard_screenshot.py (whose browser helpers it reuses): the picture should show what the
page really draws for an export of the current code, and anyone should be able to remake it. It starts
`attend serve RUN_DIR` on free ports of 127.0.0.1 (tests/serving.py's `Server`), drives Debian's
`chromium` through `chromedriver` with selenium, types the sentences, clicks Translate, waits for the
translations and their attention heatmaps, saves the PNG and always stops both.

    python docs/serve_screenshot.py RUN_DIR OUT.png [--sentence TEXT ...] [--width 1000 --height 760]

tests/test_serve_page.py drives the page with the same helpers (`serve_page`, `translate`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ("Y lloró Jesús.", "En el principio crió Dios los cielos y la tierra.")
PAGE_TIMEOUT_SECONDS = 120  # a first translation traces the model's graph: seconds on a busy machine


def _load_tensorboard_screenshot():
    path = Path(__file__).resolve().with_name("tensorboard_screenshot.py")
    spec = importlib.util.spec_from_file_location("tensorboard_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_browser = _load_tensorboard_screenshot()
INSTALL_HINT = _browser.INSTALL_HINT
missing_browser_parts = _browser.missing_browser_parts  # what of chromium, chromedriver, selenium is missing
open_browser = _browser.open_browser  # headless chromium, the page drawn at exactly width × height


def server_class():
    """tests/serving.py's `Server` (`attend serve` in a subprocess on free loopback ports)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.serving import Server

    return Server


def wait_for(driver, condition, what: str, timeout: float = PAGE_TIMEOUT_SECONDS):
    """`condition(driver)`'s first true value, polled; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"the page did not show {what} within {timeout:.0f} s")


def open_page(driver, url: str) -> None:
    """Loads the page and waits until it has read the model's metadata (its version is shown)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(
        driver,
        lambda d: (
            d.find_element(By.ID, "version").text.startswith("version")
            or d.find_element(By.ID, "error").is_displayed()
        ),
        "the model's version",
    )


def translate(driver, text: str, keyboard: bool = False) -> None:
    """Types `text` (sentences, one per line) and clicks Translate (or presses Ctrl+Enter), then waits
    until the page is no longer busy: its results or its error box are shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    source = driver.find_element(By.ID, "source")
    source.clear()
    if len(text) > 200:  # typing key by key takes a while; the page reads the textarea's value
        driver.execute_script("arguments[0].value = arguments[1];", source, text)
    else:
        source.send_keys(text)
    if keyboard:
        source.send_keys(Keys.CONTROL, Keys.ENTER)
    else:
        driver.find_element(By.ID, "translate").click()
    # the page turns busy (and clears its results and error) as it handles the click or key
    button = driver.find_element(By.ID, "translate")
    wait_for(driver, lambda d: button.is_enabled(), "the translations")


@contextmanager
def serve_page(run_dir: Path, width: int = 1000, height: int = 760):
    """(server, browser) with the page of `attend serve RUN_DIR` loaded; the browser is closed on leaving
    and the server stopped (SIGTERM), RuntimeError if it did not exit with 0."""
    with server_class()(str(run_dir)) as server:
        driver = None
        try:
            driver = open_browser(width, height)
            open_page(driver, server.rest + "/")
            yield server, driver
        finally:
            if driver is not None:
                driver.quit()
            status = server.stop()
        if status != 0:
            raise RuntimeError(f"attend serve exited with {status}: {server.log()[-2000:]}")


def screenshot(run_dir: Path, out: Path, sentences=SENTENCES, width: int = 1000, height: int = 760) -> str:
    """Saves the page with `sentences` translated as `out` (PNG, width × height); returns its text."""
    from selenium.webdriver.common.by import By

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with serve_page(run_dir, width, height) as (_, driver):
        translate(driver, "\n".join(sentences))
        error = driver.find_element(By.ID, "error")
        if error.is_displayed():
            raise RuntimeError(f"the page shows an error: {error.text}")
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        time.sleep(0.3)  # the last repaint
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium could not save {out}")
        return driver.find_element(By.TAG_NAME, "body").text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with an export (attend export RUN)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument(
        "--sentence",
        action="append",
        dest="sentences",
        help=f"a sentence to translate (repeat for more; default: {' / '.join(SENTENCES)})",
    )
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=760)
    arguments = parser.parse_args(argv)
    missing = missing_browser_parts()
    if missing:
        print(f"error: {', '.join(missing)} not installed; {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not (arguments.run / "export" / "saved_model.pb").is_file():
        print(f"error: {arguments.run} has no export; attend export {arguments.run}", file=sys.stderr)
        return 2
    sentences = arguments.sentences or SENTENCES
    screenshot(arguments.run, arguments.out, sentences, arguments.width, arguments.height)
    size = f"{arguments.width}×{arguments.height}"
    print(f"{arguments.out} ({size}, {len(sentences)} sentences translated by {arguments.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
