"""Cache layouts and VAE latents: lumen encode-layouts CONFIG.yaml [more.yaml ...] [key=value ...]

For every image of each split in encode.splits: the neural layout (all PCA components, float16, at the
feature grid), the VAE posterior mean and std, the image id and its captions, written to output_dir/cache/
in shards of encode.shard_size images. Under lumen launch the shards are spread over the processes.
A killed run is resumed by running the same command: finished shards whose files still match their
recorded checksums are kept, damaged ones are named and encoded again. A cache made under other settings or
another PCA is refused. A split is refused as soon as more of its images are unusable than
data.max_bad_fraction allows. encode.visualize=K writes pictures of the first K layouts of each split.
"""

from __future__ import annotations

from pathlib import Path

from lumen.build import build_extractor, cache_settings, layout_dtype, layout_settings, load_components, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.data.sources import get_data_source
from lumen.layout.cache import check_cache_settings, load_cache, write_cache_settings, write_layout_pictures
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import check_pca_matches
from lumen_train.cache_over_processes import encode_split, encode_stream_split
from lumen_train.distributed import close_processes, lock_folder_on_main, make_accelerator

PROG = "lumen encode-layouts"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "encode")


def encode_layouts(cfg: LumenConfig) -> Path:
    accelerator = make_accelerator()
    out = Path(cfg.output_dir) / "cache"
    pca = load_pca(cfg.layout.pca_dir)
    dtype = layout_dtype(cfg, accelerator.device, pca)
    check_pca_matches(pca, layout_settings(cfg, dtype), cfg.layout.pca_dir)
    settings = cache_settings(cfg, pca)
    check_cache_settings(out, settings)  # on every process: a refusal stops all of them alike
    lock = lock_folder_on_main(accelerator, out, "lumen encode-layouts")
    try:
        if accelerator.is_main_process:
            write_cache_settings(out, settings)
            save_config(cfg, out)
        accelerator.wait_for_everyone()
        parts = load_components(cfg, accelerator.device, dtype)
        extractor = build_extractor(cfg, parts)
        encoder = LayoutEncoder(pca)  # the cache keeps every component; truncation happens where layouts are used
        source = get_data_source(cfg.data.source)
        for split in cfg.encode.splits:
            if source.streams:  # one cache shard per stream shard, each process its own
                stream = source.open_stream(cfg.data, split, True)
                index, problems = encode_stream_split(accelerator, stream, out / split, extractor, encoder,
                                                      cfg.data.resolution, cfg.layout.batch_size,
                                                      cfg.data.max_bad_fraction)
                if accelerator.is_main_process:
                    print(f"{split}: {index['rows']} rows cached in {out / split}; "
                          f"{problems.summary(index['images'])}")
                continue
            dataset = split_dataset(cfg, split)
            index, problems = encode_split(accelerator, dataset, split, out / split, cfg.encode.shard_size,
                                           extractor, encoder, cfg.layout.batch_size, cfg.data.num_workers,
                                           cfg.data.max_bad_fraction)
            if accelerator.is_main_process:
                print(f"{split}: {index['rows']} rows cached in {out / split}; {problems.summary(len(dataset))}")
            if accelerator.is_main_process and cfg.encode.visualize > 0:
                for path in write_layout_pictures(dataset, load_cache(out, split), out / split / "pictures",
                                                  cfg.encode.visualize):
                    print(f"  layout picture: {path}")
    finally:
        if lock is not None:
            lock.release()
        close_processes(accelerator)
    return out


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    encode_layouts(cfg)
    return 0
