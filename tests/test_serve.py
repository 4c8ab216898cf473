"""`defocus serve`: the HTTP API on the bundled model, with real uploads, bad uploads, limits and concurrency."""
from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from defocus.bundled import bundled_weights  # noqa: E402
from defocus.cli import app as cli_app  # noqa: E402
from defocus.inference import Predictor  # noqa: E402
from defocus.serve import ServeSettings, create_app  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO = EXAMPLES / "dahlia_flower.jpg"          # 640x427 JPEG
PHOTO_PNG = EXAMPLES / "cat_chelsea.png"        # 451x300 PNG


@pytest.fixture(scope="module")
def predictor():
    if bundled_weights() is None:
        pytest.skip("no bundled weights in this installation")
    return Predictor(device="cpu", workers=1, batch_size=16)


def make_client(predictor, **settings) -> TestClient:
    settings.setdefault("device", "cpu")
    return TestClient(create_app(ServeSettings(**settings), predictor))


@pytest.fixture(scope="module")
def client(predictor):
    with make_client(predictor) as c:
        yield c


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return base64.b64decode(payload)


def post_file(client, path_or_bytes, name="photo.jpg", url="/v1/predict", **params):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return client.post(url, files={"file": (name, data)}, params=params)


def assert_one_line_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


def png_bomb(width=10000, height=10000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels that compresses to ~10 KB (100 MP, above the server's default 64 MP limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ service


def test_health_ready_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["name"] == "dffnet"
    models = client.get("/v1/models").json()
    assert models["models"][0]["source"].startswith("bundled")
    assert models["defaults"] == {"size": 512, "keep_aspect": False, "upscale": False, "threshold": 0.5,
                                  "upsample": "bilinear", "flip_tta": False, "refine": False}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz", "/readyz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_predict_json_describes_the_image_and_its_outputs(client):
    r = post_file(client, PHOTO, "dahlia_flower.jpg")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["filename"], body["width"], body["height"]) == ("dahlia_flower.jpg", 640, 427)
    assert body["error"] is None and body["model"]["backbone"] == "tf_efficientnet_lite2"
    timings = body["timings"]
    assert 0 < timings["predict_seconds"] < timings["request_seconds"] and timings["encode_seconds"] > 0
    prob = png_array(data_url_bytes(body["images"]["prob"]))
    mask = png_array(data_url_bytes(body["images"]["mask"]))
    overlay = Image.open(io.BytesIO(data_url_bytes(body["images"]["overlay"])))
    assert prob.shape == mask.shape == (427, 640) and overlay.size == (640, 427) and overlay.format == "JPEG"
    assert set(np.unique(mask)) <= {0, 255}
    assert body["in_focus_fraction"] == pytest.approx((mask == 255).mean(), abs=1e-6)
    # the flower is sharp, the background blurred: a real map, not a constant
    assert 0.1 < body["in_focus_fraction"] < 0.5
    h, w = prob.shape
    assert prob[h // 2 - 20:h // 2 + 20, w // 2 - 20:w // 2 + 20].mean() > 200
    assert prob[:40, :40].mean() < 60


def test_threshold_option_moves_the_mask(client):
    low = post_file(client, PHOTO, threshold=0.1, include="").json()
    high = post_file(client, PHOTO, threshold=0.9, include="").json()
    assert low["images"] == {} and low["threshold"] == 0.1
    assert low["in_focus_fraction"] > high["in_focus_fraction"]


def test_raw_body_and_multipart_give_the_same_map(client):
    raw = client.post("/v1/predict", content=PHOTO_PNG.read_bytes(), params={"output": "prob"},
                      headers={"content-type": "image/png", "x-filename": "cat.png"})
    multi = post_file(client, PHOTO_PNG, "cat.png", output="prob")
    assert raw.status_code == multi.status_code == 200
    assert raw.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(png_array(raw.content), png_array(multi.content))
    overlay = post_file(client, PHOTO_PNG, "cat.png", output="overlay")
    assert overlay.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(overlay.content)).size == (451, 300)


@pytest.mark.parametrize("options", [
    {},
    {"keep_aspect": True, "size": 256, "threshold": 0.3},
    {"upscale": False, "size": 640},
    {"refine": True, "size": 256},
])
def test_server_maps_equal_cli_maps(predictor, tmp_path, options):
    args = ["predict", str(PHOTO), "-o", str(tmp_path), "--device", "cpu", "--save", "prob,mask", "--no-progress"]
    if options.get("keep_aspect"):
        args.append("--keep-aspect")
    if options.get("upscale") is False:
        args.append("--no-upscale")
    if options.get("refine"):
        args.append("--refine")
    for key in ("size", "threshold"):
        if key in options:
            args += [f"--{key}", str(options[key])]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    # earlier tests may have changed torch's thread count (kept per thread): a server made now runs its workers
    # with the count this thread, and so the CLI, runs with
    with make_client(predictor) as client:
        for kind in ("prob", "mask"):
            served = post_file(client, PHOTO, "dahlia_flower.jpg", output=kind, **options)
            assert served.status_code == 200, served.text
            cli_map = np.asarray(Image.open(tmp_path / f"dahlia_flower_{kind}.png"))
            np.testing.assert_array_equal(png_array(served.content), cli_map)


def test_request_options_run_the_one_loaded_model():
    from defocus.serve.predictors import ServerPredictors
    from toys import BrightNet

    default = Predictor(BrightNet(), device="cpu", size=64)
    predictors = ServerPredictors(ServeSettings(device="cpu", size=64), default)
    assert predictors.get(64, False, True) is default
    other = predictors.get(96, True, False)
    assert other.runner is default.runner
    assert (other.options.size, other.options.keep_aspect, other.options.upscale) == (96, True, False)
    refined = predictors.get(64, False, True, refine=True)
    assert refined.runner is default.runner and refined.options.refine and not default.options.refine
    assert other.input_size((200, 100)) == (96, 48) and other.input_size((40, 20)) == (40, 20)


def test_an_internal_fault_with_one_image_fails_it_in_place(client, monkeypatch):
    from defocus.serve import jobs

    real = jobs.describe

    def describe(filename, *args):
        if filename == "b.png":
            raise ValueError("boom")
        return real(filename, *args)

    monkeypatch.setattr(jobs, "describe", describe)
    files = [("file", ("a.jpg", PHOTO.read_bytes())), ("file", ("b.png", PHOTO_PNG.read_bytes()))]
    r = client.post("/v1/predict/batch", files=files, params={"include": ""})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 1 and body["results"][0].get("error") is None
    assert body["results"][1]["error"] == "b.png: cannot encode the outputs (ValueError)"


def test_batch_in_upload_order_with_a_failure_in_place(client):
    files = [("file", ("a.jpg", PHOTO.read_bytes())), ("file", ("notes.txt", b"not an image at all")),
             ("file", ("empty.jpg", b"")), ("file", ("b.png", PHOTO_PNG.read_bytes()))]
    r = client.post("/v1/predict/batch", files=files, params={"include": "prob"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 2                                   # an empty file too fails in its place only
    names = [x["filename"] for x in body["results"]]
    assert names == ["a.jpg", "notes.txt", "empty.jpg", "b.png"]
    assert "not an image" in body["results"][1]["error"] and "empty upload" in body["results"][2]["error"]
    del body["results"][2]
    assert_one_line_error(post_file(client, b"", "empty.jpg"), 400)  # the only image of a request
    for entry, path in ((body["results"][0], PHOTO), (body["results"][2], PHOTO_PNG)):
        single = png_array(post_file(client, path, output="prob").content)
        batched = png_array(data_url_bytes(entry["images"]["prob"]))
        assert batched.shape == single.shape
        # batched and single forward passes agree up to float rounding of the 8-bit map
        assert np.abs(batched.astype(int) - single.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------- bad requests


def truncated_jpeg() -> bytes:
    return PHOTO.read_bytes()[:4000]


def truncated_png() -> bytes:
    data = PHOTO_PNG.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.txt", b"hello, this is text", 422, "not an image"),
    ("cut.jpg", truncated_jpeg(), 422, "cut.jpg"),
    ("cut.png", truncated_png(), 422, "truncated"),
    ("empty.jpg", b"", 400, "empty"),
])
def test_bad_uploads_get_one_line_errors_and_the_server_keeps_serving(client, name, data, status, words):
    message = assert_one_line_error(post_file(client, data, name), status)
    assert words in message
    assert post_file(client, PHOTO_PNG, include="").status_code == 200


def test_decompression_bomb_refused_from_the_header(client):
    bomb = png_bomb()
    assert len(bomb) < 2_000_000
    message = assert_one_line_error(post_file(client, bomb, "bomb.png"), 413)
    assert "10000x10000" in message and "limit" in message
    assert post_file(client, PHOTO_PNG, include="").status_code == 200


def test_too_large_upload_refused(predictor):
    with make_client(predictor, max_upload_bytes=50_000) as c:
        big = PHOTO.read_bytes()
        assert len(big) > 50_000
        message = assert_one_line_error(post_file(c, big), 413)
        assert "larger than the limit of 50000 bytes" in message  # the configured limit, not the body's
        raw = c.post("/v1/predict", content=big)
        assert_one_line_error(raw, 413)
        small = io.BytesIO()
        Image.open(PHOTO_PNG).resize((120, 80)).save(small, "PNG")
        assert post_file(c, small.getvalue(), "small.png", include="").status_code == 200


@pytest.mark.parametrize("request_kwargs, status, words", [
    ({"files": {"image": ("a.jpg", b"x")}}, 400, "field 'file'"),
    ({"data": {"file": "text, not a file"}, "files": {"other": ("a", b"x")}}, 400, "file upload"),
    ({"params": {"threshold": "2"}, "content": b"x"}, 422, "threshold"),
    ({"params": {"size": "5"}, "content": b"x"}, 422, "size"),
    ({"params": {"include": "prob,depth"}, "content": b"x"}, 422, "depth"),
    ({"params": {"output": "tiff"}, "content": b"x"}, 422, "output"),
])
def test_malformed_requests(client, request_kwargs, status, words):
    assert words in assert_one_line_error(client.post("/v1/predict", **request_kwargs), status)


def test_too_many_files_in_a_batch(predictor):
    with make_client(predictor, max_batch_files=2) as c:
        files = [("file", (f"{i}.png", PHOTO_PNG.read_bytes())) for i in range(3)]
        assert_one_line_error(c.post("/v1/predict/batch", files=files), 400)


def test_api_key(predictor):
    with make_client(predictor, api_key="s3cret") as c:
        assert "API key" in assert_one_line_error(post_file(c, PHOTO_PNG), 401)
        assert_one_line_error(c.get("/v1/models", headers={"X-API-Key": "wrong"}), 401)
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/v1/predict", files={"file": ("a.png", PHOTO_PNG.read_bytes())},
                      headers={"X-API-Key": "s3cret"}, params={"include": ""}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


# ------------------------------------------------------------------------------------ load and concurrency


def test_workers_run_with_the_creating_threads_torch_thread_count(predictor):
    import torch

    before = torch.get_num_threads()
    try:
        for wanted in (1, 2):
            torch.set_num_threads(wanted)
            with make_client(predictor) as c:
                assert c.app.state.defocus.pool.submit(torch.get_num_threads).result(timeout=30) == wanted
        with make_client(predictor, threads=3) as c:
            assert c.app.state.defocus.pool.submit(torch.get_num_threads).result(timeout=30) == 3
    finally:
        torch.set_num_threads(before)


def occupy_pool(c: TestClient, jobs: int) -> threading.Event:
    """Fill ``jobs`` slots of the server's pool with jobs that wait for the returned event."""
    release = threading.Event()
    for _ in range(jobs):
        c.app.state.defocus.pool.submit(release.wait, 30)
    return release


def test_queue_full_gets_503_with_retry_after_then_recovers(predictor):
    with make_client(predictor, workers=1, queue_size=1) as c:
        release = occupy_pool(c, 2)
        try:
            r = post_file(c, PHOTO_PNG)
            assert "busy" in assert_one_line_error(r, 503)
            assert int(r.headers["Retry-After"]) >= 1
            assert_one_line_error(c.post("/v1/predict/batch", files={"file": ("a.png", PHOTO_PNG.read_bytes())}),
                                  503)
        finally:
            release.set()
        for _ in range(100):
            if c.app.state.defocus.pool.in_flight == 0:
                break
            threading.Event().wait(0.05)
        assert post_file(c, PHOTO_PNG, include="").status_code == 200


def test_request_timeout_gives_504_and_frees_its_slot(predictor):
    with make_client(predictor, workers=1, queue_size=1, request_timeout=0.3) as c:
        pool = c.app.state.defocus.pool
        release = occupy_pool(c, 1)
        try:
            assert "timeout" in assert_one_line_error(post_file(c, PHOTO_PNG), 504)
            assert pool.in_flight >= 1  # the running job keeps its slot until it really ends
        finally:
            release.set()
        for _ in range(100):
            if pool.in_flight == 0:
                break
            threading.Event().wait(0.05)
        assert pool.in_flight == 0  # every slot is free again: nothing leaked
        assert c.get("/v1/models").status_code == 200


def test_retry_after_grows_with_a_job_that_runs_longer_than_the_others():
    import threading
    import time

    from defocus.serve.pool import BoundedPool

    pool = BoundedPool(workers=1, queue_size=0)
    done = threading.Event()
    try:
        pool.submit(lambda: None).result()      # finished jobs make the mean small
        pool._mean_seconds = 0.01
        pool.submit(done.wait)
        time.sleep(1.3)
        assert pool.retry_after() >= 2          # the running job has taken 1.3 s already
    finally:
        done.set()
        pool.shutdown()
    assert pool.in_flight == 0 and pool.retry_after() == 1


def test_a_slot_is_taken_before_the_upload_is_read_and_freed_when_no_job_comes_of_it():
    from defocus.serve.pool import BoundedPool, PoolFull

    pool = BoundedPool(workers=1, queue_size=0)
    try:
        slot = pool.reserve()  # an upload being read holds the only slot
        with pytest.raises(PoolFull):
            pool.reserve()
        slot.release()  # a bad upload: no job, the slot is free again
        slot.release()
        assert pool.in_flight == 0
        slot = pool.reserve()
        assert pool.submit(lambda: 7, slot=slot).result() == 7  # the job took the reserved slot over ...
        slot.release()  # ... so the request's own release frees nothing twice
        for _ in range(100):
            if pool.in_flight == 0:
                break
            threading.Event().wait(0.01)
        assert pool.in_flight == 0
    finally:
        pool.shutdown()


def test_a_request_holding_the_only_slot_refuses_others_before_their_upload(predictor, monkeypatch):
    import asyncio

    from defocus.serve import app as serve_app

    started, release = threading.Event(), threading.Event()
    real = serve_app.read_uploads

    async def slow_upload(*args):  # the first client is still sending its photo (at most 20 s), others are quick
        if not started.is_set():
            started.set()
            for _ in range(1000):
                if release.is_set():
                    break
                await asyncio.sleep(0.02)
        return await real(*args)

    monkeypatch.setattr(serve_app, "read_uploads", slow_upload)
    with make_client(predictor, workers=1, queue_size=0) as c, ThreadPoolExecutor(1) as ex:
        first = ex.submit(post_file, c, PHOTO_PNG, include="")
        assert started.wait(30)
        assert "busy" in assert_one_line_error(post_file(c, PHOTO_PNG), 503)
        release.set()
        assert first.result().status_code == 200


def test_file_names_and_methods_clients_send(client):
    photo = PHOTO_PNG.read_bytes()
    r = client.post("/v1/predict", files={"file": ("x.pn\x00g", photo)}, params={"include": ""})
    assert r.status_code == 200, r.text  # a NUL in the name is no reason to fail the image
    for header in ("f%C3%B6t%C3%B6.png", "fötö.png".encode("utf-8")):  # percent-encoded, or UTF-8 bytes
        r = client.post("/v1/predict", content=photo, headers={"X-Filename": header}, params={"include": ""})
        assert r.status_code == 200 and r.json()["filename"] == "fötö.png"
    assert client.head("/healthz").status_code == 200 and client.head("/").status_code == 200
    responses = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["responses"]
    assert {"400", "401", "408", "413", "422", "503", "504"} <= set(responses)
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_small_pixel_limits_are_said_in_pixels(predictor):
    with make_client(predictor, max_pixels=20_000) as c:
        message = assert_one_line_error(post_file(c, PHOTO_PNG), 413)
        assert "451x300 = 135300 pixels" not in message and "0.1 MP" in message and "20000 pixels" in message


def test_model_loading_failure_reported_by_readyz(predictor):
    with TestClient(create_app(ServeSettings(model="no-such-model.safetensors", device="cpu"))) as c:
        for _ in range(1500):  # the loading thread may wait long for a busy CPU
            if c.app.state.defocus.load_error:
                break
            threading.Event().wait(0.02)
        assert "no-such-model" in assert_one_line_error(c.get("/readyz"), 503)
        assert_one_line_error(post_file(c, PHOTO_PNG), 503)
        assert c.get("/healthz").status_code == 200


def test_twenty_parallel_requests_all_answered(predictor):
    import httpx

    from serving import running_server

    photos = [PHOTO, PHOTO_PNG, EXAMPLES / "coffee_cup.png", EXAMPLES / "kodak23_parrots.png"]
    expected = {}
    with make_client(predictor) as c:
        for p in photos:
            expected[p.name] = post_file(c, p, include="").json()["in_focus_fraction"]
    app = create_app(ServeSettings(device="cpu", workers=2, queue_size=20), predictor)
    with running_server(app) as url:
        def one(i):
            p = photos[i % len(photos)]
            r = httpx.post(f"{url}/v1/predict", files={"file": (p.name, p.read_bytes())},
                           params={"include": "prob"}, timeout=120)
            return p.name, r.status_code, r.json()

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(one, range(20)))
    assert len(answers) == 20
    for name, status, body in answers:
        assert status == 200, body
        assert body["in_focus_fraction"] == expected[name]
        assert body["images"]["prob"].startswith("data:image/png;base64,")


# ------------------------------------------------------------------------------------------ page and CLI


@pytest.mark.parametrize("bad, words", [
    ({"workers": 0}, "workers"), ({"queue_size": -1}, "queue_size"), ({"size": 8}, "size"),
    ({"threshold": 1.5}, "threshold"), ({"api_key": ""}, "api_key"), ({"request_timeout": 0}, "request_timeout"),
    ({"threads": 0}, "threads"), ({"api_key": "ключ"}, "printable ASCII"), ({"api_key": " key"}, "api_key"),
])
def test_settings_refuse_nonsense(bad, words):
    with pytest.raises(ValueError, match=words):
        ServeSettings(**bad)


def test_page_and_static_files_ship_in_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text and 'id="threshold"' in page.text
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        # no CDN: nothing on the page is fetched from another host
        assert "http://" not in r.text and "https://" not in r.text
    assert "https://" not in page.text and "http://" not in page.text


def test_cli_serve_bad_model_is_one_line_error():
    r = CliRunner().invoke(cli_app, ["serve", "--model", "no-such-model", "--device", "cpu"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-model" in lines[0]


def test_cli_serve_on_a_taken_port_is_one_line_error():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = CliRunner().invoke(cli_app, ["serve", "--device", "cpu", "--port", str(port)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot serve on 127.0.0.1:{port}")


def test_cli_serve_without_the_extra_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    r = CliRunner().invoke(cli_app, ["serve"])
    assert r.exit_code == 2
    assert r.stderr.strip() == ('error: defocus serve needs the \'serve\' extra (uvicorn not installed): '
                                'pip install "defocus[serve]"')
