"""maskage serve: the API in process, bad uploads, batching and the bounded queue, a load test on loopback, and the
page in a real headless Chromium."""
from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from maskage import Pipeline
from maskage.detect.faces import box_iou
from maskage.apps.serve import Batcher, QueueFull, create_app

from .conftest import tiny_model
from .test_pipeline import two_faces


def jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3))


@pytest.fixture(scope="module")
def client(pipe):
    from fastapi.testclient import TestClient

    with TestClient(create_app(pipe, max_pixels=2_000_000, max_request_bytes=3_000_000, max_images=4)) as c:
        yield c


@pytest.fixture(scope="module")
def scene() -> bytes:
    return jpeg(two_faces())


def test_health_and_openapi(client):
    h = client.get("/health").json()
    import maskage

    assert h["status"] == "ok" and h["pipeline_loaded"] and h["backend"] == "torch"
    assert h["version"] == maskage.__version__ == "1.6.0"
    assert h["pipeline"] == "given"  # a Pipeline object was passed in, not a folder
    paths = client.get("/openapi.json").json()["paths"]
    assert "/predict" in paths and "/health" in paths


def test_predict_multipart_and_raw_bytes_equal_the_api(client, pipe, scene):
    expected = pipe.predict_all_faces([two_faces()])[0]
    got = client.post("/predict?all_faces=true", files={"file": ("two.jpg", scene, "image/jpeg")}).json()
    (image,) = got["images"]
    assert image["name"] == "two.jpg" and (image["width"], image["height"]) == (900, 512)
    # the upload was JPEG-encoded, the API call saw the raw pixels: same faces, labels from the same models
    assert len(image["faces"]) == len(expected) == 2
    raw = client.post("/predict?all_faces=true", content=scene, headers={"content-type": "image/jpeg"}).json()
    assert raw["images"][0]["faces"] == image["faces"]
    decoded = pipe.predict_all_faces([np.asarray(Image.open(io.BytesIO(scene)).convert("RGB"))])[0]
    for face, p in zip(image["faces"], decoded):
        assert face["class_id"] == p.class_id and face["mask"] == p.mask and face["gender"] == p.gender
        assert face["box"] == [round(float(v), 1) for v in p.face_box]
        assert face["mask_probs"] == pytest.approx(p.mask_probs)
    largest = client.post("/predict", files={"file": ("two.jpg", scene, "image/jpeg")}).json()["images"][0]
    assert len(largest["faces"]) == 1
    # the largest face is found by MTCNN (every face: by the scene detector), as Pipeline.predict finds it
    one, (api,) = largest["faces"][0], pipe.predict([np.asarray(Image.open(io.BytesIO(scene)).convert("RGB"))])
    assert (one["box"], one["class_id"], one["mask"]) == ([round(float(v), 1) for v in api.face_box], api.class_id, api.mask)
    assert one["age_probs"] == pytest.approx(api.age_probs)
    assert box_iou(tuple(one["box"]), tuple(image["faces"][0]["box"])) > 0.8  # the same face either way


def test_several_images_in_one_request_keep_their_order(client, scene):
    blank = jpeg(np.full((120, 160, 3), 200, np.uint8))
    files = [("files", ("a.jpg", blank, "image/jpeg")), ("files", ("b.jpg", scene, "image/jpeg"))]
    got = client.post("/predict", files=files).json()["images"]
    assert [i["name"] for i in got] == ["a.jpg", "b.jpg"] and [i["index"] for i in got] == [0, 1]
    assert got[0]["faces"][0]["box"] is None  # no face: the centre crop, box null
    assert got[1]["faces"][0]["box"] is not None


def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buf, "PNG")  # compresses to a few kB
    return buf.getvalue()


BAD_UPLOADS = {
    "not an image": (lambda s: ("x.jpg", b"hello, not a photo", "image/jpeg"), 400, "not an image"),
    "empty": (lambda s: ("x.jpg", b"", "image/jpeg"), 400, "empty"),
    "truncated": (lambda s: ("x.jpg", s[: len(s) // 3], "image/jpeg"), 400, "cannot read image"),
    "over the pixel limit": (lambda s: ("big.png", big_png(1500), "image/png"), 413, "too large"),
    "too many bytes": (lambda s: ("huge.jpg", b"\xff" * 3_100_000, "image/jpeg"), 413, "limit"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_with_a_clear_message(client, scene, kind):
    make, status, words = BAD_UPLOADS[kind]
    r = client.post("/predict", files={"file": make(scene)})
    assert r.status_code == status and words in r.json()["detail"]


def test_other_bad_requests(client, scene):
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/predict", data={"note": "no file"})
    assert r.status_code in (400, 415)
    r = client.post("/predict", files=[("f", (f"{i}.jpg", scene, "image/jpeg")) for i in range(5)])
    assert r.status_code == 413 and "limit is 4" in r.json()["detail"]
    r = client.post("/predict", files=[("f", ("ok.jpg", scene, "image/jpeg")), ("f", ("bad.jpg", b"xx", "image/jpeg"))])
    assert r.status_code == 400 and "bad.jpg" in r.json()["detail"] and "ok.jpg" not in r.json()["detail"]
    r = client.post("/predict", content=b"", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_page_is_served_without_a_build_step(client):
    html = client.get("/").text
    assert "getUserMedia" in html and 'type="file"' in html and "predict?all_faces=true" in html


class SlowPipeline:
    """Counts calls and the images in each; sleeps so that requests pile up."""

    backend = "torch"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay, self.sizes = delay, []

    def predict(self, images):
        time.sleep(self.delay)
        self.sizes.append(len(images))
        return [f"p{len(self.sizes)}-{i}" for i in range(len(images))]

    def predict_all_faces(self, images):
        return [[p, p] for p in self.predict(images)]


def test_batcher_runs_concurrent_requests_together_and_refuses_when_full():
    async def scenario():
        slow = SlowPipeline()
        b = Batcher(slow, max_batch=8, max_queue=4, max_wait_s=0.02)
        await b.start()
        img = np.zeros((4, 4, 3), np.uint8)
        first = await asyncio.gather(*(b.submit([img], False) for _ in range(4)))
        assert slow.sizes == [4]  # four requests, one pipeline call
        assert [r[0][0] for r in first] == [f"p1-{i}" for i in range(4)]
        both = await b.submit([img, img], True)
        assert both == [["p2-0", "p2-0"], ["p2-1", "p2-1"]]
        # four requests fill the queue before the worker takes any: the fifth is refused, the four are answered
        tasks = [asyncio.create_task(b.submit([img], False)) for _ in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="4 requests are waiting"):
            await b.submit([img], False)
        assert len(await asyncio.gather(*tasks)) == 4
        # more than max_batch images at once: the rest wait for the next call, none is lost
        many = await asyncio.gather(*(b.submit([img] * 3, False) for _ in range(4)))
        assert [len(r) for r in many] == [3, 3, 3, 3] and max(slow.sizes[-2:]) <= 9
        await b.stop()

    asyncio.run(scenario())


def test_a_failing_pipeline_fails_its_requests_not_the_service():
    class Broken(SlowPipeline):
        def predict(self, images):
            raise RuntimeError("boom")

    async def scenario():
        b = Batcher(Broken(), max_wait_s=0.0)
        await b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit([np.zeros((4, 4, 3), np.uint8)], False)
        with pytest.raises(RuntimeError, match="boom"):  # still answering
            await b.submit([np.zeros((4, 4, 3), np.uint8)], False)
        await b.stop()

    asyncio.run(scenario())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipe):
    """The app served by uvicorn on a loopback port, in a thread, for the load test and the browser."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(pipe, max_queue=64), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_load_400_requests_from_8_clients_none_failed_or_lost(server):
    import httpx

    photo = jpeg(np.asarray(Image.fromarray(two_faces()).resize((320, 180))))
    n, clients = 400, 8

    def worker(k: int) -> list[tuple[int, int]]:
        out = []
        with httpx.Client(base_url=server, timeout=60) as c:
            for i in range(k, n, clients):
                r = c.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
                out.append((i, r.status_code, len(r.json()["images"]) if r.status_code == 200 else 0))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(worker, range(clients)) for x in part]
    assert sorted(i for i, _, _ in results) == list(range(n))  # none lost
    assert all(code == 200 and images == 1 for _, code, images in results)


@pytest.mark.slow
def test_page_in_headless_chromium_draws_boxes_and_labels(server, pipe, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import shutil

    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chrome and driver_path, "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
    photo = tmp_path / "two.jpg"
    photo.write_bytes(jpeg(two_faces()))
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(server + "/")
        driver.find_element(By.ID, "files").send_keys(str(photo))
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#faces li.face")) == 2)
        items = driver.find_elements(By.CSS_SELECTOR, "#faces li.face")
        expected = pipe.predict_all_faces([np.asarray(Image.open(photo).convert("RGB"))])[0]
        assert [(li.get_attribute("data-mask"), li.get_attribute("data-gender"), li.get_attribute("data-age"))
                for li in items] == [(p.mask, p.gender, p.age) for p in expected]
        for li, p in zip(items, expected):
            box = [float(v) for v in li.get_attribute("data-box").split(",")]
            assert box == pytest.approx([round(float(v), 1) for v in p.face_box])
        counts = {k: int(driver.find_element(By.ID, f"count-{k}").text) for k in ("wear", "incorrect", "not_wear")}
        assert sum(counts.values()) == 2 and counts[expected[0].mask] >= 1
        # the boxes were drawn: the canvas has the photo's size and pixels of a box colour on the first face's edge
        size = driver.execute_script("const c = document.getElementById('view'); return [c.width, c.height];")
        assert size == [900, 512]
        x1, y1 = (int(v) for v in expected[0].face_box[:2])
        px = driver.execute_script(
            f"return Array.from(document.getElementById('view').getContext('2d').getImageData({x1}, {y1 + 20}, 1, 1).data);")
        colours = {"wear": [42, 138, 42], "incorrect": [217, 130, 0], "not_wear": [198, 40, 40]}
        assert px[:3] == colours[expected[0].mask]
    finally:
        driver.quit()


def test_serve_cli_binds_loopback_by_default_and_passes_settings(monkeypatch, pipe):
    import uvicorn

    from maskage.apps import serve as serve_module
    from maskage.apps.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr(serve_module, "create_app", lambda **kw: seen.update(create=kw) or "APP")
    assert main(["serve", "--port", "8123", "--max-queue", "5"]) == 0
    assert (seen["host"], seen["port"], seen["app"]) == ("127.0.0.1", 8123, "APP")
    assert seen["create"]["max_queue"] == 5 and seen["create"]["pipeline_dir"] is None
    assert main(["serve", "--host", "0.0.0.0", "--pipeline", "p"]) == 0
    assert seen["host"] == "0.0.0.0" and seen["create"]["pipeline_dir"] == "p"


def test_health_names_the_shipped_pipeline_when_none_is_given():
    from fastapi.testclient import TestClient

    with TestClient(create_app(backend="torch")) as c:
        assert c.get("/health").json()["pipeline"] == "shipped"


def test_tta_query_parameter_applies_to_that_request_only(client, pipe, scene):
    photo = np.asarray(Image.open(io.BytesIO(scene)).convert("RGB"))
    plain = pipe.predict([photo])[0]
    pipe.tta = {"gender": ["hflip"]}
    try:
        flipped = pipe.predict([photo])[0]
    finally:
        pipe.tta = {}
    assert flipped.gender_probs != pytest.approx(plain.gender_probs, abs=1e-9)  # the setting changes the answer
    got = client.post("/predict?tta=gender=hflip", content=scene, headers={"content-type": "image/jpeg"}).json()
    assert got["images"][0]["faces"][0]["gender_probs"] == pytest.approx(flipped.gender_probs)
    assert pipe.tta == {}  # the pipeline's own setting is back
    again = client.post("/predict", content=scene, headers={"content-type": "image/jpeg"}).json()
    assert again["images"][0]["faces"][0]["gender_probs"] == pytest.approx(plain.gender_probs)
    r = client.post("/predict?tta=gender=rotate", content=scene, headers={"content-type": "image/jpeg"})
    assert r.status_code == 400 and "unknown transform 'rotate'" in r.json()["detail"]
