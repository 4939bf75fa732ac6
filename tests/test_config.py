import pytest

from maskage.training.config import TrainConfig, load_config, parse_overrides, save_config


def test_defaults():
    c = TrainConfig()
    assert c.task == "mask" and c.backbone == "tf_efficientnet_lite0" and c.pretrained is True
    assert c.age_threshold == 60 and len(c.age_bin_edges) == 11


def test_yaml_then_overrides_then_fixed(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text("lr: 0.01\nepochs: 3\nloss: 0.4*f1+0.6*focal\n")
    c = load_config(y, ["epochs=7", "pretrained=false", "age_bin_edges=18,30,45,60"], task="age")
    assert c.lr == 0.01  # from YAML
    assert c.epochs == 7  # override beats YAML
    assert c.pretrained is False
    assert c.loss == "0.4*f1+0.6*focal"
    assert c.age_bin_edges == [18, 30, 45, 60]
    assert c.task == "age"


def test_int_accepted_for_float_and_types_checked():
    assert load_config(None, ["lr=1"]).lr == 1.0
    with pytest.raises(ValueError, match="'epochs'"):
        load_config(None, ["epochs=2.5"])
    with pytest.raises(ValueError, match="'pretrained'"):
        load_config(None, ["pretrained=maybe"])


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        load_config(None, ["learning_rate=0.1"])
    y = tmp_path / "bad.yaml"
    y.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="unknown config key 'epoch'.*bad.yaml"):
        load_config(y)


def test_bad_values_and_forms():
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="optimizer"):
        load_config(None, ["optimizer=lion"])
    with pytest.raises(ValueError, match="fold"):
        load_config(None, ["fold=5", "n_folds=5"])
    with pytest.raises(FileNotFoundError):
        load_config("no/such.yaml")
    with pytest.raises(ValueError, match="clahe must be in"):
        load_config(None, ["clahe=1.5"])
    with pytest.raises(ValueError, match="cutmix_alpha must be >= 0"):
        load_config(None, ["cutmix_alpha=-1"])


def test_saved_config_reloads_equal(tmp_path):
    c = load_config(None, ["lr=0.05", "task=gender", "age_threshold=58", "freeze_stages=2"])
    save_config(c, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == c


def test_experiment_files_load():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))
    assert {y.parent.name for y in recipes} == {"experiments", "shipped", "competition", "studies"}
    for y in recipes:
        # every recipe uses only known keys and valid values for the task its name says (else age)
        load_config(y, task=next((t for t in ("mask", "gender", "age") if t in y.stem), "age"))


def test_crop_shift_is_checked():
    assert load_config(None, ["crop_shift=0.15"]).crop_shift == 0.15
    with pytest.raises(ValueError, match="crop_shift must be in"):
        load_config(None, ["crop_shift=0.7"])


def test_frame_keys_are_checked():
    c = load_config(None, ["frame=0.79", "frame_shift=0.12"])
    assert (c.frame, c.frame_shift) == (0.79, 0.12)
    with pytest.raises(ValueError, match="frame must be >= 0"):
        load_config(None, ["frame=-1"])
