"""Source adapters (UTKFace, All-Age-Faces, LFW), the person hash split and per-cell balancing."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maskage.labels import UNKNOWN_AGE
from maskage.training.sources import (SourceError, balanced_people, cell, held_out, parse_source_arg, read_aaf, read_lfw,
                             read_sources, read_utkface)

from .conftest import SHARED_DATA


def touch(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def test_age_gender_race_names_and_unlabelled(tmp_path):
    touch(tmp_path / "utk" / "25_1_2_20170116.jpg")
    touch(tmp_path / "utk" / "61_0_0_20170117.jpg")
    touch(tmp_path / "utk" / "notes.jpg")
    (tmp_path / "utk" / "readme.txt").write_text("not an image")
    records, bad = read_utkface(tmp_path / "utk")
    assert [(r.age, r.gender, r.race, r.source) for r in records] == [(25, 1, 2, "utkface"), (61, 0, 0, "utkface")]
    assert records[0].person == "utkface:25_1_2_20170116" and bad == ["notes.jpg"]
    touch(tmp_path / "aaf" / "33_1_2_aaf00012.jpg")
    (aaf,), _ = read_aaf(tmp_path / "aaf")
    assert (aaf.age, aaf.gender, aaf.person, aaf.source) == (33, 1, "aaf:33_1_2_aaf00012", "aaf")


def test_lfw_gender_from_folder_and_person_from_name(tmp_path):
    touch(tmp_path / "lfw" / "male" / "John_Smith_0001.jpg")
    touch(tmp_path / "lfw" / "female" / "Ann_Lee_0001.jpg")
    touch(tmp_path / "lfw" / "female" / "Ann_Lee_0002.jpg")
    touch(tmp_path / "lfw" / "female" / "oddname.jpg")
    records, bad = read_lfw(tmp_path / "lfw")
    assert [(r.gender, r.person, r.age) for r in records] == [
        (0, "lfw:John_Smith", UNKNOWN_AGE), (1, "lfw:Ann_Lee", UNKNOWN_AGE), (1, "lfw:Ann_Lee", UNKNOWN_AGE)]
    assert bad == ["female/oddname.jpg"]


def test_read_sources_checks_names_folders_and_doubles(tmp_path):
    touch(tmp_path / "u" / "25_1_2_x.jpg")
    records, _ = read_sources([f"utkface={tmp_path / 'u'}"])
    assert len(records) == 1
    with pytest.raises(SourceError, match="unknown source 'imdb'"):
        read_sources([f"imdb={tmp_path}"])
    with pytest.raises(SourceError, match="NAME=DIR"):
        parse_source_arg(str(tmp_path))
    with pytest.raises(SourceError, match="given twice"):
        read_sources([f"utkface={tmp_path / 'u'}", f"utkface={tmp_path / 'u'}"])
    with pytest.raises(SourceError, match="not found"):
        read_sources([f"aaf={tmp_path / 'missing'}"])
    touch(tmp_path / "empty" / "x.jpg")
    with pytest.raises(SourceError, match="no photo follows the aaf naming scheme"):
        read_sources([f"aaf={tmp_path / 'empty'}"])


def test_held_out_is_a_fixed_share_by_person():
    people = [f"aaf:{i}" for i in range(4000)]
    share = np.mean([held_out(p, 0.2) for p in people])
    assert 0.18 < share < 0.22
    assert [held_out(p, 0.2) for p in people[:50]] == [held_out(p, 0.2) for p in people[:50]]
    assert held_out("lfw:Ann_Lee", 0.3) == held_out("lfw:Ann_Lee", 0.3)
    assert not any(held_out(p, 0.0) for p in people)


def test_balanced_people_takes_the_same_number_from_every_cell():
    rng = np.random.default_rng(0)
    people = [(f"p{i}", int(rng.integers(0, 2)), int(rng.choice([22, 45, 70], p=[0.6, 0.35, 0.05])))
              for i in range(600)]
    chosen = set(balanced_people(people, seed=1))
    counts = np.bincount([cell(g, a) for p, g, a in people if p in chosen], minlength=6)
    smallest = np.bincount([cell(g, a) for _, g, a in people], minlength=6).min()
    assert (counts == smallest).all()
    assert balanced_people(people, seed=1) == balanced_people(people, seed=1)
    assert balanced_people(people, seed=1) != balanced_people(people, seed=2)
    capped = balanced_people(people, seed=1, per_cell=3)
    assert len(capped) == 18
    # no ages: balanced over gender alone
    lfw = [(f"q{i}", int(i < 30), UNKNOWN_AGE) for i in range(100)]
    got = balanced_people(lfw)
    assert len(got) == 60 and sum(p in {f"q{i}" for i in range(30)} for p in got) == 30


@pytest.mark.data
@pytest.mark.parametrize("name, n", [("utkface", 8122), ("aaf", 9671), ("lfw", 4429)])
def test_real_sources_are_fully_labelled(name, n):
    records, bad = read_sources([f"{name}={SHARED_DATA / name}"])
    assert len(records) == n and bad == []
    assert {r.gender for r in records} == {0, 1}
    if name == "lfw":
        assert len({r.person for r in records}) < n  # several photos of some people
    else:
        assert min(r.age for r in records) >= 1
