import time

import pytest
import torch

from lumen.data.transforms import uint8_to_pixels
from lumen.pretrained import ModelNotFoundError, load_sd_components, resolve_model_location
from lumen.testing.tiny_sd import build_tiny_sd, build_tiny_tokenizer, save_tiny_sd, tiny_sd_settings


def unet_output(unet, text_encoder, tokenizer):
    torch.manual_seed(1)
    latents = torch.randn(2, 4, 16, 16)
    ids = tokenizer(["a red ball on the grass", ""], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        text = text_encoder(ids)[0]
        return unet(latents, torch.tensor([10, 500]), encoder_hidden_states=text).sample


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = build_tiny_sd(0), build_tiny_sd(0), build_tiny_sd(1)
    for name in ("unet", "vae", "text_encoder"):
        sa, sb, sc = (getattr(p, name).state_dict() for p in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name


def test_save_load_gives_identical_output(tiny_sd_dir):
    built = build_tiny_sd(0)
    parts = load_sd_components(str(tiny_sd_dir))
    expected = unet_output(built.unet, built.text_encoder, built.tokenizer)
    got = unet_output(parts.unet, parts.text_encoder, parts.tokenizer)
    assert torch.equal(expected, got)
    with torch.no_grad():
        image = torch.rand(1, 3, 128, 128) * 2 - 1
        assert torch.equal(built.vae.encode(image).latent_dist.mean, parts.vae.encode(image).latent_dist.mean)
    info = tiny_sd_settings(tiny_sd_dir)
    assert (info["seed"], info["vae_train_steps"], info["unet_train_steps"], info["weights_dtype"]) == (
        0, 0, 0, "float32")


def test_training_the_tiny_sd_is_reproducible(tmp_path, monkeypatch):
    """The shipped model's claim: the same command gives the same weight files (here with a few steps and a
    small image set, the same code path)."""
    import hashlib

    import lumen.testing.tiny_sd

    monkeypatch.setattr(lumen.testing.tiny_sd, "UNET_TRAIN_IMAGES", 32)
    digests = []
    for name in ("a", "b"):
        save_tiny_sd(tmp_path / name, seed=5, vae_train_steps=2, unet_train_steps=3, weights_dtype="float16")
        digests.append({str(f.relative_to(tmp_path / name)): hashlib.sha256(f.read_bytes()).hexdigest()
                        for f in sorted((tmp_path / name).rglob("*.safetensors"))})
    assert len(digests[0]) == 3 and digests[0] == digests[1]
    untrained = save_tiny_sd(tmp_path / "c", seed=5, weights_dtype="float16")
    assert hashlib.sha256((untrained / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest() != \
        digests[0]["unet/diffusion_pytorch_model.safetensors"]
    parts = load_sd_components(str(tmp_path / "a"))  # float16 files, loaded in the dtype asked for
    assert parts.unet.dtype == torch.float32


def test_make_tiny_sd_does_not_replace_a_folder_unasked(tmp_path, capsys):
    from lumen.errors import run_cli
    from lumen_train.commands import make_tiny_sd

    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "mine.txt").write_text("keep")
    assert run_cli(make_tiny_sd.main, "lumen make-tiny-sd", [str(tmp_path / "sd")]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "sd" / "mine.txt").read_text() == "keep"


def test_loaded_parts_are_frozen_and_scheduler_is_sd15s(tiny_sd_dir):
    parts = load_sd_components(str(tiny_sd_dir), dtype=torch.bfloat16)
    assert not any(p.requires_grad for p in parts.unet.parameters())
    assert parts.unet.dtype == torch.bfloat16 and parts.vae.dtype == torch.bfloat16
    config = parts.noise_scheduler.config
    assert (config.num_train_timesteps, config.beta_start, config.beta_end, config.beta_schedule) == (
        1000, 0.00085, 0.012, "scaled_linear")
    assert parts.vae.config.latent_channels == 4


def test_tiny_vae_has_a_trained_vaes_latent_statistics(tiny_sd_dir):
    import numpy as np

    from lumen.testing.synthetic_coco import render_scene

    parts = load_sd_components(str(tiny_sd_dir))
    rng = np.random.default_rng(123)  # scenes the calibration did not see
    images = np.stack([render_scene(rng, 128, 128)[0] for _ in range(8)])
    pixels = uint8_to_pixels(images)
    with torch.no_grad():
        posterior = parts.vae.encode(pixels).latent_dist
    scaled = posterior.mean * parts.vae.config.scaling_factor
    assert 0.7 < float(scaled.std()) < 1.4  # unit-variance latents, as SD's scaling factor gives
    assert float(posterior.std.max()) < 0.01  # a nearly deterministic posterior


def test_diffusers_pipeline_loads_and_samples(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a ball", num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3)


def test_tokenizer_folder_is_like_sd15_and_round_trips(tiny_sd_dir):
    from transformers import CLIPTokenizer

    folder = tiny_sd_dir / "tokenizer"
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    assert not (folder / "tokenizer.json").exists()
    loaded, built = CLIPTokenizer.from_pretrained(folder), build_tiny_tokenizer()
    text = "A red Ball on the grass, under a blue sky!  watercolor 123 ü"
    assert loaded(text).input_ids == built(text).input_ids
    # Caption words are whole tokens, as with CLIP's real vocabulary.
    assert loaded.tokenize("a red ball on the grass") == ["a</w>", "red</w>", "ball</w>", "on</w>", "the</w>",
                                                          "grass</w>"]
    assert loaded.model_max_length == 77


def test_model_id_offline_fails_at_once_with_advice(monkeypatch):
    import diffusers  # noqa: F401  (imported first: the time below is the lookup's, not the imports')
    import transformers  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        load_sd_components("someone/not-cached-model")
    assert time.perf_counter() - start < 5
    assert "model.pretrained=" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


def test_model_id_unreachable_hub_fails_with_advice(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_location("someone/not-cached-model")
    assert "cannot fetch 'someone/not-cached-model'" in str(err.value)
    assert "--local-dir" in str(err.value)


def test_incomplete_or_missing_folder_is_explained(tmp_path, tiny_sd_dir):
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        resolve_model_location(str(tmp_path / "nowhere" / "sd"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="missing subfolder"):
        resolve_model_location(str(partial))
    assert resolve_model_location(str(tiny_sd_dir)) == (str(tiny_sd_dir), True)


def test_interrupted_build_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    import lumen.testing.tiny_sd as tiny

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "_write_tokenizer_like_sd15", broken)
    with pytest.raises(KeyboardInterrupt):
        save_tiny_sd(tmp_path / "sd")
    assert not (tmp_path / "sd").exists()


@pytest.mark.slow  # ~30 s; the builder runs only in make_tiny_sd.py (test_training_the_tiny_sd_is_reproducible stays)
def test_vae_training_is_reproducible_and_makes_an_autoencoder():
    import numpy as np

    from lumen.testing.synthetic_coco import render_scene

    a, b = build_tiny_sd(0, vae_train_steps=30).vae, build_tiny_sd(0, vae_train_steps=30).vae
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    untrained = build_tiny_sd(0).vae
    rng = np.random.default_rng(7)
    pixels = uint8_to_pixels(np.stack([render_scene(rng, 128, 128)[0] for _ in range(4)]))
    with torch.no_grad():
        errors = [float((vae.decode(vae.encode(pixels).latent_dist.mean).sample - pixels).abs().mean())
                  for vae in (untrained, a)]
    assert errors[1] < 0.7 * errors[0]  # 30 steps already reconstruct much better than random weights


@pytest.mark.slow  # ~16 s, as above
def test_unet_training_is_reproducible_and_lowers_the_denoising_loss():
    from diffusers import DDPMScheduler

    from lumen.testing.tiny_sd import _train_unet

    def denoising_loss(pipe):
        torch.manual_seed(5)
        latents = torch.randn(8, 4, 16, 16) * 0.5
        noise, timesteps = torch.randn_like(latents), torch.randint(0, 1000, (8,))
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        ids = pipe.tokenizer([""] * 8, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            text = pipe.text_encoder(ids)[0]
            predicted = pipe.unet(scheduler.add_noise(latents, noise, timesteps), timesteps, text).sample
        return float(torch.nn.functional.mse_loss(predicted, noise))

    import copy

    untrained = build_tiny_sd(0)
    scheduler = DDPMScheduler.from_config(untrained.scheduler.config)
    a, b = copy.deepcopy(untrained), copy.deepcopy(untrained)
    for pipe in (a, b):
        _train_unet(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler, 30, 0, batch_size=8,
                    num_images=32)
    assert all(torch.equal(x, y) for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()))
    # The loss on fresh noise falls well below an untrained UNet's.
    assert denoising_loss(a) < 0.8 * denoising_loss(untrained)
