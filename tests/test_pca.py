import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from lumen.artifacts import DamagedArtifactError
from lumen.layout.pca import PCANotFoundError, fit_pca, load_pca, save_pca
from lumen.layout.pca_vectors import plan_samples


def low_rank_data(n=3000, dim=96, rank=12, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(6, 1, rank)
    return ((rng.standard_normal((n, rank)) * scales) @ rng.standard_normal((rank, dim))
            + 0.2 * rng.standard_normal((n, dim)) + 3.0).astype(np.float32)


def assert_agree(pca, reference_components, reference_variance):
    cos = np.abs((pca.components.numpy() * reference_components).sum(axis=1))
    assert cos.min() >= 0.999
    np.testing.assert_allclose(pca.explained_variance.numpy(), reference_variance, rtol=1e-3)


@pytest.mark.parametrize("solver", ["sklearn", "torch"])
def test_fit_agrees_with_scikit_learn(solver):
    x = low_rank_data()
    reference = SkPCA(n_components=8, svd_solver="full").fit(x)
    pca = fit_pca(x, 8, solver=solver)
    assert_agree(pca, reference.components_, reference.explained_variance_)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-3)
    np.testing.assert_allclose(pca.mean.numpy(), reference.mean_, rtol=1e-4, atol=1e-4)
    components = pca.components.numpy()
    np.testing.assert_allclose(components @ components.T, np.eye(8), atol=1e-5)
    largest = np.abs(components).argmax(axis=1)
    assert (components[np.arange(8), largest] > 0).all()  # the sign convention


def test_solvers_give_the_same_signs():
    x = low_rank_data(seed=3)
    a, b = fit_pca(x, 6, "sklearn"), fit_pca(x, 6, "torch")
    assert ((a.components * b.components).sum(dim=1) > 0.999).all()


def test_save_load_round_trip_and_tampering(tmp_path):
    pca = fit_pca(low_rank_data(), 5)
    pca.settings = {"layers": [2, 5, 8], "timestep": 100}
    folder = save_pca(pca, tmp_path / "pca", samples=torch.zeros(3, 96))
    assert {p.name for p in folder.iterdir()} == {"pca.safetensors", "pca.json", "explained_variance.png",
                                                  "samples.safetensors"}
    assert not (tmp_path / "pca.tmp").exists()
    loaded = load_pca(folder)
    assert torch.equal(loaded.components, pca.components) and loaded.settings["timestep"] == 100
    assert loaded.fingerprint() == pca.fingerprint()
    other = fit_pca(low_rank_data(seed=1), 5)
    save_pca(other, tmp_path / "other")
    (tmp_path / "other" / "pca.json").replace(folder / "pca.json")  # settings of another fit
    with pytest.raises(DamagedArtifactError, match="SHA-256 differs"):
        load_pca(folder)
    settings = json.loads((folder / "pca.json").read_text())
    del settings["files"]  # without the file record, the fingerprint still tells
    (folder / "pca.json").write_text(json.dumps(settings))
    with pytest.raises(DamagedArtifactError, match="does not match"):
        load_pca(folder)
    with pytest.raises(PCANotFoundError, match="lumen fit-pca"):
        load_pca(tmp_path / "nothing")


def test_too_many_components_is_refused():
    with pytest.raises(ValueError, match="n_components=200"):
        fit_pca(low_rank_data(n=100), 200)


def test_plan_is_seeded_uniform_and_partitions_the_samples():
    plan = plan_samples(num_dataset_images=500, grid=(8, 8), num_samples=3000, num_images=None, seed=0)
    again = plan_samples(500, (8, 8), 3000, None, seed=0)
    assert np.array_equal(plan.positions, again.positions) and np.array_equal(plan.image_indices, again.image_indices)
    assert len(plan.image_indices) == 94  # ceil(3000 / 32): a few dozen pixels per image
    assert not np.array_equal(plan.positions, plan_samples(500, (8, 8), 3000, None, seed=1).positions)
    ids = np.concatenate([plan.pixels_of_slot(j)[0] for j in range(len(plan.image_indices))])
    assert np.array_equal(np.sort(ids), np.arange(3000))  # every sample belongs to exactly one image
    per_image = np.array([len(plan.pixels_of_slot(j)[0]) for j in range(len(plan.image_indices))])
    assert per_image.min() > 10 and per_image.max() < 60  # spread over the images, not piled on a few
    pixels = np.concatenate([plan.pixels_of_slot(j)[1] for j in range(len(plan.image_indices))])
    assert pixels.min() >= 0 and pixels.max() < 64


def test_plan_refuses_more_samples_than_positions():
    with pytest.raises(ValueError, match="pca.num_samples=5000"):
        plan_samples(num_dataset_images=10, grid=(8, 8), num_samples=5000, num_images=None, seed=0)
