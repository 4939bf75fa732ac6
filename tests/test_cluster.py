"""maskage on Ray: the batch job on Ray Data and the service on Ray Serve, on a local cluster of 2 CPUs on 127.0.0.1.

Slow (Ray's start-up, a few seconds each): `make test-slow`, which CI runs.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from maskage import Pipeline
from maskage.apps.cluster import list_photos, pool_size, predict_on_ray, read_rows
from maskage.errors import UsageError

from .conftest import tiny_model


pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a Ray job that hangs fails the test, not CI


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    Pipeline(tiny_model("mask", 31), tiny_model("gender", 32), tiny_model("age", 33)).save(d / "p")
    return d / "p"


@pytest.fixture(scope="module")
def photos(toy_root, tmp_path_factory):
    """Distinct photo files (the toy eval photos copied under several names) and one that is not an image."""
    d = tmp_path_factory.mktemp("photos")
    src = sorted((toy_root / "eval" / "images").glob("*.jpg"))
    out = []
    for k in range(4):
        for p in src:
            out.append(d / f"{k}_{p.name}")
            shutil.copy(p, out[-1])
    bad = d / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    return [str(p) for p in out], str(bad)


def _by_path(table) -> dict[str, dict]:
    rows = table.to_pylist()
    return {r["path"]: r for r in rows}


def test_rows_equal_the_single_process_rows_and_a_bad_photo_is_an_error_row(cluster, pipe_dir, photos, tmp_path):
    good, bad = photos
    report = predict_on_ray(good[:12] + [bad], tmp_path / "rows.parquet", pipe_dir, batch_size=4)
    table = read_rows(tmp_path / "rows.parquet")
    assert report.rows == table.num_rows == 13 and report.photos == 13
    rows = _by_path(table)
    assert len(rows) == 13  # exactly one row per input
    for p in Pipeline.from_pretrained(pipe_dir).predict(good[:12]):
        r = rows[p.source]
        assert r["class"] == p.class_id and r["error"] is None
        assert (r["mask"], r["gender"], r["age"]) == (p.mask, p.gender, p.age)
        for prefix, probs in (("p_mask_", p.mask_probs), ("p_gender_", p.gender_probs), ("p_age_", p.age_probs)):
            for label, v in probs.items():
                assert r[prefix + label] == pytest.approx(v, abs=1e-5)
    assert rows[bad]["class"] is None and "broken.jpg" in rows[bad]["error"]
    with pytest.raises(UsageError, match="exists"):
        predict_on_ray(good[:2], tmp_path / "rows.parquet", pipe_dir)


def test_every_face_as_csv_and_list_files(cluster, pipe_dir, photos, tmp_path):
    good, _ = photos
    listing = tmp_path / "photos.txt"
    listing.write_text("# the first five\n" + "\n".join(good[:5]) + "\n")
    assert list_photos([str(listing)]) == good[:5]
    predict_on_ray([str(listing)], tmp_path / "faces.csv", pipe_dir, all_faces=True, batch_size=2)
    table = read_rows(tmp_path / "faces.csv")
    want = Pipeline.from_pretrained(pipe_dir).predict_all_faces(good[:5])
    assert table.num_rows == sum(len(f) for f in want)
    got = {(r["path"], r["face_index"]): r for r in table.to_pylist()}
    for path, faces in zip(good[:5], want):
        for k, p in enumerate(faces):
            assert got[(path, k)]["class"] == p.class_id


def _actor_pids(name: str) -> list[int]:
    """Processes whose command line names ``name`` (Ray titles an actor's process after its class)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                alive = (d / "stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
                if alive and name in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_an_actor_killed_mid_job_loses_no_row_and_doubles_none(cluster, pipe_dir, photos, tmp_path):
    good, _ = photos
    inputs = good * 1  # 36 distinct files
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(
        report=predict_on_ray(inputs, tmp_path / "rows.parquet", pipe_dir, batch_size=1, actors=1)))
    job.start()
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and job.is_alive():
        if _actor_pids("PhotoPredictor"):
            time.sleep(0.5)  # let it load the pipeline and take batches
            for pid in _actor_pids("PhotoPredictor") if job.is_alive() else []:
                try:  # a process seen a moment ago may be gone already (a worker Ray replaced): try the next
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed = pid
                break
        time.sleep(0.05)
    assert killed is not None, "the job ended before an actor could be killed"
    job.join(240)
    assert not job.is_alive() and "report" in result
    rows = read_rows(tmp_path / "rows.parquet").to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(inputs)  # every photo once: none lost, none twice
    assert all(r["error"] is None for r in rows)


def test_pool_size_leaves_a_cpu_for_the_read_and_write_tasks():
    assert pool_size(2, 1.0) == 1 and pool_size(16, 1.0) == 15 and pool_size(16, 2.0) == 7 and pool_size(1, 1.0) == 1
    assert pool_size(2, 1.0, actors=2) == 2
    with pytest.raises(UsageError):
        pool_size(2, 1.0, actors=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_ray_answers_as_maskage_serve(cluster, pipe_dir, photos):
    import httpx
    from fastapi.testclient import TestClient
    from ray import serve

    from maskage.apps.cluster import serve_on_ray
    from maskage.apps.serve import create_app

    good, _ = photos
    jpeg = io.BytesIO()
    Image.open(good[0]).convert("RGB").save(jpeg, "JPEG")
    body = jpeg.getvalue()
    port = _free_port()
    serve_on_ray("127.0.0.1", port, replicas=1, pipeline_dir=pipe_dir, backend="auto", block=False,
                 cpus_per_replica=0.5)
    try:
        url = f"http://127.0.0.1:{port}"
        with TestClient(create_app(pipeline_dir=pipe_dir)) as local:
            for files in ({"files": ("a.jpg", body, "image/jpeg")}, {"files": ("bad.jpg", b"nope", "image/jpeg")}):
                want = local.post("/predict", files=files)
                got = httpx.post(f"{url}/predict", files=files, timeout=60)
                assert got.status_code == want.status_code
                if want.status_code == 200:
                    a, b = got.json()["images"][0]["faces"], want.json()["images"][0]["faces"]
                    assert [f["class_id"] for f in a] == [f["class_id"] for f in b]
                    for fa, fb in zip(a, b):
                        assert fa["box"] == fb["box"]
                        assert np.allclose(list(fa["mask_probs"].values()), list(fb["mask_probs"].values()), atol=1e-5)
                else:
                    assert got.json()["detail"] == want.json()["detail"]
            assert httpx.get(f"{url}/health", timeout=30).json()["version"] == local.get("/health").json()["version"]
    finally:
        serve.shutdown()


def test_uris_are_read_by_the_actors_and_a_missing_one_is_an_error_row(cluster, pipe_dir, photos, tmp_path):
    good, _ = photos
    uris = [f"file://{p}" for p in good[:3]] + [f"file://{tmp_path / 'gone.jpg'}"]
    predict_on_ray(uris, tmp_path / "rows.parquet", pipe_dir, batch_size=2)
    rows = _by_path(read_rows(tmp_path / "rows.parquet"))
    assert sorted(rows) == sorted(uris)
    for uri, p in zip(uris, Pipeline.from_pretrained(pipe_dir).predict(good[:3])):
        assert rows[uri]["class"] == p.class_id and rows[uri]["p_mask_wear"] == pytest.approx(p.mask_probs["wear"], abs=1e-5)
    gone = rows[uris[3]]
    assert gone["class"] is None and gone["p_mask_wear"] is None and "gone.jpg" in gone["error"]
