"""Typed experiment configuration: the schema (``schema``), how a key is declared (``fields``), loading and
checking files and overrides (``loading``), and ``--help``'s listing (``help``). Everything a caller needs is
importable from here."""

from lumen.config.fields import SEED_MAX, Range, seed_field, setting
from lumen.config.help import describe_keys
from lumen.config.loading import (
    ConfigError,
    config_from_argv,
    load_config,
    parse_override,
    range_problems,
    relation_problems,
    save_config,
    split_argv,
    to_yaml,
)
from lumen.config.schema import (
    Attention,
    CompareConfig,
    CompileMode,
    CorrespondenceConfig,
    CorrFeatures,
    DataConfig,
    DataLayout,
    DType,
    EncodeConfig,
    EvaluateConfig,
    Facet,
    LabelSource,
    LayoutConfig,
    LRScheduler,
    LumenConfig,
    MixedPrecision,
    ModelConfig,
    PCAConfig,
    PCASolver,
    PCKReference,
    SampleConfig,
    SamplerName,
    SynthesizeConfig,
    SyntheticDataConfig,
    Tracker,
    TrainConfig,
    ValidationConfig,
)

__all__ = [
    "SEED_MAX", "Attention", "CompareConfig", "CompileMode", "ConfigError", "CorrFeatures",
    "CorrespondenceConfig", "DType", "DataConfig", "DataLayout", "EncodeConfig", "EvaluateConfig",
    "Facet", "LRScheduler", "LabelSource", "LayoutConfig", "LumenConfig", "MixedPrecision", "ModelConfig",
    "PCAConfig", "PCASolver", "PCKReference", "Range", "SampleConfig", "SamplerName", "SynthesizeConfig",
    "SyntheticDataConfig", "Tracker", "TrainConfig", "ValidationConfig", "config_from_argv", "describe_keys",
    "load_config", "parse_override", "range_problems", "relation_problems", "save_config", "seed_field", "setting",
    "split_argv", "to_yaml",
]
