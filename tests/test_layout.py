import numpy as np
import pytest
import torch

from lumen.layout.encoder import LayoutEncoder, resize_layout, truncate_components
from lumen.layout.pca import fit_pca
from lumen.layout.pictures import layout_to_image
from lumen.layout.settings import LayoutSettings, SettingsMismatchError, check_pca_matches


def settings(**changes):
    base = dict(backbone="sd", model="m", revision=None, layers=(2, 5, 8), timestep=100, noise_seed=42, prompt="",
                backbone_model=None, backbone_revision=None, backbone_layer=None, facet=None, image_size=None,
                fusion_weights=None, resolution=512, dtype="float32")
    return LayoutSettings(**dict(base, **changes))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4000, 6)) * [5, 3, 2, 1, 0.5, 0.2]) @ rng.standard_normal((6, 24)) + 1.0
    x = x.astype(np.float32)
    return fit_pca(x, 4), torch.from_numpy(x)


def test_layout_is_the_whitened_projection(fitted):
    pca, x = fitted
    features = x[:64].T.reshape(1, 24, 8, 8)  # 64 samples as one 8x8 feature map
    layout = LayoutEncoder(pca)(features)
    assert layout.shape == (1, 4, 8, 8)
    expected = (x[:64] - pca.mean) @ pca.components.T / pca.explained_variance.sqrt()
    torch.testing.assert_close(layout[0].reshape(4, 64).T, expected, rtol=1e-4, atol=1e-4)


def test_whitened_components_have_unit_variance_on_the_fitted_data(fitted):
    pca, x = fitted
    layout = LayoutEncoder(pca)(x.T.reshape(1, 24, 40, 100))
    per_component = layout[0].reshape(4, -1)
    torch.testing.assert_close(per_component.var(dim=1), torch.ones(4), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(per_component.mean(dim=1), torch.zeros(4), rtol=0, atol=1e-3)


def test_truncation_zeroes_trailing_components(fitted):
    pca, x = fitted
    features = x[:64].T.reshape(1, 24, 8, 8)
    full, two = LayoutEncoder(pca)(features), LayoutEncoder(pca, n_components=2)(features)
    assert torch.equal(two[:, :2], full[:, :2]) and (two[:, 2:] == 0).all()
    assert torch.equal(truncate_components(full, None), full)
    with pytest.raises(ValueError, match="between 1 and"):
        LayoutEncoder(pca, n_components=5)
    with pytest.raises(ValueError, match="channels"):
        LayoutEncoder(pca)(torch.zeros(1, 23, 8, 8))


def test_resize_and_picture():
    layout = torch.randn(2, 20, 8, 8)
    assert resize_layout(layout, 64).shape == (2, 20, 64, 64)
    image = layout_to_image(layout[0], size=64)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert layout_to_image(torch.zeros(1, 4, 4)).getpixel((0, 0)) == (128, 128, 128)


def test_settings_round_trip_and_mismatch_message(fitted):
    pca, _ = fitted
    pca.settings = settings().to_json()
    assert LayoutSettings.from_json(pca.settings) == settings()
    check_pca_matches(pca, settings(), "pca_dir")
    with pytest.raises(SettingsMismatchError) as err:
        check_pca_matches(pca, settings(timestep=261, layers=(5,)), "somewhere/pca")
    text = str(err.value)
    assert "timestep: 261 (config) vs 100 (somewhere/pca/pca.json)" in text
    assert "layers: (5,) (config) vs (2, 5, 8)" in text
    with pytest.raises(SettingsMismatchError, match="dtype: 'bfloat16' \\(config\\) vs 'float32'"):
        check_pca_matches(pca, settings(dtype="bfloat16"), "somewhere/pca")
    old = {k: v for k, v in settings().to_json().items() if k != "dtype"}
    with pytest.raises(SettingsMismatchError, match="lack \\['dtype'\\].*older version of Lumen"):
        LayoutSettings.from_json(old, "old/pca.json")
