"""maskage on a Ray cluster: batch prediction on Ray Data (a pool of actors, each loading the pipeline once) and
the HTTP service on Ray Serve (the same app as ``maskage serve``, N replicas). Needs ``pip install 'maskage[ray]'``.

``predict_on_ray`` is what ``maskage predict ... --ray [ADDRESS] --out rows.parquet`` runs; ``serve_on_ray`` what
``maskage serve --ray [--replicas N]`` runs. docs/cluster.md says how to run them on a real cluster.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..images import IMAGE_EXTENSIONS, ImageError, decode_image_bytes
from ..labels import GENDER_LABELS, MASK_LABELS, age_group_labels

RAY_EXTRA = "pip install 'maskage[ray]'"
LIST_SUFFIXES = (".txt", ".lst")  # a list file: one photo path or URI a line
PROB_COLUMNS = (("p_mask_", "mask_probs"), ("p_gender_", "gender_probs"), ("p_age_", "age_probs"))  # as to_row's


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray: {RAY_EXTRA}") from None
    return ray


def _is_uri(path: str) -> bool:
    return "://" in path


def list_photos(inputs: Sequence[str]) -> list[str]:
    """The photos to predict: files as given, folders expanded (local, or a URI such as ``s3://bucket/dir`` that
    pyarrow's filesystems list), and list files (``.txt``/``.lst``: one path or URI a line, ``#`` comments)."""
    from ..pipeline.outputs import expand_inputs

    out: list[str] = []
    for item in inputs:
        if _is_uri(item):
            out.extend(_list_uri(item))
        elif Path(item).suffix.lower() in LIST_SUFFIXES and Path(item).is_file():
            lines = [ln.strip() for ln in Path(item).read_text().splitlines()]
            out.extend(ln for ln in lines if ln and not ln.startswith("#"))
        else:
            out.extend(expand_inputs([item]))
    return out


def _list_uri(uri: str) -> list[str]:
    """A URI's image files (recursively, sorted), or the URI itself when it names a file."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(root)
    if info.type != fs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    return sorted(f"{scheme}://{f.path}" for f in found
                  if f.type == fs.FileType.File and Path(f.path).suffix.lower() in IMAGE_EXTENSIONS)


def row_schema(age_threshold: int, all_faces: bool) -> Any:
    """The columns of ``maskage predict``'s rows, typed: a class id and probabilities where the photo was read,
    empty (null) with the ``error`` where it was not."""
    import pyarrow as pa

    fields = [("path", pa.string())] + ([("face_index", pa.int64())] if all_faces else [])
    fields += [("class", pa.int64()), ("mask", pa.string()), ("gender", pa.string()), ("age", pa.string()),
               ("face_box", pa.string()), ("face_prob", pa.float64())]
    for (prefix, _), labels in zip(PROB_COLUMNS, (MASK_LABELS, GENDER_LABELS, age_group_labels(age_threshold))):
        fields += [(prefix + label, pa.float64()) for label in labels]
    return pa.schema(fields + [("error", pa.string())])


def prediction_rows(paths: Sequence[str], per_path: Sequence, schema: Any) -> Any:
    """A pyarrow table of ``schema``'s columns: a row per photo (per face where ``per_path`` holds lists)."""
    import pyarrow as pa

    cols: dict[str, list] = {name: [] for name in schema.names}
    probs = [(name, attr, name[len(prefix):]) for prefix, attr in PROB_COLUMNS for name in schema.names
             if name.startswith(prefix)]
    for path, got in zip(paths, per_path):
        faces = got if isinstance(got, list) else [got]
        for k, p in enumerate(faces):
            cols["path"].append(path)
            if "face_index" in cols:
                cols["face_index"].append(k)
            cols["class"].append(p.class_id)
            for name in ("mask", "gender", "age", "error"):
                cols[name].append(getattr(p, name))
            cols["face_box"].append(None if p.face_box is None else " ".join(f"{v:.1f}" for v in p.face_box))
            cols["face_prob"].append(p.face_prob)
            for name, attr, label in probs:  # an unread photo's probabilities are empty: null
                cols[name].append(getattr(p, attr).get(label))
    return pa.table(cols, schema=schema)


class PhotoPredictor:
    """A Ray Data actor: loads the pipeline once, then predicts batches of photo paths into rows. A photo that
    cannot be read is a row with its error, never a failed task."""

    def __init__(self, pipeline_dir: str | None = None, backend: str = "auto", all_faces: bool = False,
                 threads: int = 1) -> None:
        from ..pipeline.core import Pipeline

        # the actor's share of the node's cores: several actors on one node must not each take every core
        os.environ["MASKAGE_THREADS"] = str(threads)
        self.pipe = Pipeline.from_pretrained(pipeline_dir, backend=backend)
        self.all_faces = all_faces
        self.schema = row_schema(self.pipe.age_threshold, all_faces)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        from ..pipeline.core import Prediction

        paths = [str(p) for p in batch["path"]]
        inputs: list[Any] = [_read_remote(p) if _is_uri(p) else p for p in paths]
        predict = self.pipe.predict_all_faces if self.all_faces else self.pipe.predict
        got = iter(predict([x for x in inputs if not isinstance(x, ImageError)]))  # local files: the pipeline's errors

        def failed(path: str, exc: ImageError) -> Any:
            return [Prediction(path, error=str(exc))] if self.all_faces else Prediction(path, error=str(exc))

        per_path = [failed(path, x) if isinstance(x, ImageError) else next(got) for path, x in zip(paths, inputs)]
        return prediction_rows(paths, per_path, self.schema)


def _read_remote(uri: str) -> np.ndarray | ImageError:
    """A photo at a URI, decoded, or the ImageError that says why it could not be."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_file(path) as f:
            data = f.read()
        return decode_image_bytes(data, uri)
    except ImageError as exc:
        return exc
    except (OSError, ValueError) as exc:
        return ImageError(f"{uri}: cannot read ({exc})")


@dataclass
class RayJobReport:
    """What a Ray prediction job did: photos in, rows out, where, with how many actors, and its seconds
    (``started_s``: Ray's start-up when the job started a local cluster; ``run_s``: the job itself)."""

    photos: int
    rows: int
    out: Path
    actors: int
    started_s: float
    run_s: float

    def __str__(self) -> str:
        return (f"{self.photos} photo(s) -> {self.rows} row(s) in {self.out} with {self.actors} actor(s) in "
                f"{self.run_s:.1f} s" + (f" (Ray start-up {self.started_s:.1f} s)" if self.started_s else ""))


def pool_size(cluster_cpus: float, cpus_per_actor: float, actors: int | None = None) -> int:
    """Actors in the pool: ``actors`` when given, else as many as the cluster's CPUs hold with one CPU left for
    the read and write tasks (a pool that takes every CPU leaves them none and the job hangs)."""
    if actors is not None:
        if actors < 1:
            raise UsageError(f"actors must be >= 1, got {actors}")
        return actors
    return max(1, int((cluster_cpus - 1) // cpus_per_actor))


def predict_on_ray(inputs: Sequence[str], out: str | Path, pipeline_dir: str | Path | None = None,
                   address: str | None = None, all_faces: bool = False, batch_size: int = 16,
                   actors: int | None = None, cpus_per_actor: float = 1.0, backend: str = "auto",
                   num_cpus: int | None = None) -> RayJobReport:
    """Predict photos on Ray Data into ``out``: Parquet (``.parquet``) or CSV (``.csv``), a folder of parts with
    ``maskage predict``'s columns, exactly one row per photo (per face with ``all_faces``). ``address``: a running
    cluster (``auto``, ``ray://host:10001``); None starts a local one for the job (``num_cpus``: its CPUs, default
    the machine's) and stops it after. Actors are restarted and their batches retried when a node or an actor dies."""
    ray = _ray()
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".parquet", ".csv"):
        raise UsageError(f"--out {out}: a Ray job writes .parquet or .csv (a folder of parts)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists: give a new folder (its rows would be added to the old ones)")
    if batch_size < 1 or cpus_per_actor <= 0:
        raise UsageError(f"batch size must be >= 1 and CPUs per actor > 0, got {batch_size} and {cpus_per_actor}")
    paths = list_photos(inputs)
    if not paths:
        raise UsageError("no images found in the given paths")
    started_here, t0 = not ray.is_initialized(), time.time()
    if started_here:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    started_s, t1 = (time.time() - t0) if started_here else 0.0, time.time()
    try:
        n_actors = pool_size(ray.cluster_resources().get("CPU", 1), cpus_per_actor, actors)
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths) // batch_size,
                                                                                            n_actors * 8)))
        rows = ds.map_batches(
            PhotoPredictor, fn_constructor_kwargs={"pipeline_dir": None if pipeline_dir is None else str(pipeline_dir),
                                                  "backend": backend, "all_faces": all_faces,
                                                  "threads": max(1, int(cpus_per_actor))},
            batch_size=batch_size, batch_format="numpy", concurrency=n_actors, num_cpus=cpus_per_actor,
            max_restarts=-1, max_task_retries=-1)
        (rows.write_parquet if kind == ".parquet" else rows.write_csv)(str(out.resolve()))
        n_rows = _count_rows(out, kind)
    finally:
        if started_here:
            ray.shutdown()
    return RayJobReport(len(paths), n_rows, out, n_actors, started_s, time.time() - t1)


def _count_rows(out: Path, kind: str) -> int:
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(p).metadata.num_rows for p in out.rglob("*.parquet"))
    return sum(max(0, sum(1 for _ in p.open()) - 1) for p in out.rglob("*.csv"))


def read_rows(out: str | Path) -> Any:
    """A Ray job's rows (its folder of Parquet or CSV parts) as one pyarrow table, in no particular order."""
    out = Path(out)
    if out.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(out)
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pa.concat_tables([pcsv.read_csv(p) for p in sorted(out.rglob("*.csv"))], promote_options="default")


def serve_on_ray(host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, pipeline_dir: str | Path | None = None,
                 backend: str = "auto", address: str | None = None, cpus_per_replica: float = 1.0,
                 block: bool = True, **app_settings: Any) -> Any:
    """The service (``create_app``: the same routes, limits, page and request batching) as a Ray Serve deployment
    of ``replicas`` replicas behind Serve's HTTP proxy on ``host:port``. ``block``: wait until interrupted, then
    shut Serve down; else return the deployment's handle (tests, notebooks)."""
    ray = _ray()
    from ray import serve

    from .serve import create_app

    if replicas < 1:
        raise UsageError(f"replicas must be >= 1, got {replicas}")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    # the builder runs on each replica: every replica loads its own pipeline and runs its own request batcher
    settings = dict(app_settings, pipeline_dir=None if pipeline_dir is None else str(pipeline_dir), backend=backend)

    def builder() -> Any:  # a plain function: Serve calls it to build the app (a partial would pass for an ASGI app)
        return create_app(**settings)

    deployment = serve.deployment(serve.ingress(builder)(), name="maskage", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": cpus_per_replica})
    handle = serve.run(deployment.bind(), name="maskage", route_prefix="/")
    if not block:
        return handle
    print(f"maskage on Ray Serve: http://{host}:{port} ({replicas} replica(s)); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return None
