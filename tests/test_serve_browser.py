"""The `defocus serve` page in a real browser: headless Chromium uploads a photo, shows its overlay and
re-thresholds it in the page. Skips when Chromium (Debian's ``chromium`` package) or playwright is missing."""
from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
sync_api = pytest.importorskip("playwright.sync_api")
import httpx  # noqa: E402

from defocus.bundled import bundled_weights  # noqa: E402
from defocus.inference import Predictor  # noqa: E402
from defocus.serve import ServeSettings, create_app  # noqa: E402
from serving import running_server  # noqa: E402

CHROMIUM = os.environ.get("DEFOCUS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
PHOTO = Path(__file__).resolve().parents[1] / "examples" / "dahlia_flower.jpg"   # 640x427, sharp flower
TINT, DIM = np.array([20, 45, 110]), 0.45

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM}")


@pytest.fixture(scope="module")
def server_url():
    if bundled_weights() is None:
        pytest.skip("no bundled weights in this installation")
    predictor = Predictor(device="cpu", workers=1)
    with running_server(create_app(ServeSettings(device="cpu"), predictor)) as url:
        yield url


@pytest.fixture
def page(tmp_path, server_url):
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=True)
        foreign = []

        def only_loopback(route):
            if route.request.url.startswith(server_url + "/") or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                foreign.append(route.request.url)
                route.abort()

        context.route("**/*", only_loopback)
        errors = []
        pg = context.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server_url + "/")
        yield pg
        context.close()
    assert foreign == [], f"the page fetched from other hosts: {foreign}"
    assert errors == [], f"JavaScript errors: {errors}"


def page_fraction(prob8: np.ndarray, threshold: float) -> float:
    """The page's rule: a pixel of the 8-bit map is in focus when map / 255 >= threshold."""
    return float((prob8 >= math.ceil(threshold * 255 - 1e-9)).mean())


def canvas_pixel(page, x: int, y: int) -> np.ndarray:
    return np.array(page.evaluate(
        "([x, y]) => Array.from(document.querySelector('.card canvas').getContext('2d')"
        ".getImageData(x, y, 1, 1).data.slice(0, 3))", [x, y]), dtype=float)


def test_upload_overlay_threshold_slider_and_screenshot(page, server_url, tmp_path):
    served = httpx.post(f"{server_url}/v1/predict", files={"file": (PHOTO.name, PHOTO.read_bytes())},
                        params={"output": "prob"}, timeout=120)
    prob8 = np.asarray(Image.open(io.BytesIO(served.content)))
    original = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=float)

    page.wait_for_function("document.querySelector('#model-info').textContent.includes('dffnet')")
    page.set_input_files("#file-input", str(PHOTO))
    card = page.locator(".card[data-state=done]")
    card.wait_for(timeout=60_000)
    assert card.locator(".name").inner_text() == PHOTO.name
    assert card.locator(".status").inner_text() == "640x427"

    f50 = page_fraction(prob8, 0.5)
    assert float(card.get_attribute("data-fraction")) == pytest.approx(f50, abs=1e-6)
    assert card.locator(".fraction").inner_text() == f"{100 * f50:.1f} % in focus"

    # the overlay: the sharp flower (centre) shows the photo, the blurred corner is dimmed and tinted
    y, x = 213, 320
    assert prob8[y, x] > 200 and prob8[5, 5] < 60
    assert np.abs(canvas_pixel(page, x, y) - original[y, x]).max() <= 4
    tinted = original[5, 5] * DIM + TINT * (1 - DIM)
    assert np.abs(canvas_pixel(page, 5, 5) - tinted).max() <= 4

    # the threshold slider re-thresholds in the page, without a new request
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.locator("#threshold").fill("0.8")
    assert page.locator("#threshold-value").inner_text() == "0.80"
    f80 = page_fraction(prob8, 0.8)
    assert f80 < f50
    page.wait_for_function(f"document.querySelector('.card').dataset.fraction === '{f80:.6f}'")
    assert card.locator(".fraction").inner_text() == f"{100 * f80:.1f} % in focus"
    assert not [u for u in requests if "/v1/" in u]

    # downloads: the server's map as it is, and the mask at the page's threshold, both at the photo's size
    with page.expect_download() as info:
        card.locator(".download-map").click()
    assert info.value.suggested_filename == "dahlia_flower_prob.png"
    np.testing.assert_array_equal(np.asarray(Image.open(info.value.path())), prob8)
    with page.expect_download() as info:
        card.locator(".download-mask").click()
    assert info.value.suggested_filename == "dahlia_flower_mask.png"
    mask = np.asarray(Image.open(info.value.path()).convert("L"))
    np.testing.assert_array_equal(mask, np.where(prob8 >= math.ceil(0.8 * 255), 255, 0))

    # tint opacity 0 shows the photo everywhere (boundary pixels aside)
    page.locator("#opacity").fill("0")
    assert np.abs(canvas_pixel(page, 5, 5) - original[5, 5]).max() <= 4

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1280


def test_bad_file_shows_its_error_and_the_grid_sorts_by_fraction(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    examples = PHOTO.parent
    page.set_input_files("#file-input", [str(bad), str(PHOTO), str(examples / "coffee_cup.png")])
    page.wait_for_function("document.querySelectorAll('.card[data-state=done], .card[data-state=error]')"
                           ".length === 3", timeout=60_000)
    error_card = page.locator(".card[data-state=error]")
    assert "not an image" in error_card.locator(".status").inner_text()
    names = page.locator(".card .name").all_inner_texts()
    fractions = [float(f) for f in page.locator(".card[data-state=done]").evaluate_all(
        "cards => cards.map(c => c.dataset.fraction)")]
    assert names == ["coffee_cup.png", PHOTO.name, "notes.jpg"]   # sharpest first, failures last
    assert fractions == sorted(fractions, reverse=True)
    assert "2 of 3 photo(s) done, 1 failed" in page.locator("#summary").inner_text()


def test_refine_box_predicts_the_photos_again_with_refined_maps(page, server_url):
    """Ticking "Refine edges" predicts every photo again with refine=true: the card's fraction is then the
    server's refined map's."""
    maps = {}
    for refine in (False, True):
        served = httpx.post(f"{server_url}/v1/predict", files={"file": (PHOTO.name, PHOTO.read_bytes())},
                            params={"output": "prob", "refine": str(refine).lower()}, timeout=120)
        maps[refine] = np.asarray(Image.open(io.BytesIO(served.content)))
    f_plain, f_refined = page_fraction(maps[False], 0.5), page_fraction(maps[True], 0.5)
    assert f_plain != f_refined

    page.wait_for_function("document.querySelector('#model-info').textContent.includes('dffnet')")
    assert not page.locator("#refine").is_checked()                 # the server's default
    page.set_input_files("#file-input", str(PHOTO))
    card = page.locator(".card[data-state=done][data-refine=false]")
    card.wait_for(timeout=60_000)
    assert float(card.get_attribute("data-fraction")) == pytest.approx(f_plain, abs=1e-6)
    page.locator("#refine").check()
    refined = page.locator(".card[data-state=done][data-refine=true]")
    refined.wait_for(timeout=60_000)
    assert float(refined.get_attribute("data-fraction")) == pytest.approx(f_refined, abs=1e-6)
    assert page.locator(".card").count() == 1


def test_a_new_api_key_keeps_the_threshold_and_refine_the_user_chose(tmp_path, server_url):
    """The server's defaults fill the controls once; entering the key again (or another one) after the user
    moved the slider keeps the slider, and the cards stay drawn at what it shows."""
    predictor = Predictor(device="cpu", workers=1)
    with running_server(create_app(ServeSettings(device="cpu", api_key="s3cret"), predictor)) as url, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        pg = browser.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url + "/")
        pg.locator("#key-box").wait_for(state="visible")
        pg.fill("#api-key", "s3cret")
        pg.dispatch_event("#api-key", "change")
        pg.wait_for_function("document.querySelector('#model-info').textContent.includes('dffnet')")
        pg.set_input_files("#file-input", str(PHOTO))
        card = pg.locator(".card[data-state=done]")
        card.wait_for(timeout=60_000)
        pg.eval_on_selector("#threshold", "el => { el.value = 0.8; el.dispatchEvent(new Event('input')); }")
        at_08 = float(card.get_attribute("data-fraction"))
        pg.evaluate("document.querySelector('#model-info').textContent = ''")
        pg.dispatch_event("#api-key", "change")
        pg.wait_for_function("document.querySelector('#model-info').textContent.includes('dffnet')")
        assert float(pg.input_value("#threshold")) == pytest.approx(0.8)
        assert pg.locator("#threshold-value").inner_text() == "0.80"
        assert float(card.get_attribute("data-fraction")) == pytest.approx(at_08)
        browser.close()
    assert errors == []
