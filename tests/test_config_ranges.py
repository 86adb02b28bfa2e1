"""Every numeric config key has a valid range, checked at load for every entry point, naming key, value,
source and what is valid."""

import importlib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

import pytest

from lumen.backbones import BACKBONES
from lumen.config import ConfigError, LumenConfig, Range, load_config, split_argv
from lumen.data.sources import DATA_SOURCES
from lumen_train.cli import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


def numeric_keys(cls=LumenConfig, prefix=""):
    """(dotted key, field) of every int / float / list-of-int field of the schema."""
    keys = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        inner = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) is Union else [hint]
        base = inner[0]
        if get_origin(base) is list:
            base = get_args(base)[0]
        if base in (int, float):
            keys.append((f"{prefix}{f.name}", f, get_origin(inner[0]) is list))
    return keys


NUMERIC = numeric_keys()


def bad_value(bounds: Range):
    """A value just outside the range."""
    if bounds.low is not None:
        return bounds.low if bounds.low_open else bounds.low - 1
    if bounds.high is not None:
        return bounds.high if bounds.high_open else bounds.high + 1
    raise AssertionError("a range without bounds")


def test_the_walk_finds_the_numeric_keys():
    names = {key for key, _, _ in NUMERIC}
    assert len(NUMERIC) >= 60
    assert {"train.max_train_steps", "data.resolution", "layout.layers", "sample.sweep_components"} <= names


@pytest.mark.parametrize("key, field, is_list", NUMERIC, ids=[k for k, _, _ in NUMERIC])
def test_every_numeric_key_has_a_range_and_refuses_a_value_outside_it(key, field, is_list):
    bounds = field.metadata.get("range")
    assert isinstance(bounds, Range), f"{key} has no Range in the schema"
    value = bad_value(bounds)
    text = f"[{value}]" if is_list else str(value)
    override = f"{key}={text}"
    with pytest.raises(ConfigError) as err:
        load_config([TINY], [override])
    message = str(err.value)
    assert f"'{key}'" in message and f"command-line override '{override}'" in message
    assert "expected" in message and str(value).rstrip("0").rstrip(".") in message


@pytest.mark.parametrize("override, expected", [
    ("train.max_train_steps=0", "an integer >= 1"),
    ("train.max_train_steps=-2", "an integer >= 1"),
    ("train.checkpoints_total_limit=0", "an integer >= 1"),
    ("train.checkpointing_steps=0", "an integer >= 1"),
    ("train.learning_rate=-1", "a number > 0"),
    ("train.batch_size=0", "an integer >= 1"),
    ("layout.batch_size=0", "an integer >= 1"),
    ("train.gradient_accumulation_steps=0", "an integer >= 1"),
    ("train.empty_prompt_probability=1.7", "a number in [0, 1]"),
    ("train.component_dropout=-3", "a number in [0, 1]"),
    ("data.max_bad_fraction=5", "a number in [0, 1]"),
    ("data.resolution=100", "a multiple of 8 >= 64"),
    ("layout.timestep=5000", "an integer in [0, 999]"),
    ("pca.n_components=0", "an integer >= 1"),
    ("pca.num_samples=0", "an integer >= 1"),
])
def test_the_reported_bad_values_are_refused_at_load(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config([TINY], [override])
    key = override.split("=")[0]
    assert str(err.value).startswith(f"bad value for config key '{key}'")
    assert expected in str(err.value)


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=f"'train.batch_size' \\(from {path}\\): 0; expected an integer >= 1"):
        load_config([TINY, path])


def test_more_components_than_samples_names_both_keys():
    with pytest.raises(ConfigError) as err:
        load_config([TINY], ["pca.num_samples=5"])
    assert "'pca.n_components' (from " in str(err.value) and "pca.num_samples=5" in str(err.value)


def test_layout_n_components_is_gone():
    with pytest.raises(ConfigError, match="unknown config key 'layout.n_components'"):
        load_config([TINY], ["layout.n_components=3"])


def test_an_argument_without_equals_that_is_no_file_is_named_as_a_forgotten_value():
    with pytest.raises(ConfigError) as err:
        split_argv([str(TINY), "train.max_train_steps"])
    assert "'train.max_train_steps' is neither a config file" in str(err.value)
    assert "did you mean train.max_train_steps=<value>" in str(err.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(*split_argv(["missing.yaml"]))


def test_valid_edges_are_accepted():
    cfg = load_config([TINY], ["train.empty_prompt_probability=1", "data.max_bad_fraction=0", "layout.timestep=0",
                               "data.resolution=64", "train.checkpoints_total_limit=null"])
    assert cfg.train.checkpoints_total_limit is None and cfg.data.resolution == 64
    assert Range(low=0, high=1).describe(integer=False) == "a number in [0, 1]"
    assert Range(low=0, low_open=True).describe(integer=False) == "a number > 0"


def documented_keys(cls=LumenConfig, prefix=""):
    keys = []
    for f in fields(cls):
        hint = get_type_hints(cls)[f.name]
        if is_dataclass(hint):
            keys += documented_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append((f"{prefix}{f.name}", f.metadata.get("doc", "")))
    return keys


def test_every_key_has_a_one_line_doc():
    undocumented = [key for key, doc in documented_keys() if not doc.strip()]
    assert not undocumented


CONFIG_COMMANDS = [name for name, command in COMMANDS.items() if name != "launch"
                   and hasattr(importlib.import_module(command.module), "SECTIONS")]


@pytest.mark.parametrize("name", CONFIG_COMMANDS)
def test_each_commands_help_lists_the_keys_of_the_sections_it_reads_with_their_defaults_and_docs(name, capsys):
    """`lumen <command> --help`: its purpose, then the top-level keys and those of its sections, each with its
    default, what it accepts (ranges, choices from the registries) and its doc; no key of another section."""
    module = importlib.import_module(COMMANDS[name].module)
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: lumen {name} ") and module.__doc__.splitlines()[0] in text
    sections = module.SECTIONS
    for key, doc in documented_keys():
        section = key.split(".")[0] if "." in key else None
        listed = section is None or sections is None or section in sections
        assert (f"  {key} = " in text) == listed, key
        if listed:
            assert doc.split()[0] in text
    if sections is None or "data" in sections:
        assert "data.resolution = 512 (a multiple of 8 >= 64)" in text
        assert "data.source = coco (" + " | ".join(DATA_SOURCES) + ")" in text
    if sections is None or "train" in sections:
        assert "train.mixed_precision = no (no | fp16 | bf16)" in text
        assert "train.log_every = 10 (an integer >= 1)" in text
    if sections is None or "layout" in sections:
        assert "layout.backbone = sd (" + " | ".join(BACKBONES) + ")" in text


def test_lumen_lists_its_commands_and_refuses_an_unknown_one(capsys):
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in COMMANDS)
    assert main(["trian"]) == 2
    assert "lumen: unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
