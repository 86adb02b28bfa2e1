"""The main job on the embedded default: lumen demo [CONFIG.yaml ...] [key=value ...]

Without arguments it uses configs/tiny.yaml: the small Stable Diffusion shipped in models/tiny-sd (trained on
synthetic scenes by lumen make-tiny-sd). Stages (each reuses what an earlier run already made):
  1. check the model, and build tiny vision transformers (DINOv2, DINO, CLIP, SigLIP; random weights) under
     output_dir/backbones;
  2. write the synthetic data set in the official COCO-Stuff layout under data.root, and a picture of it;
  3. check the data set with the doctor; 4. load the model back through the real loading path;
  5. fit the layout PCA (lumen fit-pca) and show its explained-variance plot;
  6. cache layouts and latents (lumen encode-layouts) and show a few layout pictures;
  7. the layouts of every backbone for the same images (lumen compare-backbones, one picture);
  8. train the ControlNet with two processes (lumen launch), with checkpoints and validation grids;
  9-11. sample with prompt edits, sweep the number of layout components, and evaluate the sweep.
Stages 5 to 11 run as the commands a user would type, printed before they run. The demo ends with the time
of each stage; scripts/demo.sh passes the environment set-up's time in LUMEN_DEMO_SETUP_SECONDS.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lumen.config import config_from_argv, save_config
from lumen.data.dataset import SplitDataset
from lumen.data.doctor import run_doctor
from lumen.data.preview import save_data_preview
from lumen.data.sources.coco import read_split, resolve_split_paths
from lumen.pretrained import TORCH_DTYPES, load_sd_components
from lumen.testing.synthetic_coco import synthetic_matches, write_synthetic_coco_stuff
from lumen.testing.tiny_backbones import KINDS, save_tiny_backbone
from lumen.testing.tiny_sd import tiny_sd_settings

PROG = "lumen demo"
SECTIONS = None  # it runs every stage: every section

REPO = Path(__file__).resolve().parents[2]  # the checkout the demo runs in (its configs/ and models/)
DERIVED = ("pca", "cache", "controlnet", "controlnet_ema", "validation", "evaluation", "logs", "compare")
DEFAULT_CONFIG = REPO / "configs" / "tiny.yaml"


def _run(command: str, argv: list[str], launcher: tuple[str, ...] = ()) -> None:
    """Run a ``lumen`` command as its own process, the way a user would (with ``launcher``: under ``lumen launch``,
    accelerate's launcher with Lumen's exit codes), and stop the demo if it fails."""
    shown = ["lumen", *(("launch", *launcher) if launcher else ()), command, *argv]
    print("    $ " + " ".join(shlex.quote(c) for c in shown), flush=True)
    if subprocess.run([sys.executable, "-m", "lumen_train", *shown[1:]]).returncode != 0:
        raise SystemExit(f"demo: lumen {command} failed (its messages are above)")


def _two_processes() -> tuple[str, ...]:
    """Two ranks: two GPUs where there are, else two CPU processes (the trainer builds Accelerator(cpu=True)
    without a GPU); one GPU trains in one process."""
    import torch

    gpus = torch.cuda.device_count()
    return ("--num_processes", "1") if gpus == 1 else ("--multi_gpu", "--num_processes", "2")


class StageClock:
    """Prints each stage's title as it starts and keeps how long each took, for the table at the end."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def stage(self, number: int, title: str, short: str) -> float:
        self.stop()
        print(f"\n[{number}] {title}", flush=True)
        self._current = (f"[{number}] {short}", time.perf_counter())
        return self._current[1]

    def stop(self) -> None:
        if self._current is not None:
            name, start = self._current
            elapsed = time.perf_counter() - start
            self.times.append((name, elapsed))
            print(f"    ({elapsed:.1f} s)", flush=True)
            self._current = None

    def report(self, setup_seconds: float | None) -> str:
        """The stage times and the total, environment set-up included when ``setup_seconds`` is known."""
        rows = ([("environment (scripts/setup.sh)", setup_seconds)] if setup_seconds is not None else []) + self.times
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name:<{width}}  {seconds:6.1f} s" for name, seconds in rows]
        total = sum(seconds for _, seconds in rows)
        lines.append(f"  {'total':<{width}}  {total:6.1f} s ({total / 60:.1f} min)")
        return "\n".join(lines)


def model_fingerprint(model_dir: Path) -> str:
    """A short hash of a local model folder's weight files (names, sizes and contents)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*.safetensors")):
        digest.update(str(path.relative_to(model_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_tiny_models(cfg, out: Path) -> list[str]:
    """Check the model the demo samples with, and build the tiny vision transformers (or reuse those an earlier
    demo built). When the model differs from the one an earlier demo in ``out`` used (an updated checkout
    ships a retrained one), that demo's layouts, ControlNets and samples would be refused by every stage:
    they are removed, and the demo says which."""
    model = cfg.model.pretrained
    summary = [f"Stable Diffusion (diffusers format): {model}"]
    if Path(model).is_dir():
        marker = out / "demo_model.json"
        current = {"model": str(model), "weights": model_fingerprint(Path(model))}
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if previous is not None and previous != current:
            stale = [p for p in out.iterdir() if p.name in DERIVED or p.name.startswith(("checkpoint-", "samples"))]
            for path in stale:
                shutil.rmtree(path)
            if stale:
                print(f"    {out} was made with another model ({previous['model']}, weights "
                      f"{previous['weights']}); removed what it made with it: {', '.join(p.name for p in stale)}")
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(current, indent=2))
        info = tiny_sd_settings(model)
        if info is not None:
            print(f"    {model}: made by `{info.get('command', 'lumen.tiny_sd')}`")
    backbones = out / "backbones"
    for kind in KINDS:
        if not (backbones / kind / "config.json").is_file():
            save_tiny_backbone(kind, backbones / kind, seed=cfg.seed)
    print(f"    tiny vision transformers (random weights): {backbones}")
    return [*summary, f"tiny vision transformers (transformers format): {backbones}"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.endswith((".yaml", ".yml")) for a in argv):
        argv.insert(0, os.path.relpath(DEFAULT_CONFIG))
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    out = Path(cfg.output_dir)
    config_path = save_config(cfg, out, "demo_config.yaml")
    summary = [f"resolved config: {config_path}"]

    clock = StageClock()
    clock.stage(1, "check the model; build the tiny vision transformers", "models")
    summary += prepare_tiny_models(cfg, out)

    start = clock.stage(2, "synthetic COCO-Stuff data set", "synthetic data")
    syn = cfg.synthetic
    if synthetic_matches(cfg.data.root, syn.num_train, syn.num_val, syn.width, syn.height, syn.seed):
        print(f"    reusing {cfg.data.root}")
    else:
        write_synthetic_coco_stuff(cfg.data.root, syn.num_train, syn.num_val, syn.width, syn.height, syn.seed)
        print(f"    wrote {syn.num_train} train + {syn.num_val} val images to {cfg.data.root} "
              f"({time.perf_counter() - start:.1f} s)")
    summary.append(f"data set (official layout): {cfg.data.root}")
    index = read_split(resolve_split_paths(cfg.data, cfg.data.val_split))
    dataset = SplitDataset(index, cfg.data.resolution, train=False, labels="stuffthingmaps")
    preview = save_data_preview([dataset[i] for i in range(min(4, len(dataset)))], out / "data_preview.png",
                                title=f"{cfg.data.val_split} split at {cfg.data.resolution} px "
                                      f"(resized, centre-cropped)")
    summary.append(f"picture of the data: {preview}")

    clock.stage(3, "doctor: preflight of the data set", "doctor")
    passed, report = run_doctor(cfg.data, progress=False)
    print("    " + report.replace("\n", "\n    "))
    if not passed:
        print("demo: the data set did not pass the doctor", file=sys.stderr)
        return 1

    start = clock.stage(4, "load the model through the real from_pretrained path", "load the model")
    parts = load_sd_components(cfg.model.pretrained, cfg.model.revision, cfg.model.variant,
                               TORCH_DTYPES[cfg.model.dtype.value])
    sizes = {name: sum(p.numel() for p in getattr(parts, name).parameters())
             for name in ("vae", "unet", "text_encoder")}
    print("    " + ", ".join(f"{name} {n / 1e6:.2f} M parameters" for name, n in sizes.items())
          + f" ({time.perf_counter() - start:.1f} s)")

    clock.stage(5, "fit the layout PCA on the training split", "fit the PCA")
    _run("fit-pca", argv)
    summary.append(f"PCA and its explained-variance plot: {Path(cfg.layout.pca_dir) / 'explained_variance.png'}")

    clock.stage(6, "cache layouts and latents", "encode layouts")
    _run("encode-layouts", argv)
    pictures = sorted((out / "cache" / cfg.data.val_split / "pictures").glob("*.png"))
    summary.append(f"layout cache (datasets shards): {out / 'cache'}")
    if pictures:
        summary.append(f"layout pictures: {pictures[0].parent} ({len(pictures)} images, e.g. {pictures[0].name})")

    clock.stage(7, "the layouts of every backbone for the same images (SD, DINOv2, DINO, CLIP, SD+DINOv2, any ViT)",
                "compare backbones")
    _run("compare-backbones", [*argv, "compare.train_steps=0"])
    summary.append(f"every backbone's layouts of the same images: {Path(cfg.compare.out) / 'comparison.png'} "
                   f"(table: comparison.md)")

    clock.stage(8, f"train the ControlNet ({cfg.train.max_train_steps} steps, two processes)", "train the ControlNet")
    # An earlier demo's run is continued (already at its last step, it only writes the final ControlNet).
    _run("train", [*argv, "train.resume_from_checkpoint=latest"], launcher=_two_processes())
    checkpoints = sorted(out.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    grids = sorted((out / "validation").glob("*.png"))
    summary.append(f"checkpoints: {', '.join(str(c) for c in checkpoints)}")
    if grids:
        summary.append(f"validation grids: {grids[-1].parent} (latest {grids[-1].name})")
    summary.append(f"trained ControlNet (diffusers format + lumen.json): {out / 'controlnet'}")
    summary.append(f"training logs (tensorboard --logdir {out / 'logs'}): {out / 'logs'}")

    clock.stage(9, "sample with prompt edits (the layout fixes the scene, the prompt its look)", "sample")
    _run("sample", argv)
    summary.append(f"prompt-edit grids: {sorted(Path(cfg.sample.out_dir).glob('*_grid.png'))[0]} "
                   f"(and the other sources beside it; metadata in samples.json)")

    clock.stage(10, "sweep the number of layout components (fewer: more diversity, less fidelity)",
                "component sweep")
    sweep_dir = out / "samples_sweep"
    sweep = [k for k in (1, 3, 5, 10, 20) if k <= cfg.pca.n_components]
    _run("sample", [*argv, f"sample.out_dir={sweep_dir}",
                               f"sample.sweep_components=[{','.join(map(str, sweep))}]",
                               "sample.num_images_per_prompt=2", "sample.prompts=[]"])
    summary.append(f"component sweep: {sorted(sweep_dir.glob('*_sweep.png'))[0]}")

    clock.stage(11, "evaluate the sweep: layout fidelity and diversity per number of components", "evaluate")
    _run("evaluate", [*argv, f"evaluate.samples={sweep_dir / 'samples.json'}"])
    summary.append(f"evaluation table: {Path(cfg.evaluate.out) / 'metrics.md'}")

    clock.stop()
    print("\nDemo finished. Where things are:")
    for line in summary:
        print(f"  - {line}")
    setup = os.environ.get("LUMEN_DEMO_SETUP_SECONDS")
    print("\nTime per stage:\n" + clock.report(float(setup) if setup else None))
    return 0
