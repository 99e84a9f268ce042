"""Multimodal checkpoints (hyperclone.grow.wrapper): the language model of a Gemma 3, Gemma 4, Mistral 3, Mistral Large
4, Qwen3.5, Qwen2-VL, Qwen2.5-VL, EXAONE 4.5, Qwen3-VL, Qwen3-VL-MoE, GLM-4.1V, GLM-4.5V, LFM2-VL, Aya Vision, Command A
Vision, PaliGemma, LLaVA, LLaVA-NeXT, LLaVA-NeXT-Video, LLaVA-OneVision, InternVL, Idefics2, Idefics3, SmolVLM, Llama 4,
Llama 3.2 Vision or Apertus 1.5 checkpoint grows as its family does, the vision tower is copied byte for byte
(GLM-4.1V's and GLM-4.5V's MLPs, as wide as the language model, grow by copies; Apertus 1.5's image and audio tokenizers
too, no projector), and the projector (with LLaVA-NeXT's image_newline; Idefics2's connector, a SwiGLU as wide as the
language model's MLP and a perceiver resampler over the text width; Gemma 4's embed_vision) writes the grown residual
stream (Llama 3.2 Vision's the features its cross-attention reads), so the grown model gives the source's logits on text
and on images with text (fp32, max|dlogit| <= 1e-4 max|logit|)."""

import json
import os
import re

import pytest
import torch
from safetensors import safe_open
from tiny_models import (
    IMAGE_TOKEN,
    IMAGE_TOKENS,
    IMAGE_TOKENS_OF,
    TINY_CONFIGS,
    TINY_MULTIMODAL,
    UNTIED_MULTIMODAL,
    VIDEO_FRAMES_OF,
    VIDEO_TOKEN,
    VOCAB,
    compare_tiny,
    make_tiny_multimodal,
)

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.perturb import parse_perturbation
from hyperclone.grow.verify import load_causal_lm
from hyperclone.grow.wrapper import WRAPPERS, sort_tensors

REL_TOL = 1e-4
MULTIMODAL = sorted(TINY_MULTIMODAL)
FULL_MATRIX = os.environ.get("HYPERCLONE_FULL_MATRIX") == "1"


def image_inputs(model_type: str, images: int = 2, seed: int = 0) -> dict:
    """Text with `images` images in it (each its model's number of image tokens), as the model's forward takes them,
    and a video after them where the model type has one in VIDEO_FRAMES_OF."""
    inputs = _image_inputs(model_type, images, seed)
    frames = VIDEO_FRAMES_OF.get(model_type)
    if frames:  # one token per frame, 3 text tokens after them
        gen = torch.Generator().manual_seed(seed + 1)
        video = torch.cat([torch.full((1, frames), VIDEO_TOKEN), torch.randint(3, 80, (1, 3), generator=gen)], 1)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], video], 1)
        inputs["pixel_values_videos"] = torch.randn(1, frames, 3, 32, 32, generator=gen)
    return inputs


def _image_inputs(model_type: str, images: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tokens = IMAGE_TOKENS_OF.get(model_type, IMAGE_TOKENS)
    text = torch.randint(3, 80, (1, 6 + images * (tokens + 3)), generator=gen)
    for i in range(images):
        start = 3 + i * (tokens + 3)
        text[0, start:start + tokens] = IMAGE_TOKEN
    if model_type.startswith(("qwen", "glm4v", "exaone4_5")):  # 4x4 patches of 2 frames x 8x8 pixels, merged 2x2:
        # flattened, with their grid; mm_token_type_ids for M-RoPE (EXAONE 4.5's text positions are plain: none)
        inputs = {"input_ids": text, "pixel_values": torch.randn(images * 16, 3 * 2 * 8 * 8, generator=gen),
                  "image_grid_thw": torch.tensor([[1, 4, 4]] * images)}
        return inputs if model_type == "exaone4_5" else {**inputs, "mm_token_type_ids": (text == IMAGE_TOKEN).long()}
    if model_type == "gemma4":  # the processor's flat patch lists (values in [0, 1]), padded to 20 patches: per image
        # 4x4 patches of 8x8 pixels at their (x, y) positions, then 4 of padding at (-1, -1), pooled 2x2 into 4 soft
        # tokens; mm_token_type_ids marks the image tokens, which attend to each other both ways
        grid = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="xy"), -1).reshape(16, 2)
        positions = torch.cat([grid, torch.full((4, 2), -1)]).expand(images, 20, 2).clone()
        pixels = torch.cat([torch.rand(images, 16, 3 * 8 * 8, generator=gen), torch.zeros(images, 4, 3 * 8 * 8)], 1)
        return {"input_ids": text, "pixel_values": pixels, "image_position_ids": positions,
                "mm_token_type_ids": (text == IMAGE_TOKEN).long()}
    if model_type == "lfm2_vl":  # SigLIP2's flattened patches, 4x4 of 8x8 pixels per image, with their grid
        return {"input_ids": text, "pixel_values": torch.randn(images, 16, 3 * 8 * 8, generator=gen),
                "spatial_shapes": torch.tensor([[4, 4]] * images),
                "pixel_attention_mask": torch.ones(images, 16, dtype=torch.bool)}
    if model_type == "mllama":  # [batch, images, tiles, channels, height, width], 2 tiles each; the text attends to
        # an image from its first image token on (the tokens before any image: none, their rows masked out)
        mask = torch.zeros(1, text.shape[1], images, 2, dtype=torch.long)
        for i in range(images):
            mask[0, 3 + i * (tokens + 3):, i] = 1
        return {"input_ids": text, "pixel_values": torch.randn(1, images, 2, 3, 32, 32, generator=gen),
                "aspect_ratio_ids": torch.full((1, images), 2), "aspect_ratio_mask": torch.ones(1, images, 2,
                                                                                                dtype=torch.long),
                "cross_attention_mask": mask}
    if model_type == "apertus1p5":  # 8x8 images, each tokenized into 2x2 codes: with their sizes
        return {"input_ids": text, "pixel_values": torch.randn(images, 3, 8, 8, generator=gen),
                "image_sizes": torch.tensor([[8, 8]] * images)}
    if model_type in ("idefics3", "smolvlm"):  # [batch, images, channels, height, width]
        return {"input_ids": text, "pixel_values": torch.randn(1, images, 3, 32, 32, generator=gen)}
    if model_type == "idefics2":  # the same, the last image's bottom row of patches padding: masked out of the
        # vision tower's attention and of the perceiver's context
        mask = torch.ones(1, images, 32, 32, dtype=torch.bool)
        mask[0, -1, 24:] = False
        return {"input_ids": text, "pixel_values": torch.randn(1, images, 3, 32, 32, generator=gen),
                "pixel_attention_mask": mask}
    if model_type in IMAGE_TOKENS_OF:  # anyres: per image of 32x64 pixels a base tile and a 1x2 grid of 32x32 tiles
        return {"input_ids": text, "pixel_values": torch.randn(images, 3, 3, 32, 32, generator=gen),
                "image_sizes": torch.tensor([[32, 64]] * images)}
    inputs = {"input_ids": text, "pixel_values": torch.randn(images, 3, 32, 32, generator=gen)}
    if model_type in ("mistral3", "mistral_large4"):
        inputs["image_sizes"] = torch.tensor([[32, 32]] * images)
    return inputs


@torch.no_grad()
def image_rel_err(source, grown, model_type: str) -> float:
    """Relative logit error on text with images; source and grown: folders or the models loaded from them."""
    source, grown = (load_causal_lm(m) if not isinstance(m, torch.nn.Module) else m for m in (source, grown))
    inputs = image_inputs(model_type)
    a, b = source(**inputs).logits.float(), grown(**inputs).logits.float()
    return ((a - b).abs().max() / a.abs().max()).item()


# Width growth, noisy (tied kept; untied by --tie untie), and target shapes with depth (a hidden size that is not a
# multiple, diagonal; 3x with the MLP 2x, uneven, tied kept)
WIDTH_SETS = [("noisy", dict(width=2, mode="noisy", noise_db=0.0), True), ("untie", dict(width=2, tie="untie"), True)]
TARGET_SETS = [("72-diagonal", dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=100, layers=3, mode="diagonal"),
                False),
               ("144-uneven", dict(hidden_size=144, ffn_size=160, layers=3, mode="uneven"), True)]
GROWTH_MATRIX = [pytest.param(model_type, options, tied, id=f"{model_type}-{name}")
                 for i, model_type in enumerate(MULTIMODAL)
                 for name, options, tied in ([*WIDTH_SETS, *TARGET_SETS] if FULL_MATRIX else
                                             [WIDTH_SETS[i % 2], TARGET_SETS[i // 2 % 2]])]


@pytest.mark.parametrize("model_type,options,tied", GROWTH_MATRIX)
def test_multimodal_grows_exactly(tmp_path, model_type, options, tied):
    """Each model type grows with 2 of the 4 option sets, rotating over the sorted model types: one width growth in
    noisy mode (tied kept, or untied) and one target shape with a new layer (1.5x diagonal, or 3x uneven with tied kept;
    GLM-4.1V and GLM-4.5V 2x diagonal, their merger's LayerNorm taking whole factors only, as Mistral Large 4's indexer
    LayerNorm does; Mllama untied throughout, its class never tying), so every model type meets noisy width growth and a
    target shape with depth, and every set is met by 13 or 14 of the 28 model types in all four pairings (their language
    models are families tests/test_families.py grows in every mode). Why not all 4: at ~0.5 s each they would take
    ~50 s of this file's time, which is kept under ~60 s on one thread as the suite nears its limit;
    HYPERCLONE_FULL_MATRIX=1 runs all of them."""
    if model_type == "gemma3" and "heads" in options:  # Gemma 3's tiny text model: head_dim 12, 4 heads
        options = dict(options, hidden_size=72, heads=6, kv_heads=3)
    if model_type == "gemma4" and "layers" in options:  # 3 layers: a new one makes 4; 8 heads over 4 KV heads and 2
        options = dict(options, layers=4)  # full-attention ones: 1.5x is 12 over 6 and 3, the experts 40 -> 48 wide
        options |= dict(heads=12, kv_heads=6, ffn_size=96) if "heads" in options else {}
    if model_type.startswith("glm4v") and options.get("hidden_size") == 72:  # the merger's LayerNorm: whole factors
        options = dict(options, hidden_size=96, heads=6, kv_heads=2)
    if model_type == "mistral_large4" and "layers" in options:  # 4 layers: a new one makes 5
        options = dict(options, layers=5)
    if model_type == "mistral_large4" and options.get("hidden_size") == 72:
        # its indexer's LayerNorm over the residual stream takes whole factors; latent attention as many KV heads as
        # query heads
        options = dict(options, hidden_size=96, heads=9, kv_heads=9)
    tied = tied and model_type not in UNTIED_MULTIMODAL  # Mllama's class never ties
    src = make_tiny_multimodal(model_type, tmp_path / "src", tied=tied)
    out = grow(src, tmp_path / "out", seed=5, **options)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, model_type) <= REL_TOL
    before, after = (json.loads((f / "config.json").read_text()) for f in (src, out))
    assert after["model_type"] == model_type
    assert after["tie_word_embeddings"] is (tied and options.get("tie") != "untie")
    hidden = options.get("hidden_size", 48 * options.get("width", 1))
    assert after["text_config"]["hidden_size"] == hidden
    wrapper = WRAPPERS[model_type]  # the width a vision merger writes, stated in the vision config: grown
    links = {link.removeprefix("vision_config."): hidden for link in wrapper.hidden_links
             if "." not in link or link.startswith("vision_config.")}
    for link in wrapper.hidden_links:  # wherever it is (Idefics2's perceiver_config.hidden_size)
        section, _, key = link.rpartition(".")
        assert (after[section] if section else after)[key] == hidden, link
    links |= {link.removeprefix("vision_config."): hidden for link in wrapper.hidden_restated  # PaliGemma's
              if link.startswith("vision_config.") and before["vision_config"].get(link.split(".")[1]) == 48}
    assert after["vision_config"] == {**before["vision_config"], **links}
    for key in wrapper.hidden_defaults:  # a projector width the class would read from the grown hidden size
        assert after[key] == before.get(key, 48)
    for key in (k for k in wrapper.hidden_restated if "." not in k):  # never read: grown where it was the width
        assert after.get(key) == (hidden if before.get(key) == 48 else before.get(key))
    provenance = json.loads((out / "hyperclone.json").read_text())
    # the grown layers that are not the source's layer of the same index: a new one, and any after it (GLM-4.5V's new
    # layer goes among its dense first ones)
    moved = {i for i, (src_layer, _) in enumerate(provenance["layers"]) if src_layer != i}
    with safe_open(src / "model.safetensors", "pt") as a, safe_open(out / "model.safetensors", "pt") as b:
        vision = [k for k in a.keys() if wrapper.is_kept(k) and wrapper.projector_rule(k) is None]
        assert vision and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in vision)
        untied = sort_tensors(wrapper, list(a.keys())).stored_name("lm_head.weight")
        new = {k for k in b.keys() if (m := re.search(r"(?:^|\.)layers\.(\d+)\.", k)) and int(m.group(1)) in moved}
        assert set(b.keys()) - set(a.keys()) <= new | ({untied} if tied else set())  # named as the source names them
    assert provenance["wrapper"] == model_type and provenance["function_preserving"] is True


@pytest.mark.parametrize("model_type", MULTIMODAL)
def test_multimodal_from_bf16(tmp_path, model_type):
    src = make_tiny_multimodal(model_type, tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", width=2)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, model_type) <= REL_TOL


# per model type, every tensor that writes the residual stream from an image (biases aside). Idefics2's connector:
# the perceiver resampler's latents, attention and MLP outputs write its own stream over the text width, its final
# norm's weight the language model's; its modality projection is checked through gate_proj (a uniform scale of its
# down_proj, whose rows write the perceiver's context, is what the RMSNorm reading it removes)
RESIDUAL_WRITERS = {
    "aya_vision": ("multi_modal_projector.linear_2.weight",),
    "cohere2_vision": ("model.multi_modal_projector.linear_2.weight",),
    "gemma3": ("multi_modal_projector.mm_input_projection_weight",),
    "gemma4": ("model.embed_vision.embedding_projection.weight",),
    "mistral3": ("multi_modal_projector.linear_2.weight",),
    "mistral_large4": ("vision_language_adapter.w_out.weight",),
    "paligemma": ("multi_modal_projector.linear.weight",),
    "qwen3_5": ("model.visual.merger.linear_fc2.weight",),
    "qwen3_5_moe": ("model.visual.merger.linear_fc2.weight",),
    "qwen2_vl": ("visual.merger.mlp.2.weight",),
    "qwen2_5_vl": ("visual.merger.mlp.2.weight",),
    "exaone4_5": ("model.visual.merger.mlp.2.weight",),
    "qwen3_vl": ("model.visual.merger.linear_fc2.weight", "model.visual.deepstack_merger_list.0.linear_fc2.weight",
                 "model.visual.deepstack_merger_list.1.linear_fc2.weight"),
    "qwen3_vl_moe": ("model.visual.merger.linear_fc2.weight", "model.visual.deepstack_merger_list.0.linear_fc2.weight",
                     "model.visual.deepstack_merger_list.1.linear_fc2.weight"),
    "glm4v": ("model.visual.merger.down_proj.weight",),
    "glm4v_moe": ("model.visual.merger.down_proj.weight",),
    "lfm2_vl": ("model.multi_modal_projector.linear_2.weight",),
    "llava": ("multi_modal_projector.linear_2.weight",),
    "llava_next": ("multi_modal_projector.linear_2.weight", "image_newline"),
    "llava_onevision": ("multi_modal_projector.linear_2.weight", "image_newline"),
    "llava_next_video": ("multi_modal_projector.linear_2.weight", "image_newline"),
    "internvl": ("multi_modal_projector.linear_2.weight",),
    "idefics2": ("model.connector.modality_projection.gate_proj.weight", "model.connector.perceiver_resampler.latents",
                 "model.connector.perceiver_resampler.layers.0.self_attn.o_proj.weight",
                 "model.connector.perceiver_resampler.layers.1.mlp.down_proj.weight",
                 "model.connector.perceiver_resampler.norm.weight"),
    "idefics3": ("model.connector.modality_projection.proj.weight",),
    "smolvlm": ("model.connector.modality_projection.proj.weight",),
    "llama4": ("multi_modal_projector.linear_1.weight",),
    "mllama": ("multi_modal_projector.weight",),
    # no projector: the embedding's rows of the image codes (image_token_offset 80 on, 8 codes) write the stream
    "apertus1p5": (("model.language_model.embed_tokens.weight", slice(80, 88)),),
}


@pytest.mark.parametrize("model_type", MULTIMODAL)
def test_the_image_check_sees_the_projector(tmp_path, model_type):
    """The control: each of the grown model's residual-stream writers (LLaVA-NeXT's and OneVision's image_newline
    too, the vector closing each row of an image's features; Apertus 1.5's embedding rows of its image codes) 1% off,
    one at a time, moves the image logits well past the tolerance (the text path does not use them). One growth per
    model type, its writers in turn."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal(model_type, tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2)
    grown, source = load_file(out / "model.safetensors"), load_causal_lm(src)
    for writer in RESIDUAL_WRITERS[model_type]:
        writer, rows = writer if isinstance(writer, tuple) else (writer, slice(None))
        changed = grown[writer].clone()
        changed[rows] *= 1.01
        save_file({**grown, writer: changed}, out / "model.safetensors", metadata={"format": "pt"})
        assert image_rel_err(source, out, model_type) > 10 * REL_TOL, writer
    if rows != slice(None):  # rows of the embedding that any text may name: text without those ids is unchanged
        text = image_inputs(model_type)["input_ids"]
        with torch.no_grad():
            a, b = source(input_ids=text).logits, load_causal_lm(out)(input_ids=text).logits
        assert (a - b).abs().max() <= REL_TOL * a.abs().max()
        return
    assert compare_tiny(source, load_causal_lm(out), tolerance=REL_TOL).rel_err <= REL_TOL


LLAVA_RENAMES = (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                 ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."))
QWEN_VL_RENAMES = (("model.", "model.language_model."), ("lm_head.", "lm_head."), ("visual.", "model.visual."))
LLAVA_NEXT_RENAMES = (*LLAVA_RENAMES, ("image_newline", "model.image_newline"))
MLLAMA_RENAMES = (*LLAVA_RENAMES[:2], ("vision_model.", "model.vision_model."),
                  ("multi_modal_projector.", "model.multi_modal_projector."))


@pytest.mark.parametrize("model_type,renames", [("mistral3", LLAVA_RENAMES), ("qwen2_5_vl", QWEN_VL_RENAMES),
                                                ("llava_next", LLAVA_NEXT_RENAMES), ("mllama", MLLAMA_RENAMES)])
def test_in_memory_layout_is_kept(tmp_path, model_type, renames):
    """A checkpoint named as transformers 5 holds the model in memory (model.language_model., model.vision_tower.,
    model.visual. or model.vision_model., model.image_newline, lm_head.) grows into the same naming, exactly
    (make_tiny_multimodal writes the releases' names: Mistral 3's, LLaVA-NeXT's and Mllama's language_model.model.,
    Qwen2.5-VL's model. beside visual.); Mllama's layers are of two kinds, each grown layer named as its source's."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal(model_type, tmp_path / "src", tied=False)
    tensors = {}
    for name, tensor in load_file(src / "model.safetensors").items():
        old, new = next(pair for pair in renames if name.startswith(pair[0]))
        tensors[new + name.removeprefix(old)] = tensor
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", width=2, layers=3)
    layers = json.loads((out / "hyperclone.json").read_text())["layers"]  # per grown layer: [source layer, new?]
    with safe_open(out / "model.safetensors", "pt") as grown:
        prefix = "model.language_model.layers."
        kept = {k for k in tensors if not k.startswith(prefix)}
        per_layer = {k.replace(f"{prefix}{src}.", f"{prefix}{i}.") for i, (src, _) in enumerate(layers)
                     for k in tensors if k.startswith(f"{prefix}{src}.")}
        assert set(grown.keys()) == kept | per_layer  # the new layer: the language model's, not the tower's
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, model_type) <= REL_TOL


@pytest.mark.parametrize("options", [dict(width=2), dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=60,
                                                        mode="uneven", layers=3)], ids=["x2", "uneven-depth"])
def test_qwen3_vl_moe_release_layout(tmp_path, options):
    """The Qwen3-VL-MoE releases store every layer's fused experts transposed from what transformers 5's save_pretrained
    writes: gate_up_proj [experts, hidden, 2 x moe_intermediate] and down_proj [experts, moe_intermediate, hidden]
    (transformers' loader transposes them by shape). Growth reads them by shape the same way, keeps that layout, and
    the grown model gives the source's text and image logits; a grown expert stack that would be square in it
    (ambiguous to transformers) is refused in one line."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal("qwen3_vl_moe", tmp_path / "src", tied=False)
    saved = load_file(src / "model.safetensors")
    fused = [name for name in saved if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]
    assert len(fused) == 4  # 2 layers x 2 stacks
    release = {name: t.transpose(1, 2).contiguous() if name in fused else t for name, t in saved.items()}
    save_file(release, src / "model.safetensors", metadata={"format": "pt"})
    source = load_causal_lm(src)  # transformers reads the release layout
    out = grow(src, tmp_path / "out", **options)
    grown_tensors = load_file(out / "model.safetensors")
    hidden = json.loads((out / "config.json").read_text())["text_config"]["hidden_size"]
    for name in fused:
        assert grown_tensors[name].shape[1 if "gate_up" in name else 2] == hidden, name  # still [E, in, out]
    grown = load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, "qwen3_vl_moe") <= REL_TOL
    # 48 -> 96 hidden, 40 -> 48 moe_intermediate: gate_up_proj [experts, 96, 2 x 48] would be square
    with pytest.raises(HyperCloneError, match=r"would be square .* choose another --hidden or --ffn"):
        grow(src, tmp_path / "square", hidden_size=96, ffn_size=48, heads=12, kv_heads=4, mode="uneven")
    assert not (tmp_path / "square").exists()


@pytest.mark.parametrize("options", [dict(hidden_size=72, heads=9, kv_heads=3, mode="noisy", noise_db=0.0),
                                     dict(hidden_size=72, heads=9, kv_heads=3, mode="uneven")], ids=["noisy", "uneven"])
def test_image_newline_grows_as_an_embedding_row(tmp_path, options):
    """LLaVA-NeXT's image_newline is a vector the model puts into the residual stream where a token's embedding would
    be, so it must grow exactly as a row of the embedding table does: with the residual stream's map (at 48 -> 72,
    copies scaled so that RMSNorm sees the source's mean square), whatever the mode (noisy and uneven modes shape
    only the matrices that read the residual stream; rows are emitted). Checked bit for bit: a source whose
    embedding row 5 is image_newline grows both into the same vector."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal("llava_next", tmp_path / "src", tied=False)
    tensors = load_file(src / "model.safetensors")
    tensors["language_model.model.embed_tokens.weight"][5] = tensors["image_newline"]
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", seed=5, **options)
    grown = load_file(out / "model.safetensors")
    assert grown["image_newline"].shape == (72,)
    assert torch.equal(grown["language_model.model.embed_tokens.weight"][5], grown["image_newline"])
    assert not torch.equal(grown["image_newline"][:48], tensors["image_newline"])  # scaled copies


@pytest.mark.parametrize("model_type", MULTIMODAL)
def test_tying_follows_the_multimodal_config(tmp_path, model_type):
    """Release configs often leave the top-level tie_word_embeddings out (and transformers saves a text config that
    says false even for a tied model): the model ties by the top level's default, and so does growth; where the
    class also ties by a true text config (Qwen2-VL, Qwen2.5-VL, GLM-4.1V, GLM-4.5V, LLaVA, LLaVA-NeXT-Video,
    LLaVA-OneVision: text_ties), a tied text config under an untied default ties it; the other classes never read it
    (LLaVA-NeXT, Idefics2, Idefics3 and SmolVLM stay untied, InternVL, LFM2-VL, Aya Vision, Command A Vision and
    PaliGemma tied); Llama 4's ties by its text config alone (ties_by_text: tied here); Mllama's never ties, and a
    text config that says it does is refused in one line. Without copies.json (names of the class that loads it), the
    model card says how to load it."""
    wrapper = WRAPPERS[model_type]
    tied_default, untied_only = wrapper.tied_default, model_type in UNTIED_MULTIMODAL
    # what the text config's opposite value leaves
    tied = not untied_only and (tied_default or wrapper.text_ties or wrapper.ties_by_text)
    src = make_tiny_multimodal(model_type, tmp_path / "src", tied=tied)
    config = json.loads((src / "config.json").read_text())
    del config["tie_word_embeddings"]
    config["text_config"]["tie_word_embeddings"] = not tied_default  # the text config says the opposite
    (src / "config.json").write_text(json.dumps(config))
    if untied_only:
        with pytest.raises(HyperCloneError, match="never ties lm_head to the embeddings"):
            grow(src, tmp_path / "refused", width=2)
        assert not (tmp_path / "refused").exists()
        config["text_config"]["tie_word_embeddings"] = False
        (src / "config.json").write_text(json.dumps(config))
    out = grow(src, tmp_path / "out", width=2)
    assert json.loads((out / "hyperclone.json").read_text())["tied_source"] is tied
    assert compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL).rel_err <= REL_TOL
    assert not (out / "copies.json").exists()
    card = (out / "README.md").read_text()
    assert f"# {model_type} (language model: " in card and "AutoModelForImageTextToText" in card


@pytest.mark.parametrize("top,text", [(True, False), (False, True)])
def test_llama4_ties_by_its_text_config(tmp_path, top, text):
    """Llama 4's language model is a whole Llama4ForCausalLM, which ties by its own config's tie_word_embeddings: the
    top level's is never read. Growth ties as the text config says whatever the top level says, and --tie untie
    writes false into the text config, where the class reads it."""
    src = make_tiny_multimodal("llama4", tmp_path / "src", tied=text)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": top}))
    out = grow(src, tmp_path / "out", width=2, tie="untie")
    assert json.loads((out / "hyperclone.json").read_text())["tied_source"] is text
    grown_config = json.loads((out / "config.json").read_text())
    assert grown_config["text_config"]["tie_word_embeddings"] is False
    source, grown = load_causal_lm(src), load_causal_lm(out)
    lm_head = grown.language_model.lm_head.weight
    assert lm_head is not grown.language_model.model.embed_tokens.weight
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, "llama4") <= REL_TOL


def test_lfm2_vl_ties_by_tie_embedding(tmp_path):
    """LFM2-VL's config class reads a top-level tie_embedding (LFM2's name for it) in place of tie_word_embeddings,
    and LFM2's text config class reads its own: growth ties as the top level's says, whatever the text config's
    says, and a grown config that unties drops the alias, so the class cannot tie the untied model back."""
    src = make_tiny_multimodal("lfm2_vl", tmp_path / "src", tied=True)
    config = json.loads((src / "config.json").read_text())
    del config["tie_word_embeddings"]
    config["text_config"]["tie_embedding"] = False  # the opposite, which the multimodal class never reads
    (src / "config.json").write_text(json.dumps({**config, "tie_embedding": True}))
    out = grow(src, tmp_path / "out", width=2, tie="untie")
    grown = json.loads((out / "config.json").read_text())
    assert json.loads((out / "hyperclone.json").read_text())["tied_source"] is True
    assert grown["tie_word_embeddings"] is False and "tie_embedding" not in grown
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, "lfm2_vl") <= REL_TOL


def test_multimodal_cli(tmp_path, capsys):
    """inspect names the wrapper; verify checks in memory and refuses --out-of-core in one line."""
    from hyperclone.cli import main

    src = make_tiny_multimodal("gemma3", tmp_path / "src")
    with pytest.raises(SystemExit) as done:
        main(["inspect", str(src)])
    assert done.value.code in (0, None)
    assert "gemma3_text (the language model of a gemma3 checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["inspect", str(src), "--width", "2"])  # the plan: the config's changes where they sit in it
    assert done.value.code in (0, None)
    assert '"text_config.hidden_size": 96' in capsys.readouterr().out
    grow(src, tmp_path / "out", width=2)
    with pytest.raises(SystemExit) as done:
        main(["verify", str(src), str(tmp_path / "out")])
    assert done.value.code in (0, None)



# transformers has no causal LM for their text configs (Mllama's MllamaForCausalLM is not registered for
# mllama_text_model, and its cross-attention layers could not run on text alone; Mistral Large 4's text model has none)
NO_TEXT_CAUSAL_LM = ("qwen3_vl_moe", "glm4v", "glm4v_moe", "mllama", "mistral_large4")


@pytest.mark.parametrize("model_type", MULTIMODAL)
def test_out_of_core_verify_of_a_multimodal_checkpoint(tmp_path, model_type):
    """Block by block: the language model as its text model class runs it (from bf16, with a new layer), and the
    vision tower's tensors compared with the source's; a changed vision tensor fails it."""
    from safetensors.torch import load_file, save_file

    from hyperclone.grow.verify_blocks import verify_out_of_core

    src = make_tiny_multimodal(model_type, tmp_path / "src", dtype=torch.bfloat16)
    layers = TINY_MULTIMODAL[model_type]["text_config"]["num_hidden_layers"]
    out = grow(src, tmp_path / "out", width=2, layers=layers + 1)
    if model_type in NO_TEXT_CAUSAL_LM:  # its text model has no causal LM class to run alone: refused in one line
        with pytest.raises(HyperCloneError, match="no causal LM class .* verify in memory"):
            verify_out_of_core(src, out)
        return
    result = verify_out_of_core(src, out)
    assert result.ok and result.kept_equal and len(result.block_rel_err) == layers + 1, result
    assert max(result.block_rel_err) <= REL_TOL and result.rel_err <= REL_TOL
    tensors = load_file(out / "model.safetensors")
    vision = next(k for k in tensors if WRAPPERS[model_type].is_kept(k))
    tensors[vision] = tensors[vision] + 1
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    result = verify_out_of_core(src, out)
    assert result.kept_equal is False and not result.ok


# per model type whose language model is a mixture of experts: its text config's expert count, expert width and top-k
EXPERT_KEYS = {"gemma4": ("num_experts", "moe_intermediate_size", "top_k_experts"),
               "qwen3_5_moe": ("num_experts", "moe_intermediate_size", "num_experts_per_tok"),
               "qwen3_vl_moe": ("num_local_experts", "moe_intermediate_size", "num_experts_per_tok"),
               "glm4v_moe": ("n_routed_experts", "moe_intermediate_size", "num_experts_per_tok"),
               "mistral_large4": ("n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")}


@pytest.mark.parametrize("model_type,width", [("gemma4", 1), ("gemma4", 2), ("qwen3_5_moe", 2), ("qwen3_vl_moe", 1),
                                              ("glm4v_moe", 2), ("mistral_large4", 2)])
def test_experts_split_through_the_wrapper(tmp_path, model_type, width):
    """--experts 8 on a language model of 4 experts (top-2, 40 wide): each split in 2 (top-4, 20 wide, or 40 with the
    MLP grown x2), alone or with width x2; the text and image logits are the source's, the text config states the new
    expert count, width and top-k (GLM-4.5V's and Mistral Large 4's shared expert keeps its width: n_shared_experts
    1 -> 2), the vision
    tower is copied, every tensor is named in the checkpoint's layout, and hyperclone.json records the split."""
    from hyperclone.grow.inspect import explain_plan

    src = make_tiny_multimodal(model_type, tmp_path / "src")
    out = grow(src, tmp_path / "out", width=width, experts=8)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, model_type) <= REL_TOL
    before, after = (json.loads((f / "config.json").read_text()) for f in (src, out))
    experts, expert_width, top_k = EXPERT_KEYS[model_type]
    text = after["text_config"]
    assert (text[experts], text[expert_width], text[top_k]) == (8, 20 * width, 4)
    assert text["hidden_size"] == 48 * width and after["vision_config"] == before["vision_config"] | (
        {"out_hidden_size": 48 * width} if "out_hidden_size" in before["vision_config"] else {})
    if model_type in ("glm4v_moe", "mistral_large4"):
        assert text["n_shared_experts"] == 2
    wrapper = WRAPPERS[model_type]
    with safe_open(src / "model.safetensors", "pt") as a, safe_open(out / "model.safetensors", "pt") as b:
        vision = [k for k in a.keys() if wrapper.is_kept(k) and wrapper.projector_rule(k) is None]
        assert vision and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in vision)
        assert sort_tensors(wrapper, list(b.keys())).layout == sort_tensors(wrapper, list(a.keys())).layout
    provenance = json.loads((out / "hyperclone.json").read_text())
    assert provenance["wrapper"] == model_type and provenance["function_preserving"] is True
    assert provenance["segmented"]["experts"] == 8 and provenance["segmented"]["top_k"] == 4
    assert explain_plan(src, width=width, experts=8)["segmented"] == provenance["segmented"]


def test_qwen3_vl_moe_release_layout_splits(tmp_path):
    """The releases' transposed expert stacks ([experts, in, out]) are split along their MLP width too, and keep that
    layout."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal("qwen3_vl_moe", tmp_path / "src")
    saved = load_file(src / "model.safetensors")
    release = {name: t.transpose(1, 2).contiguous() if name.endswith(("experts.gate_up_proj", "experts.down_proj"))
               else t for name, t in saved.items()}
    save_file(release, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", width=2, experts=8)
    grown_tensors = load_file(out / "model.safetensors")
    assert grown_tensors["model.language_model.layers.0.mlp.experts.gate_up_proj"].shape == (8, 96, 80)
    assert grown_tensors["model.language_model.layers.0.mlp.experts.down_proj"].shape == (8, 40, 96)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, "qwen3_vl_moe") <= REL_TOL


def test_experts_through_a_wrapper_refusals(tmp_path, monkeypatch):
    """Refused in one line: a language model whose split is not exact (Llama 4's shared expert is as wide as each
    expert), one whose family's routing is not described, upcycling a dense language model, and --moments-from."""
    from hyperclone.grow import segment

    llama4 = make_tiny_multimodal("llama4", tmp_path / "llama4")
    with pytest.raises(HyperCloneError, match="shared_expert.* has the experts' width"):
        grow(llama4, tmp_path / "l", experts=8)
    glm = make_tiny_multimodal("glm4v_moe", tmp_path / "glm")
    with pytest.raises(HyperCloneError, match="--moments-from with --experts"):
        grow(glm, tmp_path / "m", experts=8, moments_from=tmp_path / "run")
    monkeypatch.delitem(segment.ROUTING, "glm4v_moe_text")
    with pytest.raises(HyperCloneError, match=r"^--experts on a glm4v_moe checkpoint: splitting the experts of its "
                                              r"language model \(glm4v_moe_text\) is not described"):
        grow(glm, tmp_path / "g", experts=8)
    gemma3 = make_tiny_multimodal("gemma3", tmp_path / "gemma3")
    with pytest.raises(HyperCloneError, match="upcycling into experts is not supported for multimodal"):
        grow(gemma3, tmp_path / "e", width=2, experts=4)
    assert not any((tmp_path / n).exists() for n in ("l", "m", "g", "e"))


def test_multimodal_refusals(tmp_path):
    src = make_tiny_multimodal("gemma3", tmp_path / "src")
    from safetensors.torch import load_file, save_file

    tensors = load_file(src / "model.safetensors")
    tensors["audio_tower.weight"] = torch.zeros(2)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="audio_tower.weight is neither the language model's"):
        grow(src, tmp_path / "x", width=2)
    assert not (tmp_path / "x").exists()


def test_gemma4_per_layer_embeddings_grow_exactly(tmp_path):
    """Gemma 4 E2B/E4B (per-layer embeddings, which the multimodal model fills for image tokens from the pad token's
    row, and KV-shared last layers with double-wide MLPs): the language model grows in width as gemma4_text's does
    (tests/test_gemma4.py), text and image logits the source's, in depth too (the new layer after layer 1, the last
    before the KV-shared layer 2, joins it)."""
    text = dict(TINY_MULTIMODAL["gemma4"]["text_config"], hidden_size_per_layer_input=8,
                vocab_size_per_layer_input=VOCAB, num_kv_shared_layers=1, use_double_wide_mlp=True)
    src = make_tiny_multimodal("gemma4", tmp_path / "src", text_config=text)
    out = grow(src, tmp_path / "out", width=2, mode="noisy", noise_db=0.0)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, "gemma4") <= REL_TOL
    deeper = grow(src, tmp_path / "deeper", width=2, layers=4)
    text_config = json.loads((deeper / "config.json").read_text())["text_config"]
    assert text_config["num_hidden_layers"] == 4 and text_config["num_kv_shared_layers"] == 2
    grown = load_causal_lm(deeper)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, "gemma4") <= REL_TOL


@pytest.mark.parametrize("model_type", ["llava", "mllama"])
def test_perturbed_multimodal_growth_moves_the_language_model_only(tmp_path, model_type):
    """grow --perturb on an image-text checkpoint: every language-model matrix (Mllama's cross-attention layers too)
    is the mix formula applied to the exact growth, with the init std transformers draws with (the top-level
    config's initializer_range, 0.01 here, over the text config's 0.05); the vision tower, the projector and every
    vector are the exact growth's; hyperclone.json records the growth as not function-preserving."""
    src = make_tiny_multimodal(model_type, tmp_path / "src", tied=False)
    config = json.loads((src / "config.json").read_text())
    config["initializer_range"], config["text_config"]["initializer_range"] = 0.01, 0.05
    (src / "config.json").write_text(json.dumps(config))
    exact = grow(src, tmp_path / "exact", width=2, seed=5)
    mixed = grow(src, tmp_path / "mixed", width=2, seed=5, perturb="mix:0.25")
    record = json.loads((mixed / "hyperclone.json").read_text())
    assert record["function_preserving"] is False and record["spec"]["perturb"] == "mix:0.25"
    wrapper, p = WRAPPERS[model_type], parse_perturbation("mix:0.25")
    std = 0.01
    moved = 0
    with safe_open(exact / "model.safetensors", "pt") as a, safe_open(mixed / "model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for name in a.keys():
            before, after = a.get_tensor(name), b.get_tensor(name)
            if wrapper.is_kept(name) or wrapper.projector_rule(name) or before.ndim < 2:  # vision, projector, vectors
                assert torch.equal(before, after), name
            else:
                torch.testing.assert_close(after, p.apply(before, name, std, 5), rtol=0, atol=0)
                moved += "cross_attn" in name or model_type == "llava"
    assert moved > 0


def test_qwen3_5_refusals(tmp_path):
    """A vision merger that does not write the language model's width is refused in one line and nothing is written;
    multi-token prediction layers (mtp.*, which transformers does not load) are left out."""
    from safetensors.torch import load_file, save_file

    src = make_tiny_multimodal("qwen3_5", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "vision_config": {**config["vision_config"],
                                                                             "out_hidden_size": 64}}))
    with pytest.raises(HyperCloneError, match="vision_config.out_hidden_size is 64, not the language model's"):
        grow(src, tmp_path / "a", width=2)
    (src / "config.json").write_text(json.dumps(config))
    assert not (tmp_path / "a").exists()
    tensors = load_file(src / "model.safetensors")
    tensors["mtp.fc.weight"] = torch.zeros(48, 96)  # the text family's MTP block: left out, through the wrapper too
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "b", width=2)
    assert "mtp.fc.weight" not in load_file(out / "model.safetensors")
    assert any("multi-token prediction tensors left out (e.g. mtp.fc.weight)" in note
               for note in json.loads((out / "hyperclone.json").read_text())["notes"])


def test_exaone4_5_release_config_and_mtp(tmp_path):
    """EXAONE 4.5's releases name the text config exaone4_5_text (which its config class renames exaone4: read as the
    exaone4 family's, the name kept in the grown config) and store a multi-token prediction block beside the model
    (mtp.*, which transformers does not load): it is left out, and the grown model, a new layer included, gives the
    source's text and image logits, in memory and block by block."""
    from safetensors.torch import load_file, save_file

    from hyperclone.grow.verify_blocks import verify_out_of_core

    src = make_tiny_multimodal("exaone4_5", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["text_config"] |= {"model_type": "exaone4_5_text", "num_nextn_predict_layers": 1}
    (src / "config.json").write_text(json.dumps(config))
    mtp = {"mtp.fc.weight": (48, 96), "mtp.pre_fc_norm_embedding.weight": (48,), "mtp.pre_fc_norm_hidden.weight": (48,),
           "mtp.layers.0.self_attn.q_proj.weight": (48, 48), "mtp.norm.weight": (48,)}
    tensors = load_file(src / "model.safetensors") | {name: torch.ones(shape) for name, shape in mtp.items()}
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", width=2, layers=3)
    assert set(load_file(out / "model.safetensors")).isdisjoint(mtp)
    notes = json.loads((out / "hyperclone.json").read_text())["notes"]
    assert any(f"{len(mtp)} multi-token prediction tensors left out" in note for note in notes), notes
    grown_config = json.loads((out / "config.json").read_text())
    assert grown_config["text_config"]["model_type"] == "exaone4_5_text"
    assert grown_config["text_config"]["hidden_size"] == grown_config["vision_config"]["out_hidden_size"] == 96
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, "exaone4_5") <= REL_TOL
    result = verify_out_of_core(src, out)
    assert result.ok and result.kept_equal and result.rel_err <= REL_TOL, result


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_flat_release_config(tmp_path, model_type):
    """Qwen2-VL's and Qwen2.5-VL's releases state the language model's keys at the config's top level (no
    text_config; M-RoPE as rope_scaling {"type": "mrope"} beside rope_theta): read there, grown there (the config kept
    flat), exactly, tied as the top level says."""
    src = make_tiny_multimodal(model_type, tmp_path / "src", tied=True)
    config = json.loads((src / "config.json").read_text())
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    del text["model_type"]
    flat = {**config, **text, "rope_theta": rope["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}
    (src / "config.json").write_text(json.dumps(flat))
    out = grow(src, tmp_path / "out", width=2, layers=3)
    grown = json.loads((out / "config.json").read_text())
    assert "text_config" not in grown and grown["rope_scaling"] == flat["rope_scaling"]
    assert (grown["hidden_size"], grown["num_attention_heads"], grown["num_hidden_layers"]) == (96, 12, 3)
    assert grown["tie_word_embeddings"] is True and json.loads((out / "hyperclone.json").read_text())["tied_source"]
    link = WRAPPERS[model_type].hidden_links[0].removeprefix("vision_config.")
    assert grown["vision_config"] == {**flat["vision_config"], link: 96}
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    assert image_rel_err(source, grown, model_type) <= REL_TOL


def test_paligemma2_gemma2_text(tmp_path):
    """PaliGemma 2: a Gemma 2 language model (sliding and full attention, soft caps) behind PaliGemma's projector,
    whose image features enter the residual stream unscaled (text embeddings are scaled by sqrt(hidden) inside the
    embedding): its rows grow with the residual stream's map alone, exact on text and on images with a bidirectional
    prefix (token_type_ids). projection_dim (which the class copies into vision_config) takes the grown width; a
    top-level hidden_size that is not the language model's (the class default 2048 beside another width), never read,
    is left as stated."""
    text = dict(TINY_CONFIGS["gemma2"], model_type="gemma2", vocab_size=VOCAB, max_position_embeddings=64)
    src = make_tiny_multimodal("paligemma", tmp_path / "src", text_config=text, hidden_size=2048)
    out = grow(src, tmp_path / "out", width=2, layers=3)
    config = json.loads((out / "config.json").read_text())
    assert (config["projection_dim"], config["vision_config"]["projection_dim"]) == (96, 96)
    assert config["hidden_size"] == 2048
    assert config["text_config"]["model_type"] == "gemma2" and config["text_config"]["hidden_size"] == 96
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert compare_tiny(source, grown, tolerance=REL_TOL).rel_err <= REL_TOL
    inputs = image_inputs("paligemma")
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    inputs["token_type_ids"][0, -4:] = 1  # the prefix (images and prompt) attends both ways, the suffix causally
    with torch.no_grad():
        a, b = source(**inputs).logits, grown(**inputs).logits
    assert ((a - b).abs().max() / a.abs().max()).item() <= REL_TOL


def test_mistral_small4_release_through_mistral3(tmp_path):
    """Mistral Small 4's release is Mistral 3's image-text class around a mistral4 language model (latent attention,
    fused experts): the wrapper grows the text model by its own table, exact on text and on images."""
    text = dict(TINY_CONFIGS["mistral4"], model_type="mistral4", vocab_size=VOCAB, max_position_embeddings=64)
    src = make_tiny_multimodal("mistral3", tmp_path / "src", text_config=text)
    out = grow(src, tmp_path / "out", width=2, ffn=2)
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["model_type"] == "mistral4" and config["text_config"]["hidden_size"] == 96
    source, grown = load_causal_lm(src), load_causal_lm(out)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, "mistral3") <= REL_TOL


def test_mistral_large4_kv_sharing_under_depth_and_its_layernorm(tmp_path):
    """Mistral Large 4's kv_source_layers names layers by index (its tiny model: [0, 0, 2, 2], layers 1 and 3 with no
    kv_a projection of their own): new layers after layers 0 and 3 renumber it, each identity block copying layer 1
    (the "shared" indexer layer, so it chooses no keys) and attending to layer 0's latent keys, as layer 1 does;
    exact on text and images. Its indexer's LayerNorm over the residual stream keeps its mean only under whole copies:
    a hidden size of 72 is refused in one line (1.16 relative logit error without the refusal), nothing written;
    so is an identity block that would read a later layer's keys and values."""
    src = make_tiny_multimodal("mistral_large4", tmp_path / "src")
    out = grow(src, tmp_path / "out", layers=6, insert_after=[0, 3])
    text = json.loads((out / "config.json").read_text())["text_config"]
    assert text["kv_source_layers"] == [0, 0, 0, 3, 3, 0] and text["no_rope_layers"] == [1, 1, 1, 0, 0, 1]
    assert text["indexer_types"] == ["full", "shared", "shared", "full", "full", "shared"]
    source, grown = load_causal_lm(src), load_causal_lm(out)
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match, result
    assert image_rel_err(source, grown, "mistral_large4") <= REL_TOL
    stacked = grow(src, tmp_path / "stacked", layers=8, depth_mode="stack")  # each stack reads its own layers' keys
    stacked_text = json.loads((stacked / "config.json").read_text())["text_config"]
    assert stacked_text["kv_source_layers"] == [0, 0, 2, 2, 4, 4, 6, 6]
    # an identity block before the first "shared" layer copies it (identity_copies); where that layer reads a later
    # grown layer's keys (indexer full, full, shared, full; kv_source_layers [0, 1, 1, 3]) it is refused in one line
    later = dict(TINY_MULTIMODAL["mistral_large4"]["text_config"], indexer_types=["full", "full", "shared", "full"],
                 no_rope_layers=[1, 1, 1, 0], kv_source_layers=[0, 1, 1, 3])
    src_later = make_tiny_multimodal("mistral_large4", tmp_path / "src-later", text_config=later)
    with pytest.raises(HyperCloneError, match=r"^kv_source_layers: grown layer 1, a copy of layer 2, would read the "
                                              r"keys and values of grown layer 2, a later one; insert new layers after "
                                              r"layer 1 or later \(--insert-after\)$"):
        grow(src_later, tmp_path / "refused-later", layers=5, insert_after=[0])
    assert not (tmp_path / "refused-later").exists()
    with pytest.raises(HyperCloneError, match=r"q_input_norm\.bias is a LayerNorm over the residual stream, whose mean "
                                              r"only whole copies keep; a hidden size of 72 is not a multiple of 48"):
        grow(src, tmp_path / "refused", hidden_size=72, heads=9, kv_heads=9, ffn_size=60)
    assert not (tmp_path / "refused").exists()


def test_glm4v_vision_width_is_the_language_models(tmp_path):
    """GLM-4.1V's vision tower reads vision_config.out_hidden_size, the language model's hidden size, as the width of
    its blocks' MLPs, of its downsampling convolution and of its merger (proj, a LayerNorm, the SwiGLU's input): they
    grow with it by plain copies, divided where they are read (the growth tests check the image logits), and the
    LayerNorm sees the source's mean and variance only with whole copies: a hidden size that is not a multiple is
    refused in one line, nothing written."""
    from safetensors.torch import load_file

    src = make_tiny_multimodal("glm4v", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2)
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    gate, down = "model.visual.blocks.0.mlp.gate_proj.weight", "model.visual.blocks.0.mlp.down_proj.weight"
    assert torch.equal(after[gate], before[gate].repeat(2, 1))
    assert torch.allclose(after[down][:, :48] + after[down][:, 48:], before[down], atol=1e-6)  # the copies' share
    with pytest.raises(HyperCloneError, match=r"post_projection_norm\.\w+: a LayerNorm .* whole factor, not to 64"):
        grow(src, tmp_path / "a", hidden_size=64, heads=4, kv_heads=1, ffn_size=100)
    assert not (tmp_path / "a").exists()


def test_deepstack_layers_stay_first(tmp_path):
    """Qwen3-VL adds its DeepStack mergers' features after the language model's first layers (one per entry of
    vision_config.deepstack_visual_indexes), by layer index: new layers placed by default go after the last of them
    (the growth tests check them exact), and --insert-after before it is refused in one line; nothing is written."""
    from hyperclone.grow.plan import GrowthSpec
    from hyperclone.grow.planning import plan_growth

    src = make_tiny_multimodal("qwen3_vl", tmp_path / "src")
    plan, _ = plan_growth(src, GrowthSpec(width=1, layers=4))
    assert plan.layers == [(0, False), (1, False), (1, True), (1, True)] and plan.spec.insert_after == (1, 1)
    with pytest.raises(HyperCloneError, match=r"after each of its first 2 layers \(vision_config\.deepstack_visual"):
        grow(src, tmp_path / "a", width=2, layers=3, insert_after=(0,))
    assert not (tmp_path / "a").exists()


def test_text_keys_stated_twice_follow_the_text_config(tmp_path):
    """Qwen2.5-VL configs saved by transformers 4.5x hold a text_config and the same text keys at the top level:
    both are grown (a tool reading config.hidden_size sees the grown width), and --dtype float32 leaves no
    torch_dtype saying bfloat16 beside it."""
    src = make_tiny_multimodal("qwen2_5_vl", tmp_path / "src", dtype=torch.bfloat16)
    config = json.loads((src / "config.json").read_text())
    text = config["text_config"]
    keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
    (src / "config.json").write_text(json.dumps({**config, **{k: text[k] for k in keys}, "torch_dtype": "bfloat16"}))
    out = grow(src, tmp_path / "out", width=2, layers=3, dtype="float32")
    grown = json.loads((out / "config.json").read_text())
    assert {k: grown[k] for k in keys} == {k: grown["text_config"][k] for k in keys}
    assert grown["hidden_size"] == 96 and grown["num_hidden_layers"] == 3 and "torch_dtype" not in grown
    assert compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL).rel_err <= REL_TOL


def test_deepstack_longer_than_the_language_model_refuses_new_layers(tmp_path):
    src = make_tiny_multimodal("qwen3_vl", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["vision_config"]["deepstack_visual_indexes"] = [0, 0, 0]  # three features, two layers
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(HyperCloneError, match="lists 3 layers .* the language model has 2"):
        grow(src, tmp_path / "out", width=2, layers=3)
    del config["vision_config"]["out_hidden_size"]
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(HyperCloneError, match="out_hidden_size is missing"):
        grow(src, tmp_path / "out", width=2)
    assert not (tmp_path / "out").exists()


def test_may_be_transposed_is_for_expert_stacks_only():
    """The table key that lets a stack of expert matrices be stored with its last two axes swapped: its swapped rule
    reads [experts, in, out] (contract 1) for [experts, out, in] (contract 2); on a matrix, or not a boolean, it is a
    table mistake."""
    from importlib import resources

    from hyperclone.grow.families import _parse_family, get_family

    family = get_family("qwen3_vl_moe_text")
    gate_up = next(r for r in family.tensors if r.name.endswith("experts.gate_up_proj"))
    assert gate_up.may_be_transposed and (gate_up.axes, gate_up.contract) == (
        (("experts",), ("ffn", "ffn"), ("hidden",)), 2)
    swapped = gate_up.swapped()
    assert (swapped.axes, swapped.contract, swapped.transposed) == ((("experts",), ("hidden",), ("ffn", "ffn")), 1,
                                                                    True)
    raw = json.loads(resources.files("hyperclone.grow.families").joinpath("qwen3_vl_moe_text.json").read_text())
    for name, value in (("model.layers.{layer}.self_attn.q_proj.weight", True),
                        ("model.layers.{layer}.mlp.experts.down_proj", "yes")):
        tensors = [{**t, "may_be_transposed": value} if t["name"] == name else t for t in raw["tensors"]]
        with pytest.raises(ValueError, match="may_be_transposed is true or false, on a stack of expert matrices"):
            _parse_family({**raw, "tensors": tensors})


def test_idefics2_connector_grows_with_the_language_model(tmp_path):
    """Idefics2's connector reads the text config for its widths: modality_projection's SwiGLU is intermediate_size wide
    (an ffn axis: grown with the language model's MLP, here 80 -> 100, copies uneven, divided where down_proj reads
    them) and writes the text width; the perceiver resampler works in the text width (latents, RMSNorm weights
    gathered as the language model's own, q/k/v reading it, o_proj writing it) with its MLP 4 x as wide (an inner*4
    axis: 192 -> 288), its heads and head_dim kept. Exact on images with text at a hidden size that is no multiple
    (72: the copies' scales are not all 1, so a norm weight scaled with them would show)."""
    from safetensors.torch import load_file

    src = make_tiny_multimodal("idefics2", tmp_path / "src")
    out = grow(src, tmp_path / "out", hidden_size=72, heads=6, kv_heads=3, ffn_size=100, mode="uneven")
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    projection, perceiver = "model.connector.modality_projection.", "model.connector.perceiver_resampler."
    layer = f"{perceiver}layers.1."
    shapes = {f"{projection}gate_proj.weight": (100, 32), f"{projection}down_proj.weight": (72, 100),
              f"{perceiver}latents": (4, 72), f"{layer}self_attn.q_proj.weight": (16, 72),
              f"{layer}self_attn.k_proj.weight": (8, 72), f"{layer}self_attn.o_proj.weight": (72, 16),
              f"{layer}mlp.up_proj.weight": (288, 72), f"{layer}mlp.down_proj.weight": (72, 288),
              f"{perceiver}norm.weight": (72,)}
    assert {name: tuple(after[name].shape) for name in shapes} == shapes
    norm = f"{perceiver}layers.0.input_context_norm.weight"
    source_values = set(before[norm].tolist())
    assert len(source_values) == 48 and set(after[norm].tolist()) == source_values  # gathered, never scaled
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["intermediate_size"] == 100 and config["perceiver_config"]["hidden_size"] == 72
    assert image_rel_err(src, out, "idefics2") <= REL_TOL


@pytest.mark.parametrize("stated", [None, 64], ids=["left-out", "stale"])
def test_idefics2_perceiver_config_as_its_class_reads_it(tmp_path, stated):
    """Idefics2's config class gives the perceiver the text config's hidden size and rms_norm_eps wherever its own
    hidden_size (stated, or the class default 4096) is another: the grown config states the grown hidden size and the
    eps the source's class used (the text config's here, 0.02, large enough for the image check to see another),
    so the grown class cannot settle them otherwise."""
    src = make_tiny_multimodal("idefics2", tmp_path / "src",
                               text_config=dict(TINY_MULTIMODAL["idefics2"]["text_config"], rms_norm_eps=0.02))
    config = json.loads((src / "config.json").read_text())
    perceiver = {k: v for k, v in config["perceiver_config"].items() if k != "hidden_size"}
    (src / "config.json").write_text(json.dumps({**config, "perceiver_config": {
        **perceiver, **({} if stated is None else {"hidden_size": stated}), "rms_norm_eps": 1e-6}}))
    out = grow(src, tmp_path / "out", width=2)
    grown = json.loads((out / "config.json").read_text())["perceiver_config"]
    assert (grown["hidden_size"], grown["rms_norm_eps"]) == (96, 0.02)
    assert image_rel_err(src, out, "idefics2") <= REL_TOL


def test_idefics2_release_perceiver_eps_is_kept():
    """HuggingFaceM4/idefics2-8b's shape: a text hidden size of 4096, the perceiver's class default, with no perceiver
    hidden_size stated: its class keeps the perceiver's own eps (1e-6), not the text config's (1e-5). A grown config
    that left the keys out would get the text config's at 8192; the grown config states both, and its class reads
    the source's eps (config objects only, no weights)."""
    from transformers import AutoConfig

    from hyperclone.grow.wrapper import nest_config, resolved_config

    wrapper = WRAPPERS["idefics2"]
    text = dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                num_key_value_heads=8, num_hidden_layers=1, vocab_size=VOCAB, rms_norm_eps=1e-5)
    raw = {"model_type": "idefics2", "text_config": text, "perceiver_config": {"resampler_n_latents": 64}}
    assert resolved_config(wrapper, raw)["perceiver_config"]["rms_norm_eps"] == 1e-6
    grown = nest_config(wrapper, raw, {**text, "hidden_size": 8192}, {}, 8192, 4096)
    assert grown["perceiver_config"] == {"resampler_n_latents": 64, "hidden_size": 8192, "rms_norm_eps": 1e-6}
    assert raw["perceiver_config"] == {"resampler_n_latents": 64}  # the source's config is not changed
    read = AutoConfig.for_model(**grown).perceiver_config
    assert (read.hidden_size, read.rms_norm_eps) == (8192, 1e-6)
    left_out = AutoConfig.for_model(**{**grown, "perceiver_config": raw["perceiver_config"]}).perceiver_config
    assert left_out.rms_norm_eps == 1e-5  # what stating them avoids


def test_idefics2_perceiver_norms_need_the_mean_square_kept(tmp_path):
    """The perceiver's RMSNorms over the text width see the source's mean square wherever the language model's
    residual map keeps it: an RMSNorm family's weighted copies at any width (the growth tests' 1.5x), a LayerNorm
    family's (StableLM's) at whole factors only; at 1.5x its map holds means, and the growth is refused in one line,
    nothing written."""
    text = dict(TINY_CONFIGS["stablelm"], model_type="stablelm", vocab_size=VOCAB, max_position_embeddings=64)
    src = make_tiny_multimodal("idefics2", tmp_path / "src", text_config=text)
    with pytest.raises(HyperCloneError, match=r"input_\w+_norm\.weight: an RMSNorm over the residual stream .* "
                                              "from 48 to 72 does not; grow the hidden size by a whole factor"):
        grow(src, tmp_path / "a", hidden_size=72, heads=9, kv_heads=3)
    assert not (tmp_path / "a").exists()
    out = grow(src, tmp_path / "b", width=2)
    assert image_rel_err(src, out, "idefics2") <= REL_TOL


@pytest.mark.parametrize("axes,rule", [(["inner*1", "hidden"], {}), (["ffn*2", "hidden"], {}), (["inner*x"], {}),
                                       (["inner"], {"rms_norm": True}), (["hidden", "kept"], {"rms_norm": True}),
                                       (["hidden"], {"rms_norm": True, "norm": True})])
def test_projector_axis_kinds_are_checked(axes, rule):
    """The table's projector axes: hidden, inner (or inner*M, M >= 2, the width M x the hidden size), ffn or kept;
    rms_norm on a norm weight over the hidden axis alone, and never beside norm: anything else is a table mistake."""
    from hyperclone.grow.wrapper import _parse

    raw = {"text_config": "text_config", "tied_default": False, "text_family": "llama",
           "layouts": [{"model.text_model.": "model."}], "kept": [],
           "projector": [{"name": "^connector\\.w$", "axes": axes, **rule}]}
    with pytest.raises(ValueError, match="projector axes must be among|rms_norm is for a norm weight|not both"):
        _parse("x", raw)
    assert _parse("x", {**raw, "projector": [{"name": "^w$", "axes": ["inner*4", "ffn"], "contract": 1}]})


def test_apertus1p5_with_a_pruned_output_projection_grows(tmp_path):
    """The Apertus 1.5 releases prune the output projection to output_vocab_size rows (below the image tokens' ids
    here): grown through the wrapper, text and image logits exact, output_vocab_size kept in the text config."""
    text = dict(TINY_MULTIMODAL["apertus1p5"]["text_config"], output_vocab_size=64)
    src = make_tiny_multimodal("apertus1p5", tmp_path / "src", text_config=text)
    out = grow(src, tmp_path / "out", width=2, mode="noisy")
    assert json.loads((out / "config.json").read_text())["text_config"]["output_vocab_size"] == 64
    assert compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL).ok
    assert image_rel_err(src, out, "apertus1p5") <= REL_TOL
