"""Loading a config: the schema's defaults, then YAML files, then ``key=value`` overrides, merged with OmegaConf
(a structured config: an unknown key or a value of the wrong type is refused) and checked against every key's
range. Every refusal is a ``ConfigError`` naming the key, the value, where it came from and what is valid (or
the closest valid key)."""

from __future__ import annotations

import difflib
import enum
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from lumen.config.fields import Range
from lumen.config.help import describe_keys
from lumen.config.schema import LumenConfig
from lumen.errors import LumenError


class ConfigError(LumenError, ValueError):
    """A config file or override that does not fit the schema."""

    label = "config error"


def _valid_keys(parent: str) -> list[str]:
    """Field names of the schema section at dotted path ``parent`` ('' for the root)."""
    node: Any = LumenConfig()
    for part in [p for p in parent.split(".") if p]:
        node = getattr(node, part, None)
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _explain(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    key = str(key)
    if isinstance(err, ConfigKeyError) or ("Key '" in str(err) and "not in" in str(err)):
        parent, _, leaf = key.rpartition(".")
        candidates = _valid_keys(parent)
        full = [f"{parent}.{c}" if parent else c for c in candidates]
        close = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.6)
        hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        listing = ", ".join(full) if full else "(none: this section takes no keys)"
        return ConfigError(f"unknown config key '{key}' (from {source}).{hint}\n  valid keys here: {listing}")
    msg = str(err).splitlines()[0]
    return ConfigError(f"bad value for config key '{key}' (from {source}): {msg}")


# YAML 1.1 reads a bare no / yes / off / on as a boolean; for a choice key they mean the choice of that name.
_BOOLEAN_WORDS = {False: ("no", "off", "false"), True: ("yes", "on", "true")}


def _unwrap_optional(kind: Any) -> Any:
    """``Optional[X]`` -> ``X``; any other type as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Union and len(args) == 1:
        return args[0]
    return kind


def _schema_type(key: str) -> Any:
    """The declared type of the dotted config key ``key`` (None when the schema has no such key); below a
    mapping-valued key (``compare.backbone_models.dino``), the type of its values."""
    node: Any = LumenConfig
    parts = key.split(".")
    for position, part in enumerate(parts):
        if not is_dataclass(node):
            return None
        kind = _unwrap_optional(typing.get_type_hints(node).get(part))
        if kind is None:
            return None
        if typing.get_origin(kind) is dict and position == len(parts) - 2:
            return typing.get_args(kind)[1]
        node = kind
    return node


def _shape_error(key: str, value: Any, source: str, expected: str) -> ConfigError:
    return ConfigError(f"bad value for config key '{key}' (from {source}): {value}; expected {expected}")


def _conform(values: dict, section: Any, source: str, typed: Callable[[str], Any], prefix: str = "") -> dict:
    """``values`` (a config file's or an override's mapping) checked against the schema section ``section`` for
    what OmegaConf would report in its own terms, with the word the user typed (``typed(dotted key)``):
    a scalar for a list or a section, a list or mapping for a single value, and YAML's reading of a bare word
    (``no`` as false, ``{a,b}`` as a mapping) where the key wants a string or a choice."""
    hints = typing.get_type_hints(section)
    result = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        kind = _unwrap_optional(hints.get(key)) if key in hints else None
        if kind is None or kind is Any or value is None or (isinstance(value, str) and value.startswith("${")):
            result[key] = value  # unknown keys are named by OmegaConf, with the closest valid key
            continue
        origin, word = typing.get_origin(kind), typed(name)
        if is_dataclass(kind):
            if not isinstance(value, dict):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a section of keys, e.g. {name}.{fields(kind)[0].name}=...")
            value = _conform(value, kind, source, typed, name + ".")
        elif origin is list:
            if not isinstance(value, list):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a list, e.g. {name}=[{word if word is not None else value}]")
        elif origin is dict:
            if not isinstance(value, dict):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a mapping, e.g. {name}.<key>=<value>")
        elif isinstance(kind, type) and issubclass(kind, enum.Enum) and isinstance(value, bool):
            choices = [member.value for member in kind]
            chosen = word if word in choices else next((w for w in _BOOLEAN_WORDS[value] if w in choices), None)
            if chosen is None:
                raise _shape_error(name, repr(word if word is not None else value), source,
                                   f"one of {', '.join(choices)}")
            value = chosen
        elif kind is str and not isinstance(value, str) and isinstance(word, str):
            value = word  # what was typed, not YAML's reading of it (a boolean, a number, a brace pattern)
        elif isinstance(value, (dict, list)):
            raise _shape_error(name, word if word is not None else value, source, "a single value")
        result[key] = value
    return result


def _lookup(tree: Any, key: str) -> Any:
    """The value at dotted ``key`` in a nested dict (None when absent)."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _merge(base: DictConfig, plain: dict, source: str, typed: Callable[[str], Any]) -> DictConfig:
    try:
        return OmegaConf.merge(base, OmegaConf.create(_conform(plain, LumenConfig, source, typed)))
    except OmegaConfBaseException as err:
        raise _explain(err, source) from None


def _nested(key: str, value: Any) -> dict:
    """``a.b.c``, v -> ``{"a": {"b": {"c": v}}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def parse_override(item: str) -> dict:
    """``key=value`` -> a nested mapping. The value is read as YAML (numbers, lists, null, ...); for a key that
    holds a string, a value YAML cannot read (``data.shards={root}/{split}/{000000..000099}.tar``) is taken
    as typed."""
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.empty_prompt_probability=0.1)")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={text}"]), resolve=False)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        if _schema_type(key) is not str:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"cannot parse override '{item}': {detail}") from None
        parsed = _nested(key, text)
    return parsed


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a plain (nested dict) config."""
    if not isinstance(node, dict):
        return [prefix]
    keys = []
    for key, value in node.items():
        keys += _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> LumenConfig:
    """Merge the schema's defaults, ``files`` in order, then ``overrides`` (``key=value``).

    Returns the validated config as plain dataclasses (interpolations such as ``${output_dir}`` resolved).
    Raises ``ConfigError`` naming the key and its source when anything does not fit the schema: an unknown
    key, a wrong type, or a value outside the key's range (``Range``).
    """
    import yaml

    cfg = OmegaConf.structured(LumenConfig)
    sources: dict[str, str] = {}  # dotted key -> where its value came from (the last one to set it)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
            # Every scalar as the text it was written with, for messages and for string keys.
            typed_tree = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
        except Exception as err:  # yaml syntax errors come in several types
            raise ConfigError(f"cannot parse {path} as YAML: {err}") from None
        if loaded is None:
            continue
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path} must hold a mapping of config keys, found {type(loaded).__name__}")
        plain = OmegaConf.to_container(loaded, resolve=False)
        cfg = _merge(cfg, plain, str(path), lambda key, tree=typed_tree: _lookup(tree, key))
        sources.update(dict.fromkeys(_leaf_keys(plain), str(path)))
    for item in overrides:
        plain = parse_override(item)
        key, _, text = (part.strip() for part in item.partition("="))
        source = f"command-line override '{item}'"
        cfg = _merge(cfg, plain, source, lambda name, key=key, text=text: text if name == key else None)
        sources.update(dict.fromkeys(_leaf_keys(plain), source))
    try:
        result = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, "interpolation") from None
    problems = range_problems(result, sources) + relation_problems(result, sources)
    if problems:
        raise ConfigError("\n".join(problems))
    return result


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problems(cfg: Any, sources: dict[str, str], prefix: str = "") -> list[str]:
    """One line per value outside its key's ``Range``: the key, the value, where it came from, what is valid."""
    problems = []
    for f in fields(cfg):
        key = f"{prefix}{f.name}"
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            problems += range_problems(value, sources, key + ".")
            continue
        problems += _choice_problems(f, key, value, sources)
        bounds: Optional[Range] = f.metadata.get("range")
        if bounds is None or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        integer = all(isinstance(v, int) for v in items)
        bad = [v for v in items if _numeric(v) and not bounds.accepts(v)]
        if isinstance(value, list) and len(value) < bounds.min_items:
            problems.append(f"bad value for config key '{key}' (from {sources.get(key, 'the defaults')}): "
                            f"{value}; expected a list of at least {bounds.min_items} element(s)")
        elif bad:
            what = f"{value} (element {bad[0]})" if isinstance(value, list) else f"{value}"
            expected = bounds.describe(integer) + (" for every element" if isinstance(value, list) else "")
            problems.append(f"bad value for config key '{key}' (from {sources.get(key, 'the defaults')}): "
                            f"{what}; expected {expected}")
    return problems


def _choice_problems(f: Any, key: str, value: Any, sources: dict[str, str]) -> list[str]:
    """A name outside the key's ``choices`` (a string, or an element of a list), or a mapping key outside its
    ``key_choices``: named with the closest valid one."""
    source = sources.get(key, "the defaults")
    if "choices" in f.metadata and value is not None:
        valid = f.metadata["choices"]()
        for item in value if isinstance(value, list) else [value]:
            if item not in valid:
                close = difflib.get_close_matches(str(item), valid, n=1, cutoff=0.6)
                hint = f". Did you mean {close[0]}?" if close else ""
                return [f"bad value for config key '{key}' (from {source}): '{item}' is not one of "
                        f"{', '.join(valid)}{hint}"]
    if "key_choices" in f.metadata:
        valid = f.metadata["key_choices"]()
        for name in value:
            if name not in valid:
                close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
                hint = f" Did you mean {key}.{close[0]}?" if close else ""
                entry = f"{key}.{name}"
                return [f"unknown config key '{entry}' (from {sources.get(entry, source)}): '{name}' is not one of "
                        f"{', '.join(valid)}.{hint}\n  valid keys here: " + ", ".join(f"{key}.{v}" for v in valid)]
    return []


def relation_problems(cfg: LumenConfig, sources: dict[str, str]) -> list[str]:
    """Checks that involve two keys of one section."""
    problems = []
    if len(cfg.layout.fusion_weights) != 2:
        problems.append(f"bad value for config key 'layout.fusion_weights' (from "
                        f"{sources.get('layout.fusion_weights', 'the defaults')}): {cfg.layout.fusion_weights}; "
                        f"expected two weights, for the SD part and the DINOv2 part")
    for number, point in enumerate(cfg.corr.points, start=1):
        if len(point) != 2:
            problems.append(f"bad value for config key 'corr.points' (from "
                            f"{sources.get('corr.points', 'the defaults')}): point {number} is {point}; expected "
                            f"points of two numbers, [[x, y], ...] in source pixels")
            break
    if len(set(cfg.compare.backbones)) != len(cfg.compare.backbones):
        problems.append(f"bad value for config key 'compare.backbones' (from "
                        f"{sources.get('compare.backbones', 'the defaults')}): {cfg.compare.backbones}; expected "
                        f"each backbone once")
    if cfg.validation.captions and len(cfg.validation.captions) != len(cfg.validation.images):
        problems.append(f"bad value for config key 'validation.captions' (from "
                        f"{sources.get('validation.captions', 'the defaults')}): {len(cfg.validation.captions)} "
                        f"caption(s) for {len(cfg.validation.images)} validation.images; give one per image, or none")
    captions = cfg.data.caption_column
    if not (captions is None or isinstance(captions, str)
            or (isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions))):
        problems.append(f"bad value for config key 'data.caption_column' (from "
                        f"{sources.get('data.caption_column', 'the defaults')}): {captions}; expected a column name "
                        f"or a non-empty list of column names")
    if cfg.pca.n_components > cfg.pca.num_samples:
        problems.append(
            f"bad value for config key 'pca.n_components' (from {sources.get('pca.n_components', 'the defaults')}): "
            f"{cfg.pca.n_components} components need at least as many samples, and pca.num_samples="
            f"{cfg.pca.num_samples} (from {sources.get('pca.num_samples', 'the defaults')})")
    return problems


def to_yaml(cfg: LumenConfig) -> str:
    """The resolved config as YAML (enums as their names), as written next to every output."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: LumenConfig, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config to ``folder/name`` and return that path. Each command writes its own, beside
    its outputs (the training run's is ``output_dir/config.yaml``), so no command replaces another's record."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(to_yaml(cfg))
    return path


def split_argv(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``CONFIG.yaml ... key=value ...`` -> (files, overrides). An argument without "=" must be a config file:
    a bare dotted key (a forgotten "=value") is named as such instead of being looked for as a file."""
    files, overrides = [], []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif Path(item).is_file() or item.endswith((".yaml", ".yml")):
            files.append(item)
        else:
            raise ConfigError(f"'{item}' is neither a config file (no such file) nor a key=value override; "
                              f"did you mean {item}=<value>?")
    return files, overrides


def config_from_argv(argv: Sequence[str] | None, prog: str, description: str,
                     sections: Optional[Sequence[str]] = None) -> LumenConfig:
    """Parse ``CONFIG.yaml [more.yaml ...] [key=value ...]`` as every command takes it; ``--help`` shows
    ``description`` and the keys of the top level and of ``sections`` (None: every section). A config that does
    not fit the schema raises ``ConfigError`` (``lumen.errors.run_cli`` reports it in one message, exit code 2)."""
    import argparse

    shown = "every section" if sections is None else "the sections this command reads"
    parser = argparse.ArgumentParser(
        prog=prog, description=description.strip(), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys ({shown}; in CONFIG.yaml files, or key=value on the command line; defaults shown):\n"
               + "\n".join(describe_keys(sections=sections)))
    parser.add_argument("items", nargs="+", metavar="CONFIG.yaml | key=value",
                        help="config files merged in order, then key=value overrides")
    args = parser.parse_args(argv)
    files, overrides = split_argv(args.items)
    if not files:
        parser.error("give at least one config file, e.g. configs/tiny.yaml")
    return load_config(files, overrides)
