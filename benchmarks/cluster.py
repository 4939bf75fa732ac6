"""maskage on Ray, on this machine: the batch job's photos/s with 1 and 2 actors beside the single process, Ray's
start-up cost, and Ray Serve under load beside `maskage serve`.

    .venv/bin/python benchmarks/cluster.py [--pipeline DIR] [--photos 192] [--actors 1 2] [--no-serve]
        [--clients 8] [--requests 200]

The photos are the bundled portrait at 384x512 with masks drawn on (as `benchmarks/speed.py`), written as JPEG files.
The single process is `Pipeline.predict` on them. A Ray job's rate once started is its marginal rate: N photos
over the difference between a job of 2N photos and one of N (each job pays the actors' start, loading the pipeline,
and Ray Data's planning once), after a small job that warms Ray's worker processes. Ray's own start-up (`ray.init` of a local cluster) is timed apart. k actors take 1/k
CPU each of a 2-CPU cluster, so that one CPU stays for the read and write tasks. Serve: `--requests` requests from
`--clients` concurrent clients on loopback against Ray Serve (1 replica) and `maskage serve` (one process).
Targets: 2 actors >= 0.8x the single process's photos/s once started; 0 failed requests on both services.
Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_line  # noqa: E402
from serve import photos  # noqa: E402


def job_rate(files: list[str], out: Path, pipeline: str | None, actors: int) -> tuple[float, float]:
    """(photos/s once started, the job's fixed cost in s) from a job of N photos and one of 2N."""
    from maskage.apps.cluster import predict_on_ray

    # a first job warms Ray's worker processes (their start and imports would otherwise fall on the first timed job)
    predict_on_ray(files[:16], out / f"a{actors}_warm.parquet", pipeline, batch_size=16, actors=actors,
                   cpus_per_actor=1.0 / actors)
    times = []
    for k, part in enumerate((files[: len(files) // 2], files)):
        t = time.perf_counter()
        predict_on_ray(part, out / f"a{actors}_{k}.parquet", pipeline, batch_size=16, actors=actors,
                       cpus_per_actor=1.0 / actors)
        times.append(time.perf_counter() - t)
    n = len(files) - len(files) // 2
    if times[1] <= times[0]:  # noise larger than the extra photos' time: too few photos to tell
        raise SystemExit(f"{actors} actor(s): the job of {len(files)} photos took no longer than the one of half as "
                         f"many ({times[1]:.1f} s, {times[0]:.1f} s); use more --photos")
    rate = n / (times[1] - times[0])
    print(f"  {actors} actor(s): {len(files) // 2} photos in {times[0]:.1f} s, {len(files)} in {times[1]:.1f} s "
          f"({len(files) / times[1]:.1f} photos/s overall)", flush=True)
    return rate, times[0] - (len(files) // 2) / rate


def load(url: str, data: list[bytes], clients: int, requests: int) -> tuple[float, int]:
    """(requests/s, failed) for ``requests`` POSTs of the photos from ``clients`` threads."""
    import httpx

    failed = 0

    def client(k: int) -> None:
        nonlocal failed
        with httpx.Client(timeout=120) as c:
            for i in range(k, requests, clients):
                r = c.post(url, content=data[i % len(data)], headers={"content-type": "image/jpeg"})
                failed += r.status_code != 200

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return requests / (time.perf_counter() - start), failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_loads(pipeline: str | None, data: list[bytes], clients: int, requests: int) -> None:
    import uvicorn
    from ray import serve

    from maskage.apps.cluster import serve_on_ray
    from maskage.apps.serve import create_app

    port = free_port()
    serve_on_ray("127.0.0.1", port, replicas=1, pipeline_dir=pipeline, block=False, cpus_per_replica=1.0)
    try:
        rate, failed = load(f"http://127.0.0.1:{port}/predict", data, clients, requests)
        print(f"Ray Serve, 1 replica, {clients} clients: {rate:.1f} requests/s, failed {failed} of {requests}")
    finally:
        serve.shutdown()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipeline_dir=pipeline), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rate, failed = load(f"http://127.0.0.1:{port}/predict", data, clients, requests)
    server.should_exit = True
    thread.join(10)
    print(f"maskage serve (one process), {clients} clients: {rate:.1f} requests/s, failed {failed} of {requests}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline")
    ap.add_argument("--photos", type=int, default=192)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-serve", action="store_true")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    import ray

    from maskage.pipeline.core import Pipeline

    print(cpu_line())
    data = photos(32)
    tmp = Path(tempfile.mkdtemp())
    files = []
    for i in range(args.photos):
        (tmp / f"{i}.jpg").write_bytes(data[i % len(data)])
        files.append(str(tmp / f"{i}.jpg"))
    pipe = Pipeline.from_pretrained(args.pipeline)
    pipe.predict(files[:8])
    t = time.perf_counter()
    pipe.predict(files, batch_size=16)
    single = len(files) / (time.perf_counter() - t)
    print(f"single process, Pipeline.predict: {single:.1f} photos/s")
    del pipe
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"Ray start-up (a local cluster of 2 CPUs): {time.perf_counter() - t:.1f} s")
    try:
        for k in args.actors:
            rate, fixed = job_rate(files, tmp, args.pipeline, k)
            print(f"Ray Data, {k} actor(s): {rate:.1f} photos/s once started ({rate / single:.2f}x the single "
                  f"process), {fixed:.1f} s a job to start its actors and plan", flush=True)
        if not args.no_serve:
            serve_loads(args.pipeline, data, args.clients, args.requests)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
