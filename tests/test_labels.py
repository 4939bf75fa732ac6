import pytest

from maskage.labels import (
    AgeBins,
    Mask,
    age_group_labels,
    age_to_group,
    decode,
    encode,
    gender_from_text,
    mask_from_filename,
)


def test_encode_decode_round_trip_all_18():
    seen = set()
    for m in range(3):
        for g in range(2):
            for a in range(3):
                c = encode(m, g, a)
                assert c == m * 6 + g * 3 + a
                assert decode(c) == (m, g, a)
                seen.add(c)
    assert seen == set(range(18))


@pytest.mark.parametrize("args", [(3, 0, 0), (0, 2, 0), (0, 0, 3), (-1, 0, 0)])
def test_encode_rejects_out_of_range(args):
    with pytest.raises(ValueError):
        encode(*args)


@pytest.mark.parametrize("c", [-1, 18, 100])
def test_decode_rejects_out_of_range(c):
    with pytest.raises(ValueError):
        decode(c)


def test_default_bins_labels_and_groups_at_60():
    bins = AgeBins()
    assert len(bins) == 11
    assert bins.labels == ("18", "19", "20", "21-24", "25-29", "30-48", "49-52", "53-55", "56-57", "58-59", "60+")
    assert bins.groups == (0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2)


def test_bins_groups_follow_threshold_58():
    assert AgeBins(threshold=58).groups == (0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2)
    assert age_group_labels(58) == ("<30", "30-57", "58+")


@pytest.mark.parametrize(
    "age,idx",
    [(15, 0), (18, 0), (19, 1), (20, 2), (21, 3), (24, 3), (25, 4), (29, 4), (30, 5), (48, 5), (49, 6),
     (52, 6), (53, 7), (55, 7), (56, 8), (57, 8), (58, 9), (59, 9), (60, 10), (95, 10)],
)
def test_bin_of_edges(age, idx):
    assert AgeBins().bin_of(age) == idx


@pytest.mark.parametrize("threshold", [60, 58])
def test_bin_group_equals_age_group_for_every_age(threshold):
    bins = AgeBins(threshold=threshold)
    for age in range(10, 101):
        assert bins.groups[bins.bin_of(age)] == age_to_group(age, threshold), age


def test_age_to_group_thresholds():
    assert [age_to_group(a) for a in (29, 30, 57, 58, 59, 60)] == [0, 1, 1, 1, 1, 2]
    assert [age_to_group(a, 58) for a in (29, 30, 57, 58, 59, 60)] == [0, 1, 1, 2, 2, 2]


def test_threshold_must_be_an_edge():
    with pytest.raises(ValueError, match="age_threshold=55"):
        AgeBins(threshold=55)
    custom = AgeBins(edges=(18, 30, 40, 55, 70), threshold=55)
    assert custom.groups == (0, 1, 1, 2, 2)


def test_mask_from_filename_and_gender_text():
    assert mask_from_filename("mask3.jpeg") == Mask.WEAR
    assert mask_from_filename("incorrect_mask.png") == Mask.INCORRECT
    assert mask_from_filename("normal.jpg") == Mask.NOT_WEAR
    with pytest.raises(ValueError):
        mask_from_filename("selfie.jpg")
    assert gender_from_text("Female") == 1 and gender_from_text("male") == 0 and gender_from_text(1) == 1
    with pytest.raises(ValueError):
        gender_from_text("other")


def test_class_grid_and_cell_are_the_encoding():
    import numpy as np

    from maskage.labels import CLASS_SHAPE, cell, class_grid

    probs = np.arange(2 * 18, dtype=float).reshape(2, 18)
    grid = class_grid(probs)
    assert grid.shape == (2, *CLASS_SHAPE)
    for m in range(3):
        for g in range(2):
            for a in range(3):
                assert grid[1, m, g, a] == probs[1, encode(m, g, a)]
                assert encode(m, g, a) % 6 == cell(g, a) and cell(g, a) // 3 == g
    assert class_grid(probs[0]).shape == CLASS_SHAPE
