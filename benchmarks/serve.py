"""`maskage serve` under load: throughput and latency with concurrent clients on loopback, beside
`Pipeline.predict` on the same photos in process.

    .venv/bin/python benchmarks/serve.py [--pipeline DIR] [--clients 8] [--requests 400] [--photos N]

The photos are the bundled astronaut portrait at 384x512 (the competition's size) with masks drawn on, as
`benchmarks/speed.py` uses. Target: with 8 clients, throughput >= 80% of `Pipeline.predict`'s photos/s,
zero failed requests. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photos(n: int) -> list[bytes]:
    from PIL import Image

    from maskage.apps.demo import masked_variants, sample_photo

    with tempfile.TemporaryDirectory() as tmp:
        variants = list(masked_variants(sample_photo(), tmp).values())
        out = []
        for i in range(n):
            im = Image.open(variants[i % len(variants)]).convert("RGB").resize((384, 512))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="the service's batching wait")
    args = ap.parse_args()
    import httpx
    import uvicorn

    from maskage.pipeline.core import Pipeline
    from maskage.apps.serve import create_app

    pipe = Pipeline.from_pretrained(args.pipeline)
    data = photos(args.photos)
    # the baseline reads the same JPEG files, as a caller of Pipeline.predict would: decoding is part of the job
    tmp = Path(tempfile.mkdtemp())
    files = []
    for i, d in enumerate(data):
        (tmp / f"{i}.jpg").write_bytes(d)
        files.append(str(tmp / f"{i}.jpg"))
    pipe.predict(files[:4])  # warm up
    start = time.perf_counter()
    for _ in range(max(1, args.requests // len(files))):
        pipe.predict(files, batch_size=16)
    api_rate = max(1, args.requests // len(files)) * len(files) / (time.perf_counter() - start)
    print(f"Pipeline.predict on the JPEG files, batches of 16: {api_rate:.1f} photos/s")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(pipe, max_wait_ms=args.max_wait_ms)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/predict"
    latencies: list[float] = []
    failed = 0

    def client(k: int) -> None:
        nonlocal failed
        with httpx.Client(timeout=120) as c:
            for i in range(k, args.requests, args.clients):
                t = time.perf_counter()
                r = c.post(url, content=data[i % len(data)], headers={"content-type": "image/jpeg"})
                latencies.append(time.perf_counter() - t)
                failed += r.status_code != 200

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    wall = time.perf_counter() - start
    server.should_exit = True
    thread.join(10)
    rate = args.requests / wall
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"serve, {args.clients} clients, {args.requests} requests: {rate:.1f} photos/s "
          f"({rate / api_rate:.0%} of Pipeline.predict), latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"failed {failed}, pipeline calls {app.state.batcher.calls}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
