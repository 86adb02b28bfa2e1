from pathlib import Path

import pytest

from lumen.config import ConfigError, DataLayout, LabelSource, config_from_argv, load_config, save_config
from lumen.errors import run_cli

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_files_and_overrides_merge_in_order(tmp_path):
    first = write(tmp_path, "a.yaml", "seed: 1\ndata:\n  resolution: 256\n  root: /a\n")
    second = write(tmp_path, "b.yaml", "data:\n  root: /b\n")
    cfg = load_config([first, second], ["data.resolution=384", "data.labels=stuff_json"])
    assert cfg.seed == 1
    assert cfg.data.root == "/b"
    assert cfg.data.resolution == 384
    assert cfg.data.labels is LabelSource.stuff_json
    assert cfg.data.max_bad_fraction == 0.01  # untouched default


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path):
    bad = write(tmp_path, "bad.yaml", "train:\n  empty_prompt_probabilty: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    text = str(err.value)
    assert "train.empty_prompt_probabilty" in text
    assert str(bad) in text
    assert "did you mean train.empty_prompt_probability" in text.lower()


def test_unknown_override_names_key_and_suggests_section():
    with pytest.raises(ConfigError) as err:
        load_config([], ["dta.root=/x"])
    assert "'dta'" in str(err.value) and "command-line override" in str(err.value)
    assert "did you mean data" in str(err.value).lower()


def test_unknown_key_without_near_miss_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config([], ["data.zzz=1"])
    assert "did you mean" not in str(err.value).lower()
    assert "data.resolution" in str(err.value)


@pytest.mark.parametrize("override, key", [("data.resolution=big", "data.resolution"),
                                           ("data.layout=sideways", "data.layout"),
                                           ("seed=1.5", "seed")])
def test_wrong_type_or_choice_is_refused(override, key):
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert f"'{key}'" in str(err.value)


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        load_config([], ["data.root"])


def test_missing_file_and_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="mapping"):
        load_config([write(tmp_path, "list.yaml", "- 1\n- 2\n")])


def test_interpolation_is_resolved(tmp_path):
    cfg = load_config([REPO / "configs" / "tiny.yaml"], [f"output_dir={tmp_path}/run"])
    assert cfg.data.root == f"{tmp_path}/run/data"
    assert cfg.layout.pca_dir == f"{tmp_path}/run/pca"


def test_saved_config_reloads_to_the_same_values(tmp_path):
    cfg = load_config([REPO / "configs" / "tiny.yaml"], ["seed=7", "data.layout=cocostuff"])
    path = save_config(cfg, tmp_path)
    assert path == tmp_path / "config.yaml"
    again = load_config([path])
    assert again == cfg
    assert again.data.layout is DataLayout.cocostuff


@pytest.mark.parametrize("name", ["tiny.yaml", "lumen_sd15_coco_stuff.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config([REPO / "configs" / name])
    assert cfg.data.resolution in (128, 512)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs" / "backbones").glob("*.yaml")))
def test_backbone_configs_stack_on_the_real_run(name):
    configs = REPO / "configs"
    cfg = load_config([configs / "lumen_sd15_coco_stuff.yaml", configs / "backbones" / f"{name}.yaml"])
    assert cfg.data.resolution == 512 and cfg.model.dtype.value == "bfloat16"
    if name == "compare":
        assert cfg.compare.backbones == ["sd", "dinov2", "dino", "clip", "sd+dinov2"]
    else:
        assert cfg.layout.backbone == name.replace("_", "+") and cfg.layout.backbone_model
        assert cfg.output_dir == f"outputs/lumen_{name}_coco_stuff"


def test_real_run_config_is_sd15_at_512_in_bf16():
    cfg = load_config([REPO / "configs" / "lumen_sd15_coco_stuff.yaml"])
    assert cfg.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert cfg.model.dtype.value == "bfloat16"
    assert cfg.data.resolution == 512


def test_entry_point_parser_exits_with_message(capsys):
    def main(argv):
        config_from_argv(argv, "x.py", "test")
        return 0

    assert run_cli(main, "x.py", [str(REPO / "configs" / "tiny.yaml"), "data.lerning=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("x.py: config error: unknown config key 'data.lerning'"), err


def test_yaml_booleans_given_to_a_choice_mean_the_choice_of_that_name(tmp_path):
    """YAML reads a bare `no` as false: `train.mixed_precision=no` (the documented value) must still work, from
    the command line and from a file, while a boolean given to a choice without such a name stays an error."""
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  mixed_precision: no\n")
    assert load_config([config]).train.mixed_precision.value == "no"
    assert load_config([], ["train.mixed_precision=bf16", "train.mixed_precision=no"]).train.mixed_precision.value \
        == "no"
    with pytest.raises(ConfigError, match="train.attention"):
        load_config([], ["train.attention=no"])


def test_a_choice_given_a_boolean_word_it_does_not_have_names_the_word_typed(tmp_path):
    for override, word, choices in (("train.attention=no", "'no'", "sdpa, xformers"),
                                    ("train.report_to=off", "'off'", "tensorboard, wandb, none")):
        with pytest.raises(ConfigError) as error:
            load_config([], [override])
        assert str(error.value) == (f"bad value for config key '{override.split('=')[0]}' (from command-line override "
                                    f"'{override}'): {word}; expected one of {choices}")
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  attention: Off\n")
    with pytest.raises(ConfigError, match=f"'train.attention' \\(from {config}\\): 'Off'; expected one of sdpa"):
        load_config([config])


def test_a_single_value_for_a_list_and_a_list_for_a_single_value_say_what_is_expected():
    with pytest.raises(ConfigError) as error:
        load_config([], ["layout.layers=5"])
    assert str(error.value) == ("bad value for config key 'layout.layers' (from command-line override "
                                "'layout.layers=5'): 5; expected a list, e.g. layout.layers=[5]")
    assert load_config([], ["layout.layers=[5]"]).layout.layers == [5]
    with pytest.raises(ConfigError, match="'train.batch_size' .*: \\[2, 4\\]; expected a single value"):
        load_config([], ["train.batch_size=[2, 4]"])
    with pytest.raises(ConfigError, match="'train' .*: 3; expected a section of keys"):
        load_config([], ["train=3"])


def test_string_keys_take_the_value_as_typed_where_yaml_reads_it_otherwise(tmp_path):
    """The README's brace range for tar shards, a split named like a YAML boolean, a number-like name."""
    cfg = load_config([], ["data.shards={root}/{split}/{000000..000099}.tar", "data.val_split=no",
                           "data.train_split=2017"])
    assert cfg.data.shards == "{root}/{split}/{000000..000099}.tar"
    assert (cfg.data.val_split, cfg.data.train_split) == ("no", "2017")
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  shards: '{root}/{split}/{000000..000099}.tar'\n  val_split: off\n")
    assert (load_config([config]).data.shards, load_config([config]).data.val_split) == (
        "{root}/{split}/{000000..000099}.tar", "off")
    with pytest.raises(ConfigError, match="cannot parse override 'train.batch_size={2'"):
        load_config([], ["train.batch_size={2"])


def test_a_misspelled_key_inside_a_mapping_valued_key_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError) as error:
        load_config([], ["compare.backbone_models.dinov22=facebook/dinov2-small"])
    message = str(error.value)
    assert message.startswith("unknown config key 'compare.backbone_models.dinov22' (from command-line override "
                              "'compare.backbone_models.dinov22=facebook/dinov2-small'): 'dinov22' is not one of sd, "
                              "dinov2, "), message
    assert "Did you mean compare.backbone_models.dinov2?" in message
    assert "valid keys here: compare.backbone_models.sd, compare.backbone_models.dinov2," in message
    assert load_config([], ["compare.backbone_models.dinov2=x"]).compare.backbone_models == {"dinov2": "x"}


def test_a_correspondence_point_must_have_two_numbers():
    with pytest.raises(ConfigError) as error:
        load_config([], ["corr.points=[[10,20],[30,40,50]]"])
    assert str(error.value) == ("bad value for config key 'corr.points' (from command-line override "
                                "'corr.points=[[10,20],[30,40,50]]'): point 2 is [30.0, 40.0, 50.0]; expected points "
                                "of two numbers, [[x, y], ...] in source pixels")
