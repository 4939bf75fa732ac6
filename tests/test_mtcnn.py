"""maskage.detect.mtcnn: MTCNN on ONNX Runtime and numpy, held against facenet-pytorch (its networks and its detect)."""
import numpy as np
import pytest
import torch
from PIL import Image

from maskage.detect import mtcnn
from maskage.detect.faces import DetectorSettings, FaceDetector, box_iou


def test_shipped_networks_equal_facenet_pytorchs(tmp_path):
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    nets = mtcnn.MtcnnNets()
    rng = np.random.default_rng(0)
    for name, cls, shape in (("pnet", PNet, (2, 3, 37, 51)), ("rnet", RNet, (5, 3, 24, 24)), ("onet", ONet, (3, 3, 48, 48))):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.inference_mode():
            ref = [t.numpy() for t in cls(pretrained=True).eval()(torch.from_numpy(x))]
        ours = nets.run(name, x)
        assert len(ours) == len(ref) == len(mtcnn.OUTPUTS[name])
        for a, b in zip(ours, ref):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)
    # a fresh export (how the shipped files were made) gives the same networks
    again = mtcnn.MtcnnNets(mtcnn.export_nets(tmp_path))
    x = rng.uniform(-1, 1, (1, 3, 30, 30)).astype(np.float32)
    for a, b in zip(again.run("pnet", x), nets.run("pnet", x)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("by_smaller", [False, True])
def test_batched_nms_matches_the_reference_implementations(by_smaller):
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    groups = rng.integers(0, 3, 300)
    ours = mtcnn.batched_nms(boxes, scores, groups, 0.5, by_smaller=by_smaller)
    tb, ts, tg = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups)
    ref = batched_nms_numpy(tb, ts, tg, 0.5, "Min") if by_smaller else batched_nms(tb, ts, tg, 0.5)
    assert 0 < len(ours) < 300
    assert sorted(ours.tolist()) == sorted(ref.tolist())
    assert len(mtcnn.batched_nms(boxes[:0], scores[:0], groups[:0], 0.5)) == 0


def test_detect_agrees_with_facenet_pytorch_on_a_real_face():
    from maskage.apps.demo import sample_photo
    from maskage.images import load_image

    img = load_image(sample_photo())  # one face of about 110 px
    photos = [img, img[:, ::-1].copy(), np.asarray(Image.fromarray(img).rotate(8)), np.full_like(img, 128)]
    settings = DetectorSettings()
    ours = FaceDetector(settings).detect_all(photos)
    ref = mtcnn.facenet_mtcnn(settings.min_face_size, settings.thresholds, settings.factor)
    boxes, probs, points = ref.detect(np.stack(photos), landmarks=True)  # facenet-pytorch's own
    assert ours[3] == [] and boxes[3] is None  # the grey photo: no face by either
    for mine, b, p, pts in zip(ours[:3], boxes, probs, points):
        assert len(mine) == len(b) >= 1
        face = mine[0]
        assert box_iou(face.box, tuple(b[0])) > 0.9
        assert np.abs(np.asarray(face.landmarks) - pts[0]).max() < 0.05 * (face.box[2] - face.box[0])
        assert face.prob == pytest.approx(p[0], abs=0.02)
    # the mirrored photo's face is the mirror of the first
    w = img.shape[1]
    assert ours[1][0].box[0] == pytest.approx(w - ours[0][0].box[2], abs=6)


def test_photos_smaller_than_the_smallest_face_give_no_faces():
    nets = mtcnn.MtcnnNets()
    out = mtcnn.detect(nets, np.zeros((2, 30, 30, 3), np.uint8), 40, (0.6, 0.7, 0.7), 0.709)
    assert len(out) == 2 and all(b.shape == (0, 5) and p.shape == (0, 5, 2) for b, p in out)
