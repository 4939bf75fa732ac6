import numpy as np
import pytest

from maskage.combine import age_group_probs, combine, combine_probs, decode_many, encode_many
from maskage.labels import AgeBins, encode


def _rand_dist(rng, n, k):
    x = rng.random((n, k))
    return x / x.sum(1, keepdims=True)


def test_combine_probs_is_the_product_in_encoding_order():
    rng = np.random.default_rng(0)
    m, g, a = _rand_dist(rng, 5, 3), _rand_dist(rng, 5, 2), _rand_dist(rng, 5, 3)
    joint = combine_probs(m, g, a)
    assert joint.shape == (5, 18)
    np.testing.assert_allclose(joint.sum(1), 1.0)
    for i in range(5):
        for mi in range(3):
            for gi in range(2):
                for ai in range(3):
                    assert joint[i, encode(mi, gi, ai)] == pytest.approx(m[i, mi] * g[i, gi] * a[i, ai])


def test_combine_argmax_is_the_triple_of_argmaxes():
    rng = np.random.default_rng(1)
    m, g, a = _rand_dist(rng, 50, 3), _rand_dist(rng, 50, 2), _rand_dist(rng, 50, 3)
    ids, _ = combine(m, g, a)
    expected = encode_many(m.argmax(1), g.argmax(1), a.argmax(1))
    np.testing.assert_array_equal(ids, expected)


def test_combine_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        combine_probs(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)))


def test_age_group_probs_sums_bins_per_group():
    bins = AgeBins()
    p = np.zeros((2, 11))
    p[0, [0, 4]] = 0.25
    p[0, 9] = 0.5  # 58-59 is group 1 at threshold 60
    p[1, 10] = 1.0
    out = age_group_probs(p, bins.groups)
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    out58 = age_group_probs(p, AgeBins(threshold=58).groups)
    np.testing.assert_allclose(out58[0], [0.5, 0.0, 0.5])


def test_encode_decode_many_round_trip():
    ids = np.arange(18)
    triples = decode_many(ids)
    np.testing.assert_array_equal(encode_many(*triples.T), ids)


def test_apply_bias_moves_the_boundary_and_keeps_distributions():
    from maskage.combine import apply_bias

    p = np.array([[0.55, 0.45], [0.9, 0.1]])
    out = apply_bias(p, [0.0, 0.5])
    assert out.sum(1) == pytest.approx([1, 1])
    assert out[0].argmax() == 1 and out[1].argmax() == 0  # 0.45 * e^0.5 > 0.55; 0.1 * e^0.5 < 0.9
    assert out[0, 1] / out[0, 0] == pytest.approx(0.45 / 0.55 * np.exp(0.5))
    assert np.array_equal(apply_bias(p, None), p) and np.array_equal(apply_bias(p, [0, 0]), p)
    with pytest.raises(ValueError, match="2 finite numbers"):
        apply_bias(p, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="2 finite numbers"):
        apply_bias(p, [0.0, float("nan")])
