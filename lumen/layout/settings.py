"""What decides a layout's meaning (``LayoutSettings``), recorded beside every artifact made from
layouts, and the checks that refuse an artifact made under other settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from lumen.errors import LumenError
from lumen.layout.pca import PCA


@dataclass(frozen=True)
class LayoutSettings:
    """Everything that decides what a layout means. Layouts, caches and models made under other settings
    than a PCA was fitted under are refused (``describe_differences``)."""

    backbone: str
    # Stable Diffusion's part (None for a backbone that does not use it: BackboneSpec.uses_sd)
    model: Optional[str]
    revision: Optional[str]
    layers: Optional[tuple[int, ...]]
    timestep: Optional[int]
    noise_seed: Optional[int]
    prompt: Optional[str]
    # the transformer part (None for a backbone without one): lumen.backbones.transformer_loading.TransformerSpec
    backbone_model: Optional[str]
    backbone_revision: Optional[str]
    backbone_layer: Optional[int]
    facet: Optional[str]
    image_size: Optional[int]
    fusion_weights: Optional[tuple[float, ...]]  # fused backbones only (BackboneSpec.fused)
    resolution: int
    dtype: str  # the dtype the features were computed in ("float32", "bfloat16", ...)

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), layers=None if self.layers is None else list(self.layers),
                    fusion_weights=None if self.fusion_weights is None else list(self.fusion_weights))

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "the artifact") -> LayoutSettings:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise SettingsMismatchError(f"the layout settings recorded in {where} lack {sorted(missing)}: it was "
                                        f"written by an older version of Lumen; make it again with this one")
        values = {k: data[k] for k in names}
        tuples = {k: tuple(values[k]) for k in ("layers", "fusion_weights") if values[k] is not None}
        return cls(**dict(values, **tuples))


def describe_differences(expected: LayoutSettings, found: LayoutSettings, expected_from: str,
                         found_from: str) -> list[str]:
    """One line per setting that differs, e.g. ``timestep: 100 (config) vs 261 (outputs/x/pca/pca.json)``."""
    lines = []
    for f in fields(LayoutSettings):
        a, b = getattr(expected, f.name), getattr(found, f.name)
        if a != b:
            lines.append(f"{f.name}: {a!r} ({expected_from}) vs {b!r} ({found_from})")
    return lines


def check_pca_matches(pca: PCA, settings: LayoutSettings, pca_dir: str | Path) -> None:
    """Refuse a PCA fitted on features made under other settings than ``settings``."""
    found = LayoutSettings.from_json(pca.settings, f"{pca_dir}/pca.json")
    differences = describe_differences(settings, found, "config", f"{pca_dir}/pca.json")
    if differences:
        raise SettingsMismatchError(
            f"the PCA in {pca_dir} was fitted on features made with other settings than the config's:\n  "
            + "\n  ".join(differences)
            + "\nRefit it (lumen fit-pca CONFIG) or point layout.pca_dir at a matching PCA."
        )


class SettingsMismatchError(LumenError, ValueError):
    """An artifact (PCA, cache, ControlNet) made under other layout settings than the config's."""
