"""``maskage serve``: the pipeline behind an HTTP API and a web page, for a camera at an entrance.

FastAPI on Starlette, served by uvicorn: typed endpoints, an OpenAPI description (``/openapi.json``, ``/docs``)
and an in-process test client come with it, and uvicorn is the usual ASGI server. The pipeline is loaded once;
requests that arrive together are run as one pipeline call (``Batcher``), one call at a time, so the models
never run twice at once and share the CPU's cores; the queue is bounded and answers 503 when full.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .. import __version__
from ..images import MAX_PIXELS, ImageError, ImageTooLargeError, decode_image_bytes
from ..models.transforms import check_tta, parse_tta
from ..pipeline.outputs import face_record

PAGE = Path(__file__).resolve().parent / "serve_page.html"
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # one request, all its images
MAX_IMAGES = 16  # images in one request
SERVE_MAX_PIXELS = 40_000_000  # a camera frame or phone photo is far below; decoding one this size takes ~120 MB


class QueueFull(RuntimeError):
    """The service has as many requests waiting as it accepts."""


@dataclass
class _Job:
    images: list[np.ndarray]
    all_faces: bool
    future: asyncio.Future
    tta: tuple | None = None  # this request's test-time augmentation as sorted (task, transforms); None: the pipeline's


class Batcher:
    """Collects the images of requests that arrive within ``max_wait_s`` of each other (up to ``max_batch``
    images; more wait for the next call) and runs them as one pipeline call in a worker thread, one call at a time.
    At most ``max_queue`` requests wait."""

    def __init__(self, pipeline: Any, max_batch: int = 16, max_queue: int = 32, max_wait_s: float = 0.005) -> None:
        self.pipeline, self.max_batch, self.max_wait_s = pipeline, max_batch, max_wait_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self.calls = 0  # pipeline calls made (tests read how requests were batched)

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, images: list[np.ndarray], all_faces: bool,
                     tta: dict[str, tuple[str, ...]] | None = None) -> list[list[Any]]:
        """Every face of each image (a list per image; the largest face only unless ``all_faces``), with the
        pipeline's test-time augmentation or ``tta`` for this request."""
        if self._queue is None:  # a host that runs no lifespan events (Ray Serve's replicas): start on first use
            await self.start()
        key = None if tta is None else tuple(sorted((k, tuple(v)) for k, v in tta.items()))
        job = _Job(images, all_faces, asyncio.get_running_loop().create_future(), tta=key)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are waiting; try again shortly") from None
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            n = len(jobs[0].images)
            if self._queue.empty() and self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)  # a moment for requests sent together to arrive
            # get_nowait, not wait_for(get()): before Python 3.12 a timed-out wait_for can drop an item it got
            while n < self.max_batch and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                n += len(job.images)
            for setting in dict.fromkeys((j.all_faces, j.tta) for j in jobs):  # one call per setting, in order
                group = [j for j in jobs if (j.all_faces, j.tta) == setting and not j.future.cancelled()]
                if group:
                    await self._predict(group, *setting, loop)

    async def _predict(self, jobs: list[_Job], all_faces: bool, tta: tuple | None,
                       loop: asyncio.AbstractEventLoop) -> None:
        images = [img for j in jobs for img in j.images]
        saved = getattr(self.pipeline, "tta", None)
        try:
            if tta is not None:  # calls run one at a time, so the setting holds for this call only
                self.pipeline.tta = dict(tta)
            if all_faces:
                out = await loop.run_in_executor(None, self.pipeline.predict_all_faces, images)
            else:
                out = [[p] for p in await loop.run_in_executor(None, self.pipeline.predict, images)]
            self.calls += 1
        except Exception as exc:  # a bug: every waiting request learns of it, and the service goes on
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        finally:
            if tta is not None:
                self.pipeline.tta = saved
        start = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(out[start : start + len(j.images)])
            start += len(j.images)


def create_app(  # long: the routes are closures over the app's settings
               pipeline: Any = None, pipeline_dir: str | Path | None = None, backend: str = "auto",
               max_batch: int = 16, max_queue: int = 32, max_request_bytes: int = MAX_REQUEST_BYTES,
               max_images: int = MAX_IMAGES, max_pixels: int = SERVE_MAX_PIXELS, max_wait_ms: float = 5.0):
    """The ASGI app: ``POST /predict``, ``GET /health``, ``GET /`` (the page) and the OpenAPI description.
    ``pipeline``: a loaded ``Pipeline`` (or ensemble); else the one in ``pipeline_dir`` (default: the shipped one)."""
    # long because FastAPI routes are closures over the app's pipeline, batcher and limits: they stay together
    source = "given" if pipeline is not None else str(pipeline_dir) if pipeline_dir else "shipped"
    if pipeline is None:
        from ..pipeline.core import Pipeline

        pipeline = Pipeline.from_pretrained(pipeline_dir, backend=backend)
    batcher = Batcher(pipeline, max_batch=max_batch, max_queue=max_queue, max_wait_s=max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="maskage", version=__version__, lifespan=lifespan,
                  description="Mask state, gender and age group of every face in a photo.")
    app.state.batcher = batcher

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the pipeline is loaded, what runs it, and the maskage version."""
        return {"status": "ok", "pipeline_loaded": True, "pipeline": source,
                "backend": getattr(pipeline, "backend", "ensemble"), "version": __version__}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    async def read_uploads(request: Request) -> list[tuple[str, bytes]]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_request_bytes:
            raise HTTPException(413, f"request is {int(length):,} bytes; the limit is {max_request_bytes:,}")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=max_images + 1, max_part_size=max_request_bytes)
            uploads = [(getattr(v, "filename", None) or k, await v.read()) for k, v in form.multi_items()
                       if hasattr(v, "read")]
            if not uploads:
                raise HTTPException(400, "the multipart form holds no file; send images as file fields")
            return uploads
        if ctype.startswith("image/") or ctype == "application/octet-stream":
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_request_bytes:
                    raise HTTPException(413, f"request is over the limit of {max_request_bytes:,} bytes")
            return [("body", bytes(body))]
        raise HTTPException(415, f"content type {ctype or 'none'!r}: send multipart/form-data with image files, "
                                 "or an image's bytes with an image/* content type")

    @app.post("/predict")
    async def predict(request: Request, all_faces: bool = Query(False, description="every face, largest first; "
                                                                              "else the largest face only"),
                      tta: str | None = Query(None, description="test-time augmentation for this request, e.g. "
                                                                "gender=hflip,age=hflip; 'none' = off; default: "
                                                                "the pipeline's")):
        """Every face (box, mask, gender, age, their probabilities, class id) of each uploaded image, in order."""
        try:
            tta_setting = None if tta is None else check_tta(parse_tta([] if tta == "none" else tta.split(",")))
        except ValueError as exc:
            raise HTTPException(400, f"tta={tta!r}: {exc}") from None
        uploads = await read_uploads(request)
        if len(uploads) > max_images:
            raise HTTPException(413, f"{len(uploads)} images in one request; the limit is {max_images}")
        images, problems, status = [], [], 400
        for name, data in uploads:
            try:
                images.append(decode_image_bytes(data, name, max_pixels))
            except ImageTooLargeError as exc:
                problems.append(str(exc))
                status = 413
            except ImageError as exc:
                problems.append(str(exc))
        if problems:
            raise HTTPException(status, "; ".join(problems))
        try:
            results = await request.app.state.batcher.submit(images, all_faces, tta_setting)
        except QueueFull as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        return {"images": [{"index": i, "name": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                            "faces": [face_record(p) for p in faces]}
                           for i, ((name, _), img, faces) in enumerate(zip(uploads, images, results))]}

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, pipeline_dir: str | Path | None = None,
          backend: str = "auto", **kwargs: Any) -> None:
    """Run the service with uvicorn until interrupted (loopback only unless ``host`` says otherwise)."""
    import uvicorn

    uvicorn.run(create_app(pipeline_dir=pipeline_dir, backend=backend, **kwargs), host=host, port=port,
                log_level="info")


__all__ = ["create_app", "serve", "Batcher", "QueueFull", "MAX_PIXELS"]
