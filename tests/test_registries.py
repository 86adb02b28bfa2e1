"""The registries (backbones, data sources, metrics): what every entry must satisfy, tested for each one, so a
new entry is tested without editing this file."""

import math

import numpy as np
import pytest
import torch

from lumen.backbones import BACKBONES
from lumen.config import ConfigError, load_config
from lumen.data.sources import DATA_SOURCES
from lumen.evaluation.metrics import METRICS, ImageContext


def layouts(seed: int, count: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, 6, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_scores_a_faithful_image_at_least_as_well_as_an_unrelated_one(name):
    metric = METRICS[name]
    assert metric.title and metric.unit and metric.summary and (metric.per_image is None) != (metric.per_source is None)
    source, unrelated = layouts(0)[0], layouts(1)[0]
    others = layouts(2, 3)
    labels = np.random.default_rng(0).integers(0, 5, (24, 24))
    if metric.per_image is not None:
        faithful = metric.per_image(ImageContext(source.clone(), source, others, 4, labels.copy(), labels))
        random = metric.per_image(ImageContext(unrelated, source, others, 4, (labels + 1) % 5, labels))
        assert faithful is not None and math.isfinite(faithful) and random is not None and math.isfinite(random)
        if metric.higher_is_better is not None:
            assert (faithful >= random) == metric.higher_is_better, (faithful, random)
        # Without what it needs (other sources, a segmentation), a metric says so with None, never a number.
        alone = metric.per_image(ImageContext(source.clone(), source))
        assert alone is None or math.isfinite(alone)
    else:
        same = metric.per_source([source, source.clone()])
        varied = metric.per_source([source, unrelated])
        assert metric.per_source([source]) is None  # one image has no spread
        if metric.higher_is_better is not None:
            assert (varied > same) == metric.higher_is_better, (varied, same)


def test_the_registries_are_the_config_choices():
    assert load_config([], ["compare.backbones=[" + ",".join(BACKBONES) + "]"]).compare.backbones == list(BACKBONES)
    for name in DATA_SOURCES:
        assert load_config([], [f"data.source={name}"]).data.source == name
    for name in BACKBONES:
        assert load_config([], [f"layout.backbone={name}"]).layout.backbone == name
    with pytest.raises(ConfigError) as err:
        load_config([], ["layout.backbone=dinov3x"])
    assert str(err.value).startswith("bad value for config key 'layout.backbone' (from command-line override "
                                     "'layout.backbone=dinov3x'): 'dinov3x' is not one of " + ", ".join(BACKBONES))
    with pytest.raises(ConfigError, match="'data.source' .*'webdatasets' is not one of .* Did you mean webdataset"):
        load_config([], ["data.source=webdatasets"])


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_declares_what_the_stages_need(name):
    spec = BACKBONES[name]
    assert spec.name == name and spec.summary and callable(spec.build)
    assert spec.uses_sd or spec.transformer is not None, "a backbone reads SD, a transformer, or both"
    assert not spec.fused or (spec.uses_sd and spec.transformer is not None)
    if spec.transformer is not None:  # the tests and the demo build a tiny one of it
        assert spec.transformer.tiny and spec.transformer.default_facet in ("token", "key", "query", "value")
        assert spec.transformer.default_layer(12) in range(1, 13)


@pytest.mark.parametrize("name", list(DATA_SOURCES))
def test_every_data_source_declares_how_it_is_read(name):
    spec = DATA_SOURCES[name]
    assert spec.name == name and spec.summary and callable(spec.read_split)
    assert spec.streams == (spec.open_stream is not None)
