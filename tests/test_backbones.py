"""Layout backbones: each extractor against an independent computation, and the layout pipeline with each."""

import json
from pathlib import Path

import pytest
import torch

from lumen.backbones import BACKBONES
from lumen.backbones.base import l2_normalise
from lumen.backbones.transformer import BackboneError, TransformerFeatureExtractor, transformer_blocks
from lumen.backbones.transformer_loading import load_transformer_extractor, resolve_transformer_spec

PIXELS = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def extractor(folder: Path, backbone: str, layer=None, facet=None, image_size=None, early_exit=True):
    kind = BACKBONES[backbone].transformer
    spec = resolve_transformer_spec(kind, str(folder), None, layer, facet, image_size, resolution=128)
    return load_transformer_extractor(kind, spec, None, torch.device("cpu"), torch.float32, early_exit=early_exit)


def patch_grid(tokens: torch.Tensor, prefix: int, side: int) -> torch.Tensor:
    """(B, T, D) -> (B, D, side, side) without the ``prefix`` special tokens: the reshape, by hand."""
    batch, _, dim = tokens.shape
    return tokens[:, prefix:, :].permute(0, 2, 1).reshape(batch, dim, side, side)


def test_dinov2_tokens_are_last_hidden_state_without_cls_and_registers(tiny_backbones):
    ex = extractor(tiny_backbones["dinov2_registers"], "dinov2")
    assert (ex.layer, ex.facet, ex.image_size, ex.num_prefix_tokens) == (4, "token", 32, 3)  # CLS + 2 registers
    features = ex.features(PIXELS)
    assert features.shape == (2, 32, 8, 8)
    with torch.no_grad():
        reference = ex.model(pixel_values=ex.preprocess(PIXELS)).last_hidden_state
    torch.testing.assert_close(features, patch_grid(reference, 3, 8))


def test_a_middle_layer_is_its_hidden_state_and_early_exit_equals_a_full_pass(tiny_backbones):
    early = extractor(tiny_backbones["dinov2"], "dinov2", layer=2)
    full = extractor(tiny_backbones["dinov2"], "dinov2", layer=2, early_exit=False)
    with torch.no_grad():
        hidden = full.model(pixel_values=full.preprocess(PIXELS), output_hidden_states=True).hidden_states
    expected = patch_grid(hidden[2], 1, 8)  # hidden_states[0] is the embedding, [2] the second block's output
    torch.testing.assert_close(full.features(PIXELS), expected)
    torch.testing.assert_close(early.features(PIXELS), expected)


def test_the_key_facet_is_the_key_projection_of_the_normed_input_by_hand(tiny_backbones):
    ex = extractor(tiny_backbones["dino"], "dino")
    assert (ex.layer, ex.facet) == (3, "key")  # DINO: 9 of 12 layers, scaled to the tiny model's 4
    with torch.no_grad():
        inputs = ex.preprocess(PIXELS)
        hidden = ex.model(pixel_values=inputs, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
        block = transformer_blocks(ex.model)[2]
        keys = block.attention.k_proj(block.layernorm_before(hidden[2]))  # the third block's input, normed
    torch.testing.assert_close(ex.features(PIXELS), patch_grid(keys, 1, 8))
    query = extractor(tiny_backbones["dino"], "dino", facet="query")
    with torch.no_grad():
        queries = block.attention.q_proj(block.layernorm_before(hidden[2]))
    torch.testing.assert_close(query.features(PIXELS), patch_grid(queries, 1, 8))


def test_clip_reads_the_penultimate_layer_and_any_vit_its_patch_tokens(tiny_backbones):
    clip = extractor(tiny_backbones["clip"], "clip")
    assert (clip.layer, clip.num_prefix_tokens) == (3, 1)
    with torch.no_grad():
        hidden = clip.model(pixel_values=clip.preprocess(PIXELS), interpolate_pos_encoding=True,
                            output_hidden_states=True).hidden_states
    torch.testing.assert_close(clip.features(PIXELS), patch_grid(hidden[3], 1, 8))
    siglip = extractor(tiny_backbones["siglip"], "vit")  # SigLIP's vision tower: no CLS, no registers
    assert siglip.num_prefix_tokens == 0 and siglip.features(PIXELS).shape == (2, 32, 8, 8)


def test_normalisation_comes_from_the_preprocessor_config(tiny_backbones, tmp_path):
    import shutil

    ex = extractor(tiny_backbones["clip"], "clip")
    images = (PIXELS + 1) / 2
    expected_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    assert torch.allclose(ex.mean, expected_mean)
    other = tmp_path / "clip"
    shutil.copytree(tiny_backbones["clip"], other)
    config = json.loads((other / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.0, 0.0, 0.0]
    (other / "preprocessor_config.json").write_text(json.dumps(config))
    changed = extractor(other, "clip")
    assert torch.equal(changed.mean, torch.zeros(1, 3, 1, 1))
    assert not torch.allclose(changed.preprocess(images * 2 - 1), ex.preprocess(images * 2 - 1))


def test_a_backbone_folder_without_its_image_processor_is_refused_in_one_line(tiny_backbones, tmp_path, tiny_args,
                                                                             capsys):
    import shutil

    from lumen.errors import run_cli
    from lumen_train.commands import fit_pca

    folder = shutil.copytree(tiny_backbones["dinov2"], tmp_path / "dinov2")
    (folder / "preprocessor_config.json").unlink()
    code = run_cli(fit_pca.main, "lumen fit-pca", [*tiny_args, "layout.backbone=dinov2",
                                                f"layout.backbone_model={folder}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"lumen fit-pca: error: {folder} has no preprocessor_config.json: the dinov2 backbone's image "
                   f"processor (the normalisation its weights expect) is saved beside them. Save it there with "
                   f"AutoImageProcessor.from_pretrained(<its model id>).save_pretrained({folder}), or download the "
                   f"whole model again")


def test_bad_sizes_and_layers_are_refused_by_name(tiny_backbones):
    with pytest.raises(BackboneError, match="layout.image_size=30 is not a multiple of the patch size 4"):
        extractor(tiny_backbones["dinov2"], "dinov2", image_size=30)
    with pytest.raises(BackboneError, match="layout.backbone_layer=9: this model has layers 1..4"):
        extractor(tiny_backbones["dinov2"], "dinov2", layer=9)
    ex = extractor(tiny_backbones["dinov2"], "dinov2")
    wrong = TransformerFeatureExtractor(ex.model, None, 4, "token", 32, 4, 0, ex.mean.flatten().tolist(),
                                        ex.std.flatten().tolist())
    with pytest.raises(BackboneError, match="0 special token\\(s\\) \\(from its config\\) \\+ 65"):
        wrong.features(PIXELS)


def test_fusion_concatenates_the_l2_normalised_parts_with_their_weights(tiny_sd_dir, tiny_backbones):
    from lumen.backbones.sd import SDFeatureExtractor
    from lumen.backbones.sd_dinov2 import FusedFeatureExtractor
    from lumen.pretrained import load_sd_components

    parts = load_sd_components(str(tiny_sd_dir))
    sd = SDFeatureExtractor(parts.vae, parts.unet, parts.text_encoder, parts.tokenizer, parts.noise_scheduler)
    vit = extractor(tiny_backbones["dinov2"], "dinov2")
    fused = FusedFeatureExtractor(sd, vit, weights=(1.0, 0.5))
    output = fused(PIXELS)
    sd_part, vit_part = output.features[:, :160], output.features[:, 160:]
    assert output.features.shape == (2, 160 + 32, 4, 4)  # SD's grid at 64 px
    torch.testing.assert_close(sd_part, l2_normalise(sd(PIXELS).features))
    torch.testing.assert_close(vit_part.norm(dim=1), torch.full((2, 4, 4), 0.5))
    torch.testing.assert_close(output.latent_mean, sd(PIXELS).latent_mean)
