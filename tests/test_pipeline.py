import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from maskage import Pipeline, Prediction
from maskage.detect.faces import box_iou
from maskage.errors import UsageError
from maskage.labels import encode
from maskage.models.torch_model import ModelFileError

from .conftest import tiny_model


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3))


@pytest.fixture(scope="module")
def photos(toy_root):
    return sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:9]


def test_predict_returns_one_prediction_per_input_in_order(pipe, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    inputs = photos[:4] + [str(bad)] + photos[4:]
    preds = pipe.predict(inputs, batch_size=3)
    assert len(preds) == len(inputs) and all(isinstance(p, Prediction) for p in preds)
    assert [p.source for p in preds] == inputs
    assert preds[4].error and "broken.jpg" in preds[4].error and preds[4].class_id is None
    for p in preds[:4] + preds[5:]:
        assert p.error is None
        assert sum(p.mask_probs.values()) == pytest.approx(1, abs=1e-5)
        assert sum(p.age_probs.values()) == pytest.approx(1, abs=1e-5)
        m = max(range(3), key=lambda k: list(p.mask_probs.values())[k])
        g = max(range(2), key=lambda k: list(p.gender_probs.values())[k])
        a = max(range(3), key=lambda k: list(p.age_probs.values())[k])
        assert p.class_id == encode(m, g, a)


def test_progress_is_off_by_default_and_changes_no_prediction(pipe, photos, capsys):
    quiet = pipe.predict(photos[:5], batch_size=2)
    assert capsys.readouterr().err == ""
    shown = pipe.predict(photos[:5], batch_size=2, progress=True)
    assert " 5/5 " in capsys.readouterr().err
    assert [p.class_id for p in shown] == [p.class_id for p in quiet]
    assert [p.mask_probs for p in shown] == [p.mask_probs for p in quiet]


def test_a_batch_size_under_one_is_refused_not_an_empty_answer(pipe, photos):
    for call in (pipe.predict, pipe.predict_all_faces):
        with pytest.raises(UsageError, match="batch size"):
            call(photos[:2], batch_size=-1)


def test_single_input_gives_a_list_and_arrays_work(pipe, photos):
    one = pipe.predict(photos[0])
    assert isinstance(one, list) and len(one) == 1
    arr = np.asarray(Image.open(photos[0]).convert("RGB"))
    from_array = pipe.predict([arr, Image.open(photos[0])])
    assert from_array[0].class_id == one[0].class_id
    assert from_array[0].mask_probs == pytest.approx(one[0].mask_probs)
    assert from_array[1].source == "<JpegImageFile>"
    from_generator = pipe.predict(p for p in photos[:2])
    assert [p.source for p in from_generator] == photos[:2]


def _class_of(p) -> int:
    """The class a prediction's own probabilities give: each task's most likely label."""
    top = [int(np.argmax(list(d.values()))) for d in (p.mask_probs, p.gender_probs, p.age_probs)]
    return encode(*top)


def test_no_face_gives_none_box(pipe):
    blank = np.full((120, 90, 3), 128, dtype=np.uint8)
    (p,) = pipe.predict([blank])
    assert p.face_box is None and p.error is None and p.class_id == _class_of(p)


def test_save_from_pretrained_identical_outputs(pipe, photos, tmp_path):
    pipe.save(tmp_path / "pipe")
    loaded = Pipeline.from_pretrained(tmp_path / "pipe", backend="torch")
    a, b = pipe.predict(photos), loaded.predict(photos)
    for x, y in zip(a, b):
        assert x.class_id == y.class_id
        assert x.mask_probs == y.mask_probs and x.gender_probs == y.gender_probs and x.age_probs == y.age_probs


def test_changed_pipeline_files_are_detected(pipe, tmp_path):
    d = pipe.save(tmp_path / "pipe")
    meta = json.loads((d / "gender" / "model.json").read_text())
    meta["input_size"] = 48
    (d / "gender" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="gender.*model.json.*changed"):
        Pipeline.from_pretrained(d)


def test_models_must_fit_their_slots():
    with pytest.raises(ModelFileError, match="gender slot got a mask model"):
        Pipeline(tiny_model("mask"), tiny_model("mask"), tiny_model("age"))
    with pytest.raises(ModelFileError, match="no pipeline.json"):
        Pipeline.from_pretrained("/nonexistent")


def test_age_labels_follow_threshold(photos):
    p = Pipeline(tiny_model("mask"), tiny_model("gender"), tiny_model("age", threshold=58))
    (pred,) = p.predict(photos[:1])
    assert list(pred.age_probs) == ["<30", "30-57", "58+"] and pred.age in pred.age_probs


def two_faces() -> np.ndarray:
    """The bundled astronaut photo with a smaller copy beside it: two faces of different sizes."""
    from maskage.apps.demo import sample_photo
    from maskage.images import load_image

    big = load_image(sample_photo())
    small = np.asarray(Image.fromarray(big).resize((300, 300)))
    canvas = np.full((512, 900, 3), 255, np.uint8)
    canvas[:, :512] = big
    canvas[100:400, 560:860] = small
    return canvas


def test_several_faces_largest_by_default_all_on_request(pipe):
    img = two_faces()
    (largest,) = pipe.predict(img)
    assert largest.face_box is not None and largest.face_box[2] < 512  # the full-size face, on the left
    (faces,) = pipe.predict_all_faces([img])
    assert len(faces) == 2
    sizes = [(f.face_box[2] - f.face_box[0]) * (f.face_box[3] - f.face_box[1]) for f in faces]
    assert sizes[0] > sizes[1] and faces[1].face_box[0] > 512  # largest first, then the copy on the right
    # every face is found by the scene detector (YuNet): the same face, its box within a few pixels of MTCNN's
    assert box_iou(faces[0].face_box, largest.face_box) > 0.8
    mtcnn = Pipeline(*pipe.models.values(), detector=replace(pipe.detector_settings, scene="off"))  # all faces too
    (faces,) = mtcnn.predict_all_faces([img])
    assert len(faces) == 2 and faces[0].face_box == largest.face_box and faces[0].class_id == largest.class_id


def test_all_faces_keeps_inputs_apart_and_reports_errors(pipe, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    blank = np.full((120, 90, 3), 128, dtype=np.uint8)
    out = pipe.predict_all_faces([two_faces(), str(bad), blank], batch_size=2)
    assert [len(x) for x in out] == [2, 1, 1]
    assert out[1][0].error and "bad.jpg" in out[1][0].error and out[1][0].class_id is None
    assert out[2][0].face_box is None and out[2][0].class_id is not None  # no face: one centre-crop prediction


def test_bad_inputs_in_one_batch_each_get_their_outcome(pipe, tmp_path):
    from .test_images import READABLE, REFUSED, write_case

    cases = sorted(READABLE) + sorted(REFUSED)
    paths = [str(write_case(tmp_path, c)) for c in cases]
    preds = pipe.predict(paths, batch_size=4)
    assert [p.source for p in preds] == paths
    for case, p in zip(cases, preds):
        if case in REFUSED:
            assert p.class_id is None and REFUSED[case] in p.error, case
        else:
            assert p.error is None and p.class_id == _class_of(p), case
            assert p.face_box is None  # none of these small generated pictures holds a face


def test_tta_hflip_averages_the_crop_and_its_mirror(photos, tmp_path):
    from maskage.detect.faces import crop_face
    from maskage.images import load_image

    plain = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3))
    tta = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3), tta={"gender": ["hflip"]})
    a, b = plain.predict(photos[:3]), tta.predict(photos[:3])
    gender = tta.models["gender"]
    for pa, pb, path in zip(a, b, photos):
        assert pa.mask_probs == pytest.approx(pb.mask_probs, abs=1e-6)  # only gender has TTA
        crop = crop_face(load_image(path), pb.face_box, gender.spec.crop_settings)[None]
        mirrored = np.ascontiguousarray(crop[:, :, ::-1])
        want = (gender.predict_proba(crop) + gender.predict_proba(mirrored)) / 2
        assert list(pb.gender_probs.values()) == pytest.approx(want[0].tolist(), abs=1e-6)
        assert list(pa.gender_probs.values()) != pytest.approx(want[0].tolist(), abs=1e-6)
    # saved with the pipeline, and checked
    loaded = Pipeline.from_pretrained(tta.save(tmp_path / "pipe"), backend="torch")
    assert loaded.tta == {"gender": ("hflip",)}
    assert [p.gender_probs for p in loaded.predict(photos[:3])] == [p.gender_probs for p in b]
    with pytest.raises(ValueError, match="unknown transform 'rot90'"):
        tta.tta = {"age": ["rot90"]}
    with pytest.raises(ValueError, match="unknown task 'hair'"):
        Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3), tta={"hair": ["hflip"]})


def test_cli_pipeline_tta(tmp_path, capsys):
    from maskage.apps.cli import main

    runs = []
    for task, seed in (("mask", 1), ("gender", 2), ("age", 3)):
        runs.append(str(tiny_model(task, seed).save(tmp_path / task)))
    assert main(["pipeline", *runs, "--out", str(tmp_path / "p"), "--tta", "gender=hflip", "--tta", "age=hflip"]) == 0
    assert json.loads((tmp_path / "p" / "pipeline.json").read_text())["tta"] == {"gender": ["hflip"], "age": ["hflip"]}
    assert main(["pipeline", *runs, "--out", str(tmp_path / "q"), "--tta", "gender"]) == 2
    assert "TASK=TRANSFORM" in capsys.readouterr().err


def test_age_threshold_is_chosen_at_prediction_time_saved_and_checked(pipe, photos, tmp_path):
    at60 = pipe.predict(photos)
    p58 = Pipeline(*pipe.models.values(), age_threshold=58)
    assert p58.age_threshold == 58 and pipe.age_threshold == 60
    at58 = p58.predict(photos)
    for a, b in zip(at60, at58):
        assert list(a.age_probs) == ["<30", "30-59", "60+"] and list(b.age_probs) == ["<30", "30-57", "58+"]
        assert a.age_probs["<30"] == pytest.approx(b.age_probs["<30"])  # only the 58-59 bin moves
        assert b.age_probs["58+"] >= a.age_probs["60+"] - 1e-9
        assert b.class_id == _class_of(b) and (a.mask, a.gender) == (b.mask, b.gender)
    # saved in pipeline.json, loaded back; 60 again resets to the model's own
    d = p58.save(tmp_path / "p58")
    assert json.loads((d / "pipeline.json").read_text())["age_threshold"] == 58
    loaded = Pipeline.from_pretrained(d, backend="torch")
    assert loaded.age_threshold == 58 and [p.age_probs for p in loaded.predict(photos)] == [p.age_probs for p in at58]
    assert "age_threshold" not in json.loads((pipe.save(tmp_path / "p60") / "pipeline.json").read_text())
    with pytest.raises(ValueError, match="edges"):
        p58.age_threshold = 57  # not an edge of the fine bins: a bin would straddle two groups
    p58.age_threshold = None
    assert p58.age_threshold == 60 and [p.age_probs for p in p58.predict(photos)] == [p.age_probs for p in at60]


def test_age_threshold_on_the_cli(pipe, photos, tmp_path):
    import csv

    from maskage.apps.cli import main

    d = pipe.save(tmp_path / "pipe")
    out = tmp_path / "p.csv"
    assert main(["predict", *photos[:3], "--pipeline", str(d), "--out", str(out), "--age-threshold", "58"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert all(r["age"] in ("<30", "30-57", "58+") for r in rows) and "p_age_58+" in rows[0]
    api = Pipeline(*pipe.models.values(), age_threshold=58).predict(photos[:3])
    assert [int(r["class"]) for r in rows] == [p.class_id for p in api]
    assert main(["predict", *photos[:3], "--pipeline", str(d), "--out", str(out), "--age-threshold", "57"]) == 2


def test_bias_offsets_the_decisions_and_is_saved_and_checked(photos, tmp_path):
    plain = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3))
    biased = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3),
                      bias={"gender": [0.0, -3.0], "age": [0.0, 0.0, 5.0]})
    a, b = plain.predict(photos[:4]), biased.predict(photos[:4])
    for pa, pb in zip(a, b):
        assert pb.mask_probs == pytest.approx(pa.mask_probs)
        g = np.array(list(pa.gender_probs.values())) * np.exp([0.0, -3.0])
        assert list(pb.gender_probs.values()) == pytest.approx((g / g.sum()).tolist())
        assert pb.gender == "male" and pb.age == "60+" and pb.class_id == _class_of(pb)
    loaded = Pipeline.from_pretrained(biased.save(tmp_path / "pipe"), backend="torch")
    assert loaded.bias == {"gender": (0.0, -3.0), "age": (0.0, 0.0, 5.0)}
    assert [p.class_id for p in loaded.predict(photos[:4])] == [p.class_id for p in b]
    assert "bias" not in json.loads((plain.save(tmp_path / "plain") / "pipeline.json").read_text())
    with pytest.raises(ValueError, match="gender needs 2 finite offsets"):
        biased.bias = {"gender": [0.0, 1.0, 2.0]}
    with pytest.raises(ValueError, match="unknown task 'hair'"):
        biased.bias = {"hair": [0.0, 1.0]}
    biased.bias = {"age": [0, 0, 0]}
    assert biased.bias == {}


def test_predict_boxes_classifies_the_given_faces(pipe, photos):
    detected = pipe.predict(photos[:3])
    boxes = [p.face_box for p in detected]
    given = pipe.predict_boxes(photos[:3], boxes)
    assert [p.face_box for p in given] == boxes  # the detector's own boxes: the same answer as predict
    for a, b in zip(detected, given):
        assert a.class_id == b.class_id and a.mask_probs == pytest.approx(b.mask_probs, abs=1e-6)
    centre = pipe.predict_boxes(photos[:1], [None])[0]
    assert centre.face_box is None and centre.class_id is not None
    with pytest.raises(UsageError, match="3 photos but 2 boxes"):
        pipe.predict_boxes(photos[:3], boxes[:2])
