"""PCA of feature vectors: fit (scikit-learn, or the same computation in torch), save, load, plot.

A fitted PCA is a folder (written whole under a temporary name, then moved into place): ``pca.safetensors``
(``mean`` (C,), ``components`` (N, C) with orthonormal rows,
``explained_variance`` (N,), ``explained_variance_ratio`` (N,)) and ``pca.json`` (the extraction settings it
was fitted under, sample counts, the ratios, a fingerprint of the tensors and the size and SHA-256 of
``pca.safetensors``). Each component's sign is
fixed so that its largest-magnitude entry is positive, which makes fits reproducible across solvers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lumen.artifacts import (
    DamagedArtifactError,
    file_manifest,
    manifest_problems,
    move_into_place,
    read_json,
    setting_differences,
)
from lumen.errors import LumenError, writing
from lumen.plotting import pyplot, save_figure

TENSORS_FILE = "pca.safetensors"
SETTINGS_FILE = "pca.json"
PLOT_FILE = "explained_variance.png"
SAMPLES_FILE = "samples.safetensors"


class PCANotFoundError(LumenError, FileNotFoundError):
    """No fitted PCA where the config points."""


class PCAExistsError(LumenError, FileExistsError):
    """The PCA folder holds a PCA fitted with other settings, and replacing it was not asked for."""


class PCASettingsError(LumenError, ValueError):
    """PCA settings the features cannot satisfy (more components than samples or feature channels)."""


@dataclass
class PCA:
    """A fitted PCA. ``settings`` records how the fitted features were made (see ``lumen.layout``)."""

    mean: torch.Tensor  # (C,) float32
    components: torch.Tensor  # (N, C) float32, orthonormal rows
    explained_variance: torch.Tensor  # (N,) float32
    explained_variance_ratio: torch.Tensor  # (N,) float32
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.components.shape[1]

    def fingerprint(self) -> str:
        """A short hash of the tensors: two PCAs with the same fingerprint project identically."""
        digest = hashlib.sha256()
        for tensor in (self.mean, self.components, self.explained_variance):
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its entry of largest magnitude is positive."""
    largest = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(len(components)), largest])
    signs[signs == 0] = 1
    return components * signs[:, None]


def fit_pca(samples: np.ndarray | torch.Tensor, n_components: int, solver: str = "sklearn", seed: int = 0,
            device: torch.device | str = "cpu") -> PCA:
    """Fit a PCA to ``samples`` ``(S, C)``.

    ``solver="sklearn"``: scikit-learn's ``PCA`` with its automatic solver choice (randomized SVD for
    40,000 x 3,200 features, ~2.5 s on two CPU cores; covariance + eigh for small feature counts).
    ``solver="torch"``: the exact covariance + eigh computation with torch on ``device`` (covariance in
    float32, eigendecomposition in float64); milliseconds on a GPU. Both agree up to rounding (signs fixed).
    """
    n_samples, dim = samples.shape
    if n_components > min(n_samples, dim):
        raise PCASettingsError(f"pca.n_components={n_components} needs at least that many samples and feature "
                         f"channels; got {n_samples} samples of {dim} channels")
    if solver == "sklearn":
        from sklearn.decomposition import PCA as SkPCA

        x = samples.numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        pca = SkPCA(n_components=n_components, random_state=seed).fit(x)
        mean, components = pca.mean_, pca.components_
        variance, ratio = pca.explained_variance_, pca.explained_variance_ratio_
    elif solver == "torch":
        x = torch.as_tensor(samples).to(device, torch.float32)
        mean_t = x.mean(dim=0, dtype=torch.float64)
        centred = x - mean_t.float()
        covariance = (centred.T @ centred).double() / (n_samples - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending order
        order = torch.argsort(eigenvalues, descending=True)[:n_components]
        mean = mean_t.cpu().numpy()
        components = eigenvectors[:, order].T.cpu().numpy()
        variance = eigenvalues[order].clamp_min(0).cpu().numpy()
        ratio = variance / torch.trace(covariance).item()
    else:
        raise ValueError(f"unknown PCA solver '{solver}' (expected sklearn or torch)")
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return PCA(as_tensor(mean), as_tensor(fix_signs(np.asarray(components))), as_tensor(variance),
               as_tensor(ratio))


def save_pca(pca: PCA, folder: str | Path, samples: torch.Tensor | None = None,
             extra_files: dict[str, str] | None = None) -> Path:
    """Write ``pca.safetensors``, ``pca.json``, the explained-variance plot, the samples if given and
    ``extra_files`` (name -> text) as the folder ``folder``: written under ``<folder>.tmp`` and moved into place
    when complete, so a failure never leaves a half-written PCA, nor damages the one that was there."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with writing(tmp, "the PCA"):
        tensors = {"mean": pca.mean, "components": pca.components, "explained_variance": pca.explained_variance,
                   "explained_variance_ratio": pca.explained_variance_ratio}
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / TENSORS_FILE)
        if samples is not None:
            save_file({"features": samples.contiguous()}, tmp / SAMPLES_FILE)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        plot_explained_variance(pca, tmp / PLOT_FILE)
        settings = dict(pca.settings, n_components=pca.n_components, feature_dim=pca.feature_dim,
                        explained_variance_ratio=[round(float(r), 6) for r in pca.explained_variance_ratio],
                        fingerprint=pca.fingerprint(),
                        files=file_manifest(tmp, include=[TENSORS_FILE], checksums=True))
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return move_into_place(tmp, folder)


def reuse_existing_pca(folder: str | Path, request: dict[str, Any], overwrite: bool) -> bool:
    """Whether the PCA in ``folder`` can be kept instead of fitting one for ``request`` (what the fit depends
    on, recorded in pca.json as ``request``): True when it was fitted for the same request; False when there is
    none, or replacing it is asked for (``overwrite``). Otherwise ``PCAExistsError`` lists what differs: layout
    caches and ControlNets made with it would no longer match a new one."""
    folder = Path(folder)
    if overwrite or not (folder / SETTINGS_FILE).exists():
        return False
    try:
        found = dict(json.loads((folder / SETTINGS_FILE).read_text()).get("request", {}))
    except (OSError, ValueError):
        found = {}  # damaged: differs from any request
    differences = setting_differences(request, found, "now", str(folder / SETTINGS_FILE))
    if differences:
        raise PCAExistsError(
            f"{folder} already holds a PCA fitted with other settings:\n  " + "\n  ".join(differences)
            + "\nLayout caches and ControlNets made with it would no longer match a new one. Set pca.overwrite=true "
            "to replace it, or choose another layout.pca_dir."
        )
    load_pca(folder)  # verified before it is reused: a damaged one is named, with the command that refits it
    return True


def load_pca(folder: str | Path) -> PCA:
    """Read a PCA folder written by ``save_pca``; refuses one that is incomplete, damaged or whose tensors do
    not match its settings, saying how to make it again."""
    folder = Path(folder)
    if not (folder / TENSORS_FILE).is_file() or not (folder / SETTINGS_FILE).is_file():
        raise PCANotFoundError(
            f"no fitted PCA in {folder} (expected {TENSORS_FILE} and {SETTINGS_FILE}); "
            f"run 'lumen fit-pca CONFIG' first, or set layout.pca_dir"
        )
    refit = "refit it: lumen fit-pca CONFIG pca.overwrite=true"
    settings = read_json(folder / SETTINGS_FILE, f"the PCA in {folder}", refit)
    problems = manifest_problems(folder, settings.get("files", {}), checksums=True)
    if problems:
        raise DamagedArtifactError(f"the PCA in {folder} is damaged ({'; '.join(problems)}); {refit}")
    try:
        tensors = load_file(folder / TENSORS_FILE)
        pca = PCA(tensors["mean"], tensors["components"], tensors["explained_variance"],
                  tensors["explained_variance_ratio"], settings=settings)
    except Exception as err:  # safetensors reports damage with its own exception types
        raise DamagedArtifactError(f"the PCA in {folder} is damaged ({folder / TENSORS_FILE}: "
                                   f"{type(err).__name__}: {err}); {refit}") from None
    if settings.get("fingerprint") not in (None, pca.fingerprint()):
        raise DamagedArtifactError(f"{folder}: {TENSORS_FILE} does not match {SETTINGS_FILE} (fingerprint "
                                   f"{pca.fingerprint()} vs {settings['fingerprint']}); {refit}")
    return pca


def plot_explained_variance(pca: PCA, path: str | Path) -> Path:
    """Bar chart of each component's explained-variance ratio and its cumulative curve, as a PNG."""
    ratio = pca.explained_variance_ratio.numpy()
    ks = np.arange(1, len(ratio) + 1)
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.bar(ks, ratio, color="#9ecae1", label="per component")
    ax.plot(ks, np.cumsum(ratio), "o-", color="#08519c", label="cumulative")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(0, 1)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    layers = pca.settings.get("layers")
    ax.set_title(f"PCA of {pca.feature_dim}-d features" + (f" (decoder layers {layers})" if layers else "")
                 + f": {np.sum(ratio):.1%} in {len(ratio)} components", fontsize=9)
    return save_figure(fig, path)
