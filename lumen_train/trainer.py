"""The ControlNet trainer: build everything from the config, then a short loop of named steps.

Exact resume (bitwise on the CPU): the data order comes from accelerate's seedable sampler
(``set_epoch`` every epoch, ``skip_first_batches`` into a partial epoch), captions are drawn from
(seed, epoch, index), and every random draw of a step (latent sample, noise, timesteps) comes from one
``torch.Generator`` per process whose state is saved in each checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
from tqdm import tqdm

from lumen.build import build_extractor, cache_settings, layout_dtype, layout_settings, split_dataset
from lumen.config import LumenConfig, save_config, to_yaml
from lumen.cpu.memory import keep_freed_cpu_memory
from lumen.cpu.threads import apply_cpu_threads
from lumen.data.dataset import collate_skipping_bad
from lumen.data.problems import ProblemLog, TooManyBadInputs
from lumen.data.sources import get_data_source
from lumen.data.streaming import StreamingTrainDataset
from lumen.errors import LumenError, MissingDependencyError, writing
from lumen.layout.cache import INDEX_FILE, load_cache
from lumen.layout.cached_dataset import CachedLayoutDataset, collate_cached
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import SettingsMismatchError, check_pca_matches
from lumen.pretrained import MIXED_PRECISION_DTYPES, TORCH_DTYPES, dtype_name, load_part, load_sd_components
from lumen.sampling.source_images import file_source
from lumen.training.controlnet import controlnet_from_unet, load_controlnet, lumen_metadata, write_lumen_json
from lumen.training.task import ControlNetTask, build_optimizer
from lumen_train.cache_over_processes import verify_cache_split
from lumen_train.checkpointing import (
    checkpoint_folders,
    checkpoint_problems,
    checkpoint_step,
    complete_checkpoints,
    load_checkpoint,
    remove_leftovers,
    resolve_checkpoint,
    save_checkpoint,
)
from lumen_train.distributed import close_processes, lock_folder_on_main, make_accelerator
from lumen_train.validation import build_validation_set, files_validation_set, run_validation, validation_metrics

logger = logging.getLogger(__name__)


class TrainingDivergedError(LumenError, RuntimeError):
    """The loss became NaN or infinite."""


class OutputDirInUseError(LumenError, FileExistsError):
    """output_dir holds another run's checkpoints or final ControlNet, and the run was not asked to resume."""


@dataclass
class Health:
    """What ``Trainer.check_health`` found: each step's loss since the last check (averaged over processes), and
    whether any process was asked to stop."""

    losses: list[float]
    stop_requested: bool


# What a training run writes in output_dir besides its checkpoints (removed by train.overwrite_output_dir=true).
RUN_OUTPUTS = ("controlnet", "controlnet_ema", "validation", "logs")


def check_output_dir(out: Path, resume_from: Optional[Path], overwrite: bool, resume_asked: bool = False) -> list[Path]:
    """Refuse to train into a folder holding another run's results; returns what ``overwrite`` removes.

    A fresh run stops when ``out`` holds checkpoints or a final ControlNet (its pruning and ``latest`` would
    mix the two runs). A run resumed from checkpoint-k stops when ``out`` holds complete checkpoints after k
    (they belong to the run being abandoned; damaged ones, which ``latest`` skipped, are written over when the
    run reaches their step). ``overwrite`` removes those instead."""
    step = checkpoint_step(resume_from) if resume_from is not None and resume_from.parent == out else None
    if resume_from is None:
        others = checkpoint_folders(out) + [out / n for n in ("controlnet", "controlnet_ema") if (out / n).is_dir()]
    else:
        others = [p for p in complete_checkpoints(out) if step is not None and checkpoint_step(p) > step]
    if others and not overwrite and resume_asked and resume_from is None:
        # Asked to resume, but every checkpoint is damaged: resuming again cannot help.
        damaged = "; ".join(f"{p.name}: {', '.join(checkpoint_problems(p))}" for p in others
                            if checkpoint_step(p) is not None)
        found = (f"every checkpoint there is damaged ({damaged})" if damaged else
                 f"it holds no checkpoint, only a finished run's {', '.join(p.name for p in others)}")
        raise OutputDirInUseError(
            f"nothing to resume in output_dir={out}: {found}. Start afresh with train.overwrite_output_dir=true "
            f"(deletes them), or choose another output_dir."
        )
    if others and not overwrite:
        what = "a fresh run" if resume_from is None else f"a run resumed from {resume_from.name}"
        raise OutputDirInUseError(
            f"output_dir={out} holds another run's results ({', '.join(p.name for p in others)}) and this is "
            f"{what}: its checkpoints would be mixed with them. Resume it (train.resume_from_checkpoint=latest), "
            f"choose another output_dir, or delete them with train.overwrite_output_dir=true."
        )
    if others and resume_from is None:
        others += [out / n for n in RUN_OUTPUTS if (out / n).exists() and out / n not in others]
    return others


def _flat_config(cfg: LumenConfig) -> dict[str, Any]:
    """Trackers want a flat dict of scalars (TensorBoard rejects lists)."""
    import yaml

    flat: dict[str, Any] = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(yaml.safe_load(to_yaml(cfg)), "")
    return flat


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a request to stop at the next step boundary (a second
    Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("received %s: stopping after the current step", signal.Signals(signum).name)


class Trainer:
    """Build everything from the config (``__init__``), ``train()``, then ``close()`` (also on failure).

    ``train()`` returns True when the run reached its last step and False when it stopped on request
    (Ctrl-C / SIGTERM) after saving a checkpoint.
    """

    def __init__(self, cfg: LumenConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.lock = None
        self.accelerator = None
        try:
            self._build(cfg)
        except BaseException:
            self.close()  # a refusal while building still ends the process group and frees the folder
            raise

    def _build(self, cfg: LumenConfig) -> None:
        t = cfg.train
        # Tar shards without the cache are streamed: each process its own shards, no epoch length.
        self.streaming = get_data_source(cfg.data.source).streams and not t.use_cache
        self.images_read = 0  # images (usable or not) this process has taken from the data
        if self.streaming and t.max_train_steps is None:
            raise LumenError("data.source=webdataset with train.use_cache=false streams the shards, whose length "
                             "is unknown: set train.max_train_steps (or train from the cache)")

        # 1. Accelerator: precision, accumulation, trackers, seedable data order.
        if t.mixed_precision.value == "fp16" and not torch.cuda.is_available():
            # accelerate runs no fp16 autocast on the CPU: the float32 ControlNet would meet float16 tensors.
            raise LumenError("train.mixed_precision=fp16 needs a GPU, and none is visible. On the CPU use "
                             "train.mixed_precision=bf16 or no.")
        self.accelerator = make_accelerator(
            mixed_precision=t.mixed_precision.value,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with=None if t.report_to.value == "none" else t.report_to.value,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=cfg.train.logging_dir),
            # Pinned batches go to the GPU asynchronously (the copy overlaps the step before).
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=self._pin_memory(cfg)),
        )
        acc = self.accelerator
        if t.ema and acc.distributed_type == DistributedType.FSDP:  # before any model is loaded
            raise LumenError("train.ema=true does not work with FSDP (each process holds a shard of the weights): "
                             "train with DDP or DeepSpeed ZeRO-2 (configs/accelerate/), or set train.ema=false")
        logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file is too much

        # 2. The output folder: this run's alone (a lock for its lifetime), holding no other run's results.
        self.lock = lock_folder_on_main(acc, self.out, "lumen train")
        self.resume_from = resolve_checkpoint(self.out, t.resume_from_checkpoint) if t.resume_from_checkpoint else None
        stale = check_output_dir(self.out, self.resume_from, t.overwrite_output_dir,
                                 resume_asked=t.resume_from_checkpoint is not None)
        if acc.is_main_process:
            remove_leftovers(self.out)
            for path in stale:
                logger.warning("train.overwrite_output_dir=true: removing %s", path)
                shutil.rmtree(path)
            # The resolved config of this run; a resumed run records its own beside the first.
            name = "config.yaml" if self.resume_from is None else f"config-resumed-from-{self.resume_from.name}.yaml"
            save_config(cfg, self.out, name)
        acc.wait_for_everyone()
        if acc.device.type == "cpu":
            keep_freed_cpu_memory()  # every step reallocates the same activations: skip the page faults
        logger.info("training on %s, world size %d, mixed precision %s", acc.device, acc.num_processes,
                    acc.mixed_precision)
        if t.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        # 3. The PCA the layouts come from, checked against the config's layout settings (in the dtype the
        # PCA's features were computed in: the cache was made in it too).
        self.pca = load_pca(cfg.layout.pca_dir)
        self.layout_dtype = layout_dtype(cfg, acc.device, self.pca)
        self.settings = layout_settings(cfg, self.layout_dtype)
        check_pca_matches(self.pca, self.settings, cfg.layout.pca_dir)
        self.metadata = lumen_metadata(self.settings, self.pca, cfg.layout.pca_dir)

        # 4. Frozen parts in the compute dtype; the ControlNet's master weights stay in float32.
        self.weight_dtype = MIXED_PRECISION_DTYPES[acc.mixed_precision]
        parts = load_sd_components(cfg.model.pretrained, cfg.model.revision, cfg.model.variant,
                                   TORCH_DTYPES[cfg.model.dtype.value])
        place(parts.unet, acc.device, self.weight_dtype)
        place(parts.text_encoder, acc.device, self.weight_dtype)
        vae_dtype = torch.float32 if (acc.mixed_precision == "fp16" and t.upcast_vae) else self.weight_dtype
        place(parts.vae, acc.device, vae_dtype)
        apply_cpu_threads(cfg.cpu_threads, parts.unet, acc.device)
        self.parts = parts
        extractor = build_extractor(cfg, parts, dtype=self.layout_dtype)
        encoder = LayoutEncoder(self.pca)
        self.extractor, self.encoder = extractor, encoder

        # 5. The ControlNet: new from the UNet (N conditioning channels) or continued. Its conditioning
        # embedding is initialised from torch's global generator: seed it, so a run is repeatable.
        set_seed(cfg.seed)
        n = self.pca.n_components
        if t.controlnet:
            controlnet = load_controlnet(t.controlnet, conditioning_channels=n)
        else:
            controlnet = controlnet_from_unet(place(parts.unet, acc.device, torch.float32), conditioning_channels=n)
            place(parts.unet, acc.device, self.weight_dtype)
        place(controlnet, acc.device, torch.float32).train()
        if t.gradient_checkpointing:
            controlnet.enable_gradient_checkpointing()
        if t.attention.value == "xformers":
            try:
                import xformers  # noqa: F401
            except ImportError:
                raise MissingDependencyError("train.attention=xformers needs the xformers package: "
                                             "pip install -e '.[xformers]' (or train.attention=sdpa)") from None
            parts.unet.enable_xformers_memory_efficient_attention()
            controlnet.enable_xformers_memory_efficient_attention()
        if t.channels_last:
            controlnet.to(memory_format=torch.channels_last)
            parts.unet.to(memory_format=torch.channels_last)
        if t.compile:
            # In place: the module keeps its type and its state_dict keys, so checkpoints, EMA and
            # save_pretrained see the ControlNet as it is.
            controlnet.compile(mode=t.compile_mode.value)
        # The frozen UNet is compiled for the training forward only (a wrapper sharing its weights): layout
        # extraction (hooks and an early exit) and validation sampling use it eagerly.
        training_unet = torch.compile(parts.unet, mode=t.compile_mode.value) if t.compile_unet else parts.unet

        # 6. Data: the cache by default, or images with layouts computed every step (by the training UNet,
        # so its dtype must be the one the PCA's layouts were made in).
        if t.use_cache:
            rows = load_cache(self.out / "cache", cfg.data.train_split, cache_settings(cfg, self.pca))
            if t.verify_cache:  # load_cache compares sizes; a changed byte needs the checksums
                verify_cache_split(acc, self.out / "cache", cfg.data.train_split)
            self.dataset = CachedLayoutDataset(rows, train=True, seed=cfg.seed,
                                               empty_prompt_probability=t.empty_prompt_probability)
            collate = collate_cached
        elif self.streaming:
            self._check_extraction_dtype("train.use_cache=false computes the training layouts")
            self.dataset = self._streaming_dataset(cfg, acc)
            collate = collate_skipping_bad
        else:
            self._check_extraction_dtype("train.use_cache=false computes the training layouts")
            self.dataset = split_dataset(cfg, cfg.data.train_split, train=True)
            collate = collate_skipping_bad
        self.problems = ProblemLog(cfg.data.train_split, cfg.data.max_bad_fraction)
        workers = cfg.data.num_workers
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=t.batch_size, shuffle=not self.streaming, num_workers=workers,
            collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed),
            pin_memory=self._pin_memory(cfg),
            **(dict(prefetch_factor=cfg.data.prefetch_factor, persistent_workers=cfg.data.persistent_workers)
               if workers > 0 else {}))
        self.task = ControlNetTask(parts.vae, training_unet, parts.text_encoder, parts.tokenizer,
                                   parts.noise_scheduler, cfg.data.resolution, extractor=extractor, encoder=encoder,
                                   weight_dtype=self.weight_dtype)

        # 7. Optimizer and LR schedule (the prepared scheduler steps once per process: scale its lengths).
        optimizer = build_optimizer(controlnet.parameters(), t.learning_rate, (t.adam_beta1, t.adam_beta2),
                                    t.adam_weight_decay, t.adam_epsilon, use_8bit=t.use_8bit_adam)
        if self.streaming:  # an endless stream: one "epoch" of train.max_train_steps
            self.steps_per_epoch = t.max_train_steps
        else:
            batches_per_process = math.ceil(len(loader) / acc.num_processes)
            self.steps_per_epoch = max(1, math.ceil(batches_per_process / t.gradient_accumulation_steps))
        self.max_steps = t.max_train_steps if t.max_train_steps is not None else (
            t.num_train_epochs * self.steps_per_epoch)
        self.num_epochs = math.ceil(self.max_steps / self.steps_per_epoch)
        from diffusers.optimization import get_scheduler

        lr_scheduler = get_scheduler(t.lr_scheduler.value, optimizer,
                                     num_warmup_steps=t.lr_warmup_steps * acc.num_processes,
                                     num_training_steps=self.max_steps * acc.num_processes)
        if self.streaming:
            # Not prepared: accelerate would give every process a slice of every batch of one stream; here each
            # process streams its own shards.
            self.controlnet, self.optimizer, self.lr_scheduler = acc.prepare(controlnet, optimizer, lr_scheduler)
            self.loader = loader
        else:
            self.controlnet, self.optimizer, self.loader, self.lr_scheduler = acc.prepare(
                controlnet, optimizer, loader, lr_scheduler)

        # 8. EMA (optional), checkpoint hooks, the step generator, trackers, validation set.
        self.ema = None
        if t.ema:
            from diffusers import ControlNetModel
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(acc.unwrap_model(self.controlnet).parameters(), decay=t.ema_decay,
                                model_cls=ControlNetModel, model_config=acc.unwrap_model(self.controlnet).config)
            self.ema.to(acc.device)
            acc.register_for_checkpointing(self.ema)
        acc.register_save_state_pre_hook(self._save_hook)
        acc.register_load_state_pre_hook(self._load_hook)
        self.generator = torch.Generator().manual_seed(cfg.seed + acc.process_index)
        if acc.is_main_process and t.report_to.value != "none":
            acc.init_trackers(cfg.train.tracker_project_name, config=_flat_config(cfg))
        self.validation_set = None
        if cfg.validation.steps > 0 and cfg.validation.num_images > 0:
            self.validation_set = self._build_validation_set()
        # 9. The state of the loop: the step, the last gradient norm, the steps since the last log.
        self.global_step = 0
        self.grad_norm: Optional[torch.Tensor] = None
        self.window_losses: list[torch.Tensor] = []  # one per optimizer step since the last health check
        self.window_images, self.window_start = 0, time.perf_counter()
        self.stop = StopRequest()
        self.record: dict[str, Any] = {"num_processes": acc.num_processes, "steps": []}

    @staticmethod
    def _streaming_dataset(cfg: LumenConfig, acc) -> StreamingTrainDataset:
        """The training split's shards, this process's share of them (``lumen.data.streaming``)."""
        stream = get_data_source(cfg.data.source).open_stream(cfg.data, cfg.data.train_split, True)
        if len(stream.urls) < acc.num_processes:
            raise LumenError(f"split '{cfg.data.train_split}' has {len(stream.urls)} tar shard(s) for "
                             f"{acc.num_processes} processes: each process streams its own shards, so write at least "
                             f"one per process (or train from the cache)")
        return StreamingTrainDataset(stream, cfg.data.resolution, acc.process_index, acc.num_processes, cfg.seed,
                                     cfg.train.empty_prompt_probability)

    @staticmethod
    def _pin_memory(cfg: LumenConfig) -> bool:
        """``data.pin_memory``, or by default: when training on a GPU."""
        return cfg.data.pin_memory if cfg.data.pin_memory is not None else torch.cuda.is_available()

    def _check_extraction_dtype(self, what: str) -> None:
        """Layouts computed by the training UNet must be made in the dtype of the PCA's layouts."""
        if self.extractor.dtype != self.layout_dtype:
            raise SettingsMismatchError(
                f"{what} with the training UNet in {dtype_name(self.extractor.dtype)} "
                f"(train.mixed_precision={self.cfg.train.mixed_precision.value}), but the PCA's layouts were made "
                f"in {dtype_name(self.layout_dtype)} ({self.cfg.layout.pca_dir}/pca.json): layouts would differ "
                f"from the ones the ControlNet is trained and sampled with. Train from the cache "
                f"(train.use_cache=true, with the val split encoded), or fit the PCA with "
                f"layout.dtype={dtype_name(self.weight_dtype)}."
            )

    def _build_validation_set(self):
        cfg = self.cfg
        if cfg.validation.images:
            self._check_extraction_dtype("validation computes the layouts of validation.images")
            captions = cfg.validation.captions or [""] * len(cfg.validation.images)
            sources = [file_source(path, cfg.data.resolution, caption, key="validation.images")
                       for path, caption in list(zip(cfg.validation.images, captions))[:cfg.validation.num_images]]
            return files_validation_set(sources, self.extractor, self.encoder)
        val = split_dataset(cfg, cfg.data.val_split, head=4 * cfg.validation.num_images)
        cached = self.out / "cache" / cfg.data.val_split / INDEX_FILE
        if cfg.train.use_cache and cached.is_file():
            # The cached layouts are exactly the ones training reads.
            rows = load_cache(self.out / "cache", cfg.data.val_split, cache_settings(cfg, self.pca))
            if cfg.train.verify_cache:
                verify_cache_split(self.accelerator, self.out / "cache", cfg.data.val_split)
            ids = rows[:]["image_id"].tolist()
            wanted = {r.image_id for r in val.index.records[:4 * cfg.validation.num_images]}
            layouts = {i: rows[k]["layout"] for k, i in enumerate(ids) if i in wanted}
            return build_validation_set(val, cfg.validation.num_images, cached_layouts=layouts)
        self._check_extraction_dtype("validation computes the layouts of the val split (not in the cache)")
        return build_validation_set(val, cfg.validation.num_images, self.extractor, self.encoder)

    # -- checkpoint hooks: the ControlNet is stored in diffusers format inside each checkpoint ---------------
    @property
    def _sharded(self) -> bool:
        """Whether the prepared ControlNet is wrapped by FSDP or DeepSpeed (accelerate saves and loads its
        state itself there; Lumen adds the diffusers copy)."""
        return self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def _full_controlnet(self, model) -> Optional[torch.nn.Module]:
        """The ControlNet with all its weights, on the main process (None elsewhere). Every process must call
        it: under FSDP (and DeepSpeed ZeRO-3) gathering the shards is a collective."""
        acc = self.accelerator
        if not self._sharded:
            return acc.unwrap_model(model) if acc.is_main_process else None
        state = acc.get_state_dict(model)
        if not acc.is_main_process:
            return None
        from diffusers import ControlNetModel

        full = ControlNetModel.from_config(acc.unwrap_model(model).config)
        full.load_state_dict(state)
        return full

    def _save_hook(self, models, weights, output_dir) -> None:
        for model in models:
            full = self._full_controlnet(model)
            if full is not None:
                full.save_pretrained(Path(output_dir) / "controlnet")
                write_lumen_json(Path(output_dir) / "controlnet", self.metadata)
        while weights:  # saved above: accelerate must not write a second copy
            weights.pop()

    def _load_hook(self, models, input_dir) -> None:
        from diffusers import ControlNetModel

        if self._sharded:  # accelerate restores FSDP / DeepSpeed models from its own files
            return
        folder = Path(input_dir) / "controlnet"
        while models:
            model = models.pop()
            loaded = load_part("ControlNet", folder, lambda: ControlNetModel.from_pretrained(folder))
            self.accelerator.unwrap_model(model).load_state_dict(loaded.state_dict())

    # -- the loop ------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One micro-batch: forward, backward, and (when gradients sync) clip + optimizer + LR step."""
        acc = self.accelerator
        with acc.accumulate(self.controlnet):
            if "pixel_values" in batch and batch["pixel_values"] is None:
                # Every image of this micro-batch was unusable. A zero loss over all parameters keeps the
                # processes' gradient all-reduce in step.
                loss = sum(p.sum() for p in self.controlnet.parameters()) * 0.0
            else:
                keep = self.components_to_keep(len(batch["caption"]))
                loss = self.task.forward(self.controlnet, batch, self.generator, n_components=keep).loss
            acc.backward(loss)
            if acc.sync_gradients:
                self.grad_norm = acc.clip_grad_norm_(self.controlnet.parameters(), self.cfg.train.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def components_to_keep(self, batch_size: int) -> Optional[list[Optional[int]]]:
        """Component dropout: per sample, with probability p keep only the first k ~ U{1..N} components.
        Drawn from the step generator (so a resumed run draws alike); None when the option is off."""
        p = self.cfg.train.component_dropout
        if p <= 0:
            return None
        n = self.pca.n_components
        drop = torch.rand(batch_size, generator=self.generator) < p
        ks = torch.randint(1, n + 1, (batch_size,), generator=self.generator)
        return [int(k) if d else None for d, k in zip(drop.tolist(), ks.tolist())]

    def resume(self) -> tuple[int, int]:
        """Load ``self.resume_from`` (if any); returns the first epoch and the batches to skip in it."""
        cfg, acc = self.cfg, self.accelerator
        if self.resume_from is None:
            if cfg.train.resume_from_checkpoint:
                logger.info("no checkpoint in %s yet: starting from scratch", self.out)
            return 0, 0
        self.global_step, written_by = load_checkpoint(acc, self.resume_from, self.generator)
        if written_by != acc.num_processes:
            # The prepared scheduler steps once per process and optimizer step: continue it at this step.
            scheduler = self.lr_scheduler.scheduler
            scheduler.last_epoch = self.global_step * acc.num_processes
            for group, lr in zip(self.optimizer.param_groups, [base * fn(scheduler.last_epoch) for base, fn in
                                                              zip(scheduler.base_lrs, scheduler.lr_lambdas)]):
                group["lr"] = lr
            scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
            logger.warning("%s was written by %d process(es) and this run has %d: weights, optimizer and LR "
                           "schedule continue from step %d, but the data order and the random draws from here on "
                           "are not the ones of the original run", self.resume_from, written_by,
                           acc.num_processes, self.global_step)
        first_epoch = self.global_step // self.steps_per_epoch
        skip_batches = (self.global_step % self.steps_per_epoch) * cfg.train.gradient_accumulation_steps
        logger.info("resumed from %s at step %d (epoch %d, skipping %d batches)", self.resume_from,
                    self.global_step, first_epoch, skip_batches)
        return first_epoch, skip_batches

    def train(self) -> bool:
        """Train to ``max_steps``; True when finished (the final ControlNet written), False when stopped on
        request (a checkpoint of the step reached written).

        Each optimizer step: the step itself -> EMA -> every ``train.log_every`` steps (and at the last one) the
        health check and the log -> checkpoint / validation -> the stop, if one was asked for."""
        cfg, acc = self.cfg, self.accelerator
        first_epoch, skip_batches = self.resume()
        if cfg.train.checkpoint_on_interrupt:
            self.stop.install()
        bar = tqdm(total=self.max_steps, initial=min(self.global_step, self.max_steps), desc="train", unit="step",
                   disable=not acc.is_main_process)
        micro_losses, self.window_start = [], time.perf_counter()
        try:
            for epoch in range(first_epoch, self.num_epochs):
                if self.global_step >= self.max_steps:
                    break
                if not self.streaming:
                    self.loader.set_epoch(epoch)
                    self.dataset.set_epoch(epoch)
                loader = acc.skip_first_batches(self.loader, skip_batches) if epoch == first_epoch else self.loader
                for batch in loader:
                    self._note_bad(batch)
                    self.images_read += len(batch["caption"]) + len(batch["bad"])
                    micro_losses.append(self.train_step(batch))
                    self.window_images += len(batch["caption"])
                    if cfg.train.record_batches:
                        self.record["steps"].append(batch["image_id"].tolist())
                    if not acc.sync_gradients:
                        continue
                    self.global_step += 1
                    self.window_losses.append(torch.stack(micro_losses).float().mean())  # stays on the device
                    micro_losses = []
                    bar.update(1)
                    if self.ema is not None:
                        self.ema.step(acc.unwrap_model(self.controlnet).parameters())
                    stop = False
                    if self.global_step % cfg.train.log_every == 0 or self.global_step >= self.max_steps:
                        health = self.check_health()
                        self.log(health, bar)
                        stop = health.stop_requested
                    if stop:
                        self.save()
                        logger.warning("stopped on request at step %d; checkpoint-%d saved. Run the same command "
                                       "with train.resume_from_checkpoint=latest to continue", self.global_step,
                                       self.global_step)
                        return False
                    if self.global_step % cfg.train.checkpointing_steps == 0:
                        self.save()
                    if self.validation_set is not None and self.global_step % cfg.validation.steps == 0:
                        self.validate()
                    if self.global_step >= self.max_steps:
                        break
        finally:
            bar.close()
            self.stop.uninstall()
        self.finish()
        return True

    def save(self) -> Path:
        """``checkpoint-<global step>`` (every process takes part)."""
        return save_checkpoint(self.accelerator, self.out, self.global_step, self.generator,
                               self.cfg.train.checkpoints_total_limit)

    def _note_bad(self, batch) -> None:
        for path, reason in batch["bad"]:
            self.problems.record(path, reason)

    def _stop_requested(self) -> bool:
        """Whether this process was asked to stop (Ctrl-C / SIGTERM); ``check_health`` combines all processes'."""
        return self.stop.requested

    def check_health(self) -> Health:
        """One collective for the steps since the last check: their losses, the unusable images and the stop
        requests of every process. Raises on a NaN or infinite loss (naming its step) and on too many unusable
        images, on every process alike."""
        acc, n = self.accelerator, self.accelerator.num_processes
        local = torch.cat([torch.stack(self.window_losses).reshape(-1),
                           torch.tensor([float(self.images_read), float(len(self.problems)),
                                         float(self._stop_requested())], device=self.window_losses[0].device)])
        total = (acc.reduce(local.to(acc.device), reduction="sum") if n > 1 else local).tolist()
        losses, read, bad, stops = [v / n for v in total[:-3]], total[-3], total[-2], total[-1]
        first_step = self.global_step - len(losses) + 1
        diverged = next((first_step + i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if diverged is not None:
            raise TrainingDivergedError(
                f"the loss is {losses[diverged - first_step]} at step {diverged}. Likely causes: the VAE overflowing "
                f"in fp16 (train.mixed_precision=bf16, or keep train.upcast_vae=true), or a learning rate too high "
                f"(train.learning_rate={self.cfg.train.learning_rate}). The last good checkpoint is kept; resume "
                f"from it with train.resume_from_checkpoint=latest after changing the setting."
            )
        # Unusable images, counted over all processes: every process stops alike past the limit.
        # (Of the split's images, or of those read so far from a stream, whose size is unknown.)
        total_images = int(read) if self.streaming else len(self.dataset)
        if bad / max(total_images, 1) > self.cfg.data.max_bad_fraction:
            raise TooManyBadInputs(
                f"{int(bad)} of {total_images} training images {'read so far ' if self.streaming else ''}are "
                f"unusable (all processes together), more than data.max_bad_fraction="
                f"{self.cfg.data.max_bad_fraction}. This process met:\n"
                + self.problems.summary(self.images_read if self.streaming else len(self.dataset))
                + "\nRun lumen doctor on the data set.")
        return Health(losses=losses, stop_requested=stops > 0)

    def log(self, health: Health, bar) -> None:
        """Loss (mean over the steps since the last log, their accumulation steps and every process), learning
        rate, gradient norm, images/s and peak memory, to the trackers and the progress bar."""
        acc = self.accelerator
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        if torch.cuda.is_available():
            memory = torch.cuda.max_memory_allocated() / 2**30
        else:
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB -> GB
        logs = {"loss": sum(health.losses) / len(health.losses), "lr": self.lr_scheduler.get_last_lr()[0],
                "grad_norm": float(self.grad_norm) if self.grad_norm is not None else float("nan"),
                "images_per_s": self.window_images * acc.num_processes / seconds, "peak_memory_gb": memory}
        acc.log(logs, step=self.global_step)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        self.window_losses, self.window_images, self.window_start = [], 0, time.perf_counter()

    def validate(self) -> Optional[Path]:
        cfg = self.cfg.validation
        if self._sharded:  # gathered on the main process, which samples alone
            controlnet = self._full_controlnet(self.controlnet)
            if controlnet is not None:
                controlnet.to(self.accelerator.device)
        else:
            controlnet = self.accelerator.unwrap_model(self.controlnet)
        result = run_validation(self.accelerator, self.parts, controlnet, self.validation_set,
                                list(cfg.prompt_edits), self.global_step, self.out / "validation",
                                cfg.num_inference_steps, cfg.guidance_scale, cfg.conditioning_scale, cfg.seed,
                                main_only=self._sharded)
        if result is None:
            return None
        path, samples = result
        logger.info("validation grid: %s", path)
        if cfg.metrics:
            scores = validation_metrics(self.extractor, self.encoder, self.validation_set, samples)
            self.accelerator.log({f"validation/{name}": value for name, value in scores.items()}, step=self.global_step)
            logger.info("validation metrics: %s", ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
        return path

    def finish(self) -> Path:
        """Save the final ControlNet (and its EMA) in diffusers format with lumen.json."""
        acc = self.accelerator
        acc.wait_for_everyone()
        final = self.out / "controlnet"
        controlnet = self._full_controlnet(self.controlnet)
        if acc.is_main_process:
            metadata = self.metadata
            with writing(final, "the final ControlNet"):
                controlnet.save_pretrained(final)
                write_lumen_json(final, metadata)
                if self.ema is not None:
                    self.ema.store(controlnet.parameters())
                    self.ema.copy_to(controlnet.parameters())
                    controlnet.save_pretrained(self.out / "controlnet_ema")
                    write_lumen_json(self.out / "controlnet_ema", metadata)
                    self.ema.restore(controlnet.parameters())
            print(f"final ControlNet: {final} (step {self.global_step}); "
                  f"{self.problems.summary(self.images_read if self.streaming else len(self.dataset))}")
        if self.cfg.train.record_batches:
            self.record["weights_fingerprint"] = fingerprint(acc.unwrap_model(self.controlnet))
            (self.out / "logs").mkdir(parents=True, exist_ok=True)
            (self.out / "logs" / f"rank-{acc.process_index}.json").write_text(json.dumps(self.record))
        acc.wait_for_everyone()
        return final

    def close(self) -> None:
        """End trackers and the process group, release the output folder: after a finished, stopped or failed
        run alike (called from a ``finally``, or by leaving a ``with Trainer(cfg) as trainer:`` block)."""
        try:
            if self.accelerator is not None:
                # Drop the prepared objects first: the DDP wrapper holds the process group (see close_processes).
                if getattr(self, "controlnet", None) is not None:
                    self.controlnet = self.accelerator.unwrap_model(self.controlnet)
                self.optimizer = self.loader = self.lr_scheduler = None
                close_processes(self.accelerator)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move a module; cast it only when its dtype differs (diffusers warns on every dtype cast)."""
    module.to(device)
    if next(module.parameters()).dtype != dtype:
        module.to(dtype)
    return module


def fingerprint(model: torch.nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
