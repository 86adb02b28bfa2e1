import pytest
import torch

from lumen.backbones.sd import SDFeatureExtractor, decoder_tap, num_decoder_layers
from lumen.pretrained import load_sd_components
from lumen.testing.tiny_sd import build_sd15_architecture


def test_sd15_layer_rule():
    with torch.device("meta"):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(cross_attention_dim=768)
    names = {k: decoder_tap(unet, k)[0] for k in (2, 3, 5, 8, 11, 12)}
    assert names == {2: "up_blocks.0.resnets.1", 3: "up_blocks.0.upsamplers.0", 5: "up_blocks.1.attentions.1",
                     8: "up_blocks.2.attentions.1", 11: "up_blocks.3.attentions.1", 12: "up_blocks.3.attentions.2"}
    assert num_decoder_layers(unet) == 12
    for bad in (0, 13):
        with pytest.raises(ValueError, match="1..12"):
            decoder_tap(unet, bad)


def check_sd15_shapes(device, tiny_sd_dir):
    from transformers import CLIPTokenizer

    vae, unet, text, scheduler = build_sd15_architecture(device)
    taps = {}
    for k in (2, 5, 8):
        decoder_tap(unet, k)[1].register_forward_hook(
            lambda m, i, o, k=k: taps.__setitem__(k, tuple((o if isinstance(o, torch.Tensor) else o[0]).shape)))
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")
    extractor = SDFeatureExtractor(vae, unet, text, tokenizer, scheduler, layers=(2, 5, 8))
    with torch.no_grad():
        out = extractor(torch.zeros(1, 3, 512, 512, device=device))
    assert taps == {2: (1, 1280, 8, 8), 5: (1, 1280, 16, 16), 8: (1, 640, 32, 32)}
    assert tuple(out.features.shape) == (1, 3200, 32, 32)
    assert tuple(out.latent_mean.shape) == (1, 4, 64, 64)


def test_sd15_architecture_taps_at_512_shapes(tiny_sd_dir):
    # Shapes only (meta tensors): the same modules and forward as the real model, in well under a second.
    check_sd15_shapes("meta", tiny_sd_dir)


@pytest.mark.slow
def test_sd15_architecture_taps_at_512_random_weights(tiny_sd_dir):
    check_sd15_shapes("cpu", tiny_sd_dir)


@pytest.fixture(scope="module")
def tiny_parts(tiny_sd_dir):
    return load_sd_components(str(tiny_sd_dir))


def extractor_of(parts, **kwargs):
    return SDFeatureExtractor(parts.vae, parts.unet, parts.text_encoder, parts.tokenizer, parts.noise_scheduler,
                              **kwargs)


def test_tiny_features_are_deterministic_and_batch_independent(tiny_parts):
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    extractor = extractor_of(tiny_parts)
    first, second = extractor(images[:1]).features, extractor(images[:1]).features
    assert torch.equal(first, second)
    batched = extractor(images).features
    assert batched.shape == (4, 64 + 64 + 32, 4, 4)
    torch.testing.assert_close(batched[:1], first, atol=1e-5, rtol=1e-4)


def test_early_exit_skips_the_rest_of_the_unet_and_changes_nothing(tiny_parts):
    calls = []
    handle = tiny_parts.unet.up_blocks[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        images = torch.rand(2, 3, 64, 64) * 2 - 1
        early = extractor_of(tiny_parts, early_exit=True)(images).features
        assert calls == []
        full = extractor_of(tiny_parts, early_exit=False)(images).features
        assert calls == [1]
    finally:
        handle.remove()
    torch.testing.assert_close(early, full)


def test_settings_change_the_features(tiny_parts):
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    base = extractor_of(tiny_parts)(images).features
    assert not torch.allclose(base, extractor_of(tiny_parts, timestep=500)(images).features)
    assert not torch.allclose(base, extractor_of(tiny_parts, noise_seed=1)(images).features)
    assert extractor_of(tiny_parts, layers=(8,))(images).features.shape[1] == 32


def test_bad_settings_are_refused(tiny_parts):
    with pytest.raises(ValueError, match="layers 1..12"):
        extractor_of(tiny_parts, layers=(2, 13))
    with pytest.raises(ValueError, match="timestep"):
        extractor_of(tiny_parts, timestep=1000)


def test_a_float32_vae_feeds_a_half_precision_unet(tiny_sd_dir):
    """fp16 training keeps the VAE in float32 (train.upcast_vae): the extractor gives each part its own dtype."""
    parts = load_sd_components(str(tiny_sd_dir))
    reference = SDFeatureExtractor(parts.vae, parts.unet, parts.text_encoder, parts.tokenizer, parts.noise_scheduler)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    expected = reference(images).features
    parts.unet.to(torch.bfloat16)
    parts.text_encoder.to(torch.bfloat16)
    mixed = SDFeatureExtractor(parts.vae, parts.unet, parts.text_encoder, parts.tokenizer, parts.noise_scheduler)
    out = mixed(images)
    assert parts.vae.dtype == torch.float32 and out.features.dtype == torch.float32
    assert torch.isfinite(out.features).all()
    cosine = torch.nn.functional.cosine_similarity(out.features.flatten(), expected.flatten(), dim=0)
    assert cosine > 0.99, f"bfloat16 features drifted from float32 ones: cosine {cosine:.4f}"
