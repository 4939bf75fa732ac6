import numpy as np
import pytest
from sklearn.metrics import f1_score

from maskage.metrics import bootstrap_f1, format_report, interval, score


def test_perfect_predictions_score_one():
    ids = list(range(18)) * 2
    s = score(ids, ids)
    assert s["macro_f1"] == 1.0 and s["mask_f1"] == 1.0 and s["gender_f1"] == 1.0 and s["age_f1"] == 1.0
    assert np.trace(np.array(s["confusion"])) == 36


def test_scores_match_sklearn_and_per_task_decoding():
    t = [0, 1, 6, 12, 17, 3]
    p = [0, 2, 6, 0, 17, 4]
    s = score(t, p)
    assert s["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    mask_t, mask_p = [x // 6 for x in t], [x // 6 for x in p]
    assert s["mask_f1"] == pytest.approx(f1_score(mask_t, mask_p, average="macro", zero_division=0))
    assert s["confusion"][12][0] == 1 and s["confusion"][1][2] == 1
    assert "18-class macro F1" in format_report(s)


def test_score_rejects_length_mismatch():
    with pytest.raises(ValueError):
        score([0, 1], [0])


def test_bootstrap_f1_centres_on_sklearn_and_pairs_its_resamples():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.8, truth, rng.integers(0, 3, 300))
    worse = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 3, 300))
    samples = bootstrap_f1(truth, [good, worse], rounds=500)
    assert samples.shape == (500, 2)
    plain = f1_score(truth, good, average="macro")
    assert abs(samples[:, 0].mean() - plain) < 0.01
    lo, hi = interval(samples[:, 0])
    assert lo < plain < hi and hi - lo < 0.15
    assert (samples[:, 0] > samples[:, 1]).all()  # paired: the better guess wins on every resample
    assert np.array_equal(bootstrap_f1(truth, [good], rounds=500)[:, 0], samples[:, 0])  # same seed, same draws
    # a class absent from a resample's truth and guesses is left out of its mean, as sklearn does
    one = bootstrap_f1([0, 0, 1], [[0, 0, 1]], rounds=50)
    assert (one == 1.0).all()
    # with labels given, every one counts (0 where absent), as sklearn's labels=
    truth2 = [0] * 20 + [1] * 20
    fixed = bootstrap_f1(truth2, [truth2], rounds=50, labels=[0, 1, 2])
    assert np.allclose(fixed, f1_score(truth2, truth2, labels=[0, 1, 2], average="macro", zero_division=0))


def test_score_intervals_are_optional_and_printed():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 18, 400)
    p = np.where(rng.random(400) < 0.7, t, rng.integers(0, 18, 400))
    plain, full = score(t, p), score(t, p, intervals=True)
    assert "macro_f1_ci" not in plain and "[" not in format_report(plain).splitlines()[1]
    for key in ("macro_f1", "mask_f1", "gender_f1", "age_f1"):
        lo, hi = full[key + "_ci"]
        assert lo <= full[key] <= hi and full[key] == plain[key]
    assert f"{full['macro_f1']:.4f} [{full['macro_f1_ci'][0]:.3f}-" in format_report(full)
