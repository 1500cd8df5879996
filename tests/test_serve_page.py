"""The web page of `attend serve` (GET /), in headless Chromium: a person types sentences, clicks
Translate and reads what the REST API answers (translation, score, attention heatmap), or its error.
Drives the page with docs/serve_screenshot.py's helpers (the script that draws docs/serve.png)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.serving import http

SCRIPT = Path(__file__).parents[1] / "docs" / "serve_screenshot.py"
SENTENCES = ["Hola.", "Y lloró Jesús."]
MODEL = "es-en"  # `attend serve RUN_DIR` serves a run under its language pair


def load_script():
    spec = importlib.util.spec_from_file_location("serve_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(request):
    """(server, browser, the script's helpers): the page of the tiny trained run's `attend serve`; the
    server is checked to stop with status 0 once the module's tests are done."""
    script = load_script()
    missing = script.missing_browser_parts()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; `make browser` installs them")
    trained_run = request.getfixturevalue("trained_run")  # trained only when the browser is there
    with script.serve_page(trained_run) as (server, driver):  # RuntimeError unless it stops with 0
        yield server, driver, script


def text_of(element) -> str:
    """The element's own text (`textContent`: what it holds, not CSS-generated placeholder text)."""
    return element.get_property("textContent")


def predict(server, signature: str, sentences: list[str]) -> list[dict]:
    status, answer = http(
        "POST",
        f"{server.rest}/v1/models/{MODEL}:predict",
        {"signature_name": signature, "instances": sentences},
    )
    assert status == 200, answer
    return answer["predictions"]


@pytest.mark.slow
def test_page_shows_translations_scores_and_attention_as_the_api_gives_them(page):
    from selenium.webdriver.common.by import By

    server, driver, script = page
    assert text_of(driver.find_element(By.ID, "model")) == MODEL
    assert driver.find_element(By.ID, "version").text == "version 1"

    script.translate(driver, "\n".join(SENTENCES))

    assert not driver.find_element(By.ID, "error").is_displayed()
    results = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(results) == len(SENTENCES)
    # the page asks translate_with_attention for its lines in one request, as here
    attended = predict(server, "translate_with_attention", SENTENCES)
    for sentence, result, expected in zip(SENTENCES, results, attended, strict=True):
        default = predict(server, "serving_default", [sentence])[0]
        assert text_of(result.find_element(By.CSS_SELECTOR, ".translation")) == default["translation"]
        assert expected["translation"] == default["translation"]
        shown_score = float(text_of(result.find_element(By.CSS_SELECTOR, ".score .logprob")))
        assert shown_score == pytest.approx(default["score"], abs=5.1e-4)
        assert "log-probability" in text_of(result.find_element(By.CSS_SELECTOR, ".score"))

        sources = [index for index, piece in enumerate(expected["source_tokens"]) if piece]
        targets = [index for index, piece in enumerate(expected["target_tokens"]) if piece]
        heatmap = result.find_element(By.CSS_SELECTOR, ".heatmap")
        labels = heatmap.find_elements(By.CSS_SELECTOR, "th.source-piece")
        assert [text_of(label) for label in labels] == [expected["source_tokens"][i] for i in sources]
        labels = heatmap.find_elements(By.CSS_SELECTOR, "th.target-piece")
        assert [text_of(label) for label in labels] == [expected["target_tokens"][i] for i in targets]
        cells = heatmap.find_elements(By.CSS_SELECTOR, ".cell")
        assert len(cells) == len(targets) * len(sources) > 0
        shown = driver.execute_script(
            "return Array.from(arguments[0].querySelectorAll('.cell'), (cell) =>"
            " [Number(cell.dataset.row), Number(cell.dataset.col), Number(cell.dataset.weight)]);",
            heatmap,
        )
        for row, column, weight in shown:
            wanted = expected["attention"][targets[row]][sources[column]]
            assert weight == pytest.approx(wanted, abs=1e-3), (sentence, row, column)
        assert sorted((row, column) for row, column, _ in shown) == [
            (row, column) for row in range(len(targets)) for column in range(len(sources))
        ]


@pytest.mark.slow
def test_page_shows_the_servers_error(page):
    from selenium.webdriver.common.by import By

    _, driver, script = page
    script.translate(driver, "a" * 3000, keyboard=True)  # over the default --max-sentence-chars 2000

    error = driver.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "has a text of 3000 characters" in error.text
    assert "--max-sentence-chars" in error.text
    assert "HTTP 400" in error.text
    assert driver.find_elements(By.CSS_SELECTOR, "#results .result") == []
    assert driver.find_element(By.ID, "translate").is_enabled()


@pytest.mark.slow
def test_page_completes_the_translation_being_typed_with_the_complete_signature(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, driver, script = page
    # every request the page makes, recorded: the suggestion must come from `complete`
    driver.execute_script(
        "window.sentBodies = []; const original = window.fetch;"
        "window.fetch = (url, init) => { window.sentBodies.push((init || {}).body || null);"
        " return original(url, init); };"
    )
    source = driver.find_element(By.ID, "source")
    source.clear()
    source.send_keys(SENTENCES[1])
    draft = driver.find_element(By.ID, "draft")
    assert draft.is_displayed()  # shown because the model has a `complete` signature
    draft.send_keys("And Jes")
    continuation = driver.find_element(By.CSS_SELECTOR, "#ghost .continuation")
    script.wait_for(
        driver,
        lambda d: (draft.get_attribute("data-completion") or "").startswith("And Jes"),
        "the completion",
    )

    status, answer = http(
        "POST",
        f"{server.rest}/v1/models/{MODEL}:predict",
        {"signature_name": "complete", "inputs": {"text": [SENTENCES[1]], "prefix": ["And Jes"]}},
    )
    assert status == 200, answer
    completion = answer["outputs"]["translation"][0]
    assert completion.startswith("And Jes")
    shown = text_of(driver.find_element(By.CSS_SELECTOR, "#ghost .typed")) + text_of(continuation)
    assert shown == completion
    bodies = [body for body in driver.execute_script("return window.sentBodies;") if body]
    sent = [json.loads(body) for body in bodies]
    assert sent[-1] == {
        "signature_name": "complete",
        "inputs": {"text": [SENTENCES[1]], "prefix": ["And Jes"]},
    }

    draft.send_keys(Keys.TAB)  # accepts the suggestion
    assert draft.get_property("value") == completion
    assert driver.switch_to.active_element == draft
