import numpy as np
import pytest
from sklearn.metrics import f1_score

from maskage.metrics import format_report, score


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
