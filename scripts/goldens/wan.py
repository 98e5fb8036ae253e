#!/usr/bin/env python3
"""Golden fixtures for models/src/wan: Wan2.1 components as diffusers computes them, on the CPU in f32.

Regenerate (from the repository root; installs torch, diffusers, transformers, safetensors and
numpy with pip if missing):

    python3 scripts/goldens/wan.py                      # every component
    python3 scripts/goldens/wan.py --only transformer   # one component

Writes models/tests/fixtures/wan/ (checked by models/tests/wan_*.rs; the `pipeline` component by
cli/tests/dev_sample.rs):

- manifest.json: versions, seeds, and one entry per test case: the model directory, the inputs
  file, and what the case exercises. The Rust tests also name the cases they expect, so a case
  that disappears from the manifest fails instead of being skipped.
- <model>/...: tiny random-weight models saved the way real checkpoints are laid out (diffusers
  `save_pretrained`, a sharded copy with an index.json, a bf16 and an f16 copy, and one copy with
  the original Wan2.1 key names and config.json, written by hand from spec §1.2).
- cases/<case>.safetensors: the inputs (torch layout, e.g. hidden_states [B,C,T,H,W] f32,
  timestep [B] int64 or f32, encoder_hidden_states [B,N,text_dim] f32 whose trailing rows are
  zero, as the pipeline pads the prompt) and `expected`, diffusers' f32 output.

Weights: diffusers' own initialisation, then N(0, 0.1) added to every parameter so that norm
weights, biases and scale_shift_tables are not their trivial 1 / 0 / small values (a bug that
ignores them would otherwise go unseen). Everything is seeded (SEED below, + case index).

Reduced-precision copies: the bf16 copy is what `from_pretrained(torch_dtype=bfloat16)` then
`save_pretrained` writes (the `_keep_in_fp32_modules` stay f32, so the file mixes dtypes); the f16
copy is all f16. Their `expected` is the f32 forward of diffusers with the weights rounded to that
dtype, since the Rust loader upcasts to f32 and runs in f32.

Components are one function each in COMPONENTS (`transformer_fixtures`, `vae_fixtures`,
`t5_fixtures`; the pipeline adds its own). `t5` also needs `sentencepiece` (installed on demand) to
train its tokenizer.
"""

import argparse
import copy
import importlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def ensure(*packages):
    missing = []
    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except ImportError:
            missing.append(pkg)
    if missing:
        print("installing", *missing, flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", *missing])


ensure("numpy", "torch", "diffusers", "transformers", "safetensors")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from diffusers import UniPCMultistepScheduler, WanTransformer3DModel  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "models" / "tests" / "fixtures" / "wan"
SEED = 20250611
PERTURB_STD = 0.1

# diffusers' unit-test config (tests/models/transformers/test_models_transformer_wan.py, spec §5).
UNIT_TEST = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
    text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
)
# The pipeline test's transformer (tests/pipelines/wan/test_wan.py): 16 latent channels, text_dim 32.
PIPELINE_TEST = dict(UNIT_TEST, in_channels=16, out_channels=16, text_dim=32)
# head_dim 20 splits RoPE unevenly (t 8, h 6, w 6); 3 heads, 3 layers, a small freq_dim.
ROPE_SPLIT = dict(
    UNIT_TEST, num_attention_heads=3, attention_head_dim=20, text_dim=24, ffn_dim=48, num_layers=3,
    freq_dim=64, rope_max_seq_len=16,
)


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------

# diffusers name fragment -> original Wan2.1 name fragment (spec §1.2, the inverse of
# TRANSFORMER_KEYS_RENAME_DICT in diffusers' scripts/convert_wan_to_diffusers.py).
ORIGINAL_PREFIXES = [
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("proj_out.", "head.head."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
]
ORIGINAL_BLOCK_PARTS = [
    ("attn1.to_q.", "self_attn.q."), ("attn1.to_k.", "self_attn.k."), ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."), ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."), ("attn2.to_k.", "cross_attn.k."), ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."), ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("attn2.add_k_proj.", "cross_attn.k_img."), ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
    ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
    ("norm2.", "norm3."),  # the affine cross-attention norm is norm3 in the original
    ("scale_shift_table", "modulation"),
]


def original_name(name):
    if name == "scale_shift_table":
        return "head.modulation"
    if name == "condition_embedder.image_embedder.pos_embed":
        return "img_emb.emb_pos"
    for new, old in ORIGINAL_PREFIXES:
        if name.startswith(new):
            return old + name[len(new):]
    if name.startswith("blocks."):
        _, idx, rest = name.split(".", 2)
        for new, old in ORIGINAL_BLOCK_PARTS:
            if rest.startswith(new):
                return f"blocks.{idx}.{old}{rest[len(new):]}"
    return name  # patch_embedding.* keeps its name


def original_config(cfg):
    """The original repo's config.json (wan/modules/model.py::WanModel arguments)."""
    return {
        "_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v",
        "patch_size": list(cfg["patch_size"]), "text_len": 512,
        "in_dim": cfg["in_channels"], "dim": cfg["num_attention_heads"] * cfg["attention_head_dim"],
        "ffn_dim": cfg["ffn_dim"], "freq_dim": cfg["freq_dim"], "text_dim": cfg["text_dim"],
        "out_dim": cfg["out_channels"], "num_heads": cfg["num_attention_heads"],
        "num_layers": cfg["num_layers"], "window_size": [-1, -1], "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6,
    }


def wan_unipc(shift):
    """The scheduler Wan2.1's diffusers pipelines ship (spec §4.2)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=shift,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero")


def build_transformer(cfg, seed):
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * PERTURB_STD)
    return model


def make_inputs(cfg, shape, text_tokens, real_tokens, timestep, seed):
    """hidden_states [B,C,T,H,W], timestep [B], encoder_hidden_states [B,N,text_dim] with rows
    real_tokens[b].. zero (the pipeline's zero padding)."""
    gen = torch.Generator().manual_seed(seed)
    b = shape[0]
    hidden = torch.randn(shape, generator=gen, dtype=torch.float32)
    ctx = torch.randn((b, text_tokens, cfg["text_dim"]), generator=gen, dtype=torch.float32)
    for i, n in enumerate(real_tokens):
        ctx[i, n:] = 0.0
    return {"hidden_states": hidden, "timestep": timestep, "encoder_hidden_states": ctx}


def forward(model, inputs):
    with torch.no_grad():
        out = model(
            hidden_states=inputs["hidden_states"], timestep=inputs["timestep"],
            encoder_hidden_states=inputs["encoder_hidden_states"], return_dict=False,
        )[0]
    assert out.dtype == torch.float32 and out.shape[0] == inputs["hidden_states"].shape[0]
    return out


def save_case(name, inputs, expected):
    path = OUT / "cases" / f"{name}.safetensors"
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    tensors["expected"] = expected.contiguous()
    save_file(tensors, str(path))
    return f"cases/{name}.safetensors"


def to_bf16_keeping_fp32_modules(model):
    """What `from_pretrained(torch_dtype=bfloat16)` loads (spec §1.4): every parameter in bf16 except
    those with a dotted name component in `_keep_in_fp32_modules`. Done by hand because diffusers
    needs `accelerate` for that path."""
    keep = set(WanTransformer3DModel._keep_in_fp32_modules)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if not keep.intersection(name.split(".")):
                p.data = p.data.to(torch.bfloat16)
    return out


def upcast_copy(model, cfg):
    """An f32 model with `model`'s (reduced-precision, as stored in the file) weights upcast."""
    ref = WanTransformer3DModel(**cfg).eval()
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return ref


def save_pipeline_extras(root):
    """model_index.json and scheduler/ as the Wan2.1 Diffusers repos have them (spec §4.2). The
    VAE, text encoder and tokenizer are not written yet: their entries are null."""
    index = {
        "_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"], "transformer": ["diffusers", "WanTransformer3DModel"],
        "text_encoder": [None, None], "tokenizer": [None, None], "vae": [None, None],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
    ).save_config(str(root / "scheduler"))


def transformer_fixtures(seed):
    cases = []

    def case(name, model_dir, inputs_file, what, cfg, inputs):
        cases.append({
            "name": name, "model_dir": model_dir, "inputs": inputs_file, "what": what,
            "hidden_states": list(inputs["hidden_states"].shape),
            "encoder_hidden_states": list(inputs["encoder_hidden_states"].shape),
            "timestep": inputs["timestep"].tolist(), "timestep_dtype": str(inputs["timestep"].dtype),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        })

    # 1. diffusers' unit-test config, as a pipeline directory; int64 and float timesteps.
    unit = build_transformer(UNIT_TEST, seed)
    root = OUT / "unit_test"
    unit.save_pretrained(str(root / "transformer"))
    save_pipeline_extras(root)
    t_int = torch.randint(0, 1000, (1,), generator=torch.Generator().manual_seed(seed + 2))
    unit_in = make_inputs(UNIT_TEST, (1, 4, 2, 16, 16), 12, [7], t_int, seed + 3)
    unit_file = save_case("unit_test", unit_in, forward(unit, unit_in))
    case("unit_test", "unit_test/transformer", unit_file, "diffusers unit-test config, int64 timestep",
         UNIT_TEST, unit_in)
    float_in = dict(unit_in, timestep=torch.tensor([731.25], dtype=torch.float32))
    float_file = save_case("unit_test_float_t", float_in, forward(unit, float_in))
    case("unit_test_float_t", "unit_test/transformer", float_file, "float timestep (FlowMatchEuler)",
         UNIT_TEST, float_in)

    # 2. The same weights, sharded with an index.json, and with the original Wan2.1 names.
    unit.save_pretrained(str(OUT / "unit_test_sharded" / "transformer"), max_shard_size="20KB")
    case("unit_test_sharded", "unit_test_sharded/transformer", unit_file, "sharded checkpoint",
         UNIT_TEST, unit_in)
    orig = OUT / "unit_test_original"
    orig.mkdir(parents=True, exist_ok=True)
    save_file({original_name(k): v.contiguous() for k, v in unit.state_dict().items()},
              str(orig / "diffusion_pytorch_model.safetensors"))
    (orig / "config.json").write_text(json.dumps(original_config(UNIT_TEST), indent=2) + "\n")
    case("unit_test_original", "unit_test_original", unit_file, "original Wan2.1 key names and config",
         UNIT_TEST, unit_in)

    # 3. Reduced-precision checkpoints of the same weights.
    bf16 = to_bf16_keeping_fp32_modules(unit)
    bf16.save_pretrained(str(OUT / "unit_test_bf16" / "transformer"))
    dtypes = {str(v.dtype) for v in bf16.state_dict().values()}
    assert dtypes == {"torch.bfloat16", "torch.float32"}, dtypes
    ref = upcast_copy(bf16, UNIT_TEST)
    f = save_case("unit_test_bf16", unit_in, forward(ref, unit_in))
    case("unit_test_bf16", "unit_test_bf16/transformer", f,
         "bf16 checkpoint (keep-in-fp32 modules f32); expected from the rounded weights in f32", UNIT_TEST, unit_in)
    f16 = copy.deepcopy(unit).to(torch.float16)
    f16.save_pretrained(str(OUT / "unit_test_f16" / "transformer"))
    ref = upcast_copy(f16, UNIT_TEST)
    f = save_case("unit_test_f16", unit_in, forward(ref, unit_in))
    case("unit_test_f16", "unit_test_f16/transformer", f, "f16 checkpoint; expected from the rounded weights",
         UNIT_TEST, unit_in)

    # 4. Pipeline-test variant: 16 channels, text_dim 32, non-square latent, float timestep.
    pipe = build_transformer(PIPELINE_TEST, seed + 10)
    pipe.save_pretrained(str(OUT / "pipeline_test" / "transformer"))
    pipe_in = make_inputs(PIPELINE_TEST, (1, 16, 3, 6, 10), 16, [5], torch.tensor([937.5]), seed + 11)
    f = save_case("pipeline_test", pipe_in, forward(pipe, pipe_in))
    case("pipeline_test", "pipeline_test/transformer", f, "pipeline-test config, H != W, 3 frames",
         PIPELINE_TEST, pipe_in)

    # 5. Uneven RoPE split, 3 layers, batch of 2 with different timesteps, all 512 text tokens.
    rope = build_transformer(ROPE_SPLIT, seed + 20)
    rope.save_pretrained(str(OUT / "rope_split" / "transformer"))
    rope_in = make_inputs(ROPE_SPLIT, (2, 4, 2, 8, 12), 512, [9, 1], torch.tensor([999, 17]), seed + 21)
    f = save_case("rope_split", rope_in, forward(rope, rope_in))
    case("rope_split", "rope_split/transformer", f,
         "head_dim 20 (RoPE t/h/w 8/6/6), batch 2, 512 zero-padded text tokens", ROPE_SPLIT, rope_in)
    return cases


# ---------------------------------------------------------------------------------------------
# VAE decoder (AutoencoderKLWan, spec §2)
# ---------------------------------------------------------------------------------------------

from diffusers import AutoencoderKLWan  # noqa: E402

# diffusers' unit-test VAE (tests/models/autoencoders/test_models_autoencoder_wan.py, spec §5): all
# widths 3, so up-blocks 1-3 start from 3 // 2 = 1 channel (a 1 -> 3 shortcut in their first resnet).
VAE_UNIT_TEST = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True])
# Wan2.1's VAE scaled down 24x in width (96 -> 4), same structure: widths [16,16,16,8,4],
# num_res_blocks 2 (the real halo), shortcut only in up-block 1, as in the real model.
VAE_SMALL = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 temperal_downsample=[False, True, True])
# num_res_blocks 1 at widths >= 4 everywhere ([8,8,8,8,4]): the unit-test config's 1-channel
# up-blocks normalise a single channel to sign(x)*gamma, which hides small differences, so the
# num_res_blocks-1 halo is checked on this one.
VAE_RES1 = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                temperal_downsample=[False, True, True])


def original_vae_name(name, num_res_blocks):
    """The Wan2.1_VAE.pth name of a diffusers decoder-side tensor name (spec §2.3, generalised from
    `convert_vae()` to any num_res_blocks: the original `decoder.upsamples` is one flat list holding,
    per up-block, num_res_blocks + 1 resnets and then the upsampler of every block but the last)."""
    resnet_parts = [("norm1.", "residual.0."), ("conv1.", "residual.2."), ("norm2.", "residual.3."),
                    ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut.")]

    def resnet(prefix, rest):
        for new, old in resnet_parts:
            if rest.startswith(new):
                return prefix + old + rest[len(new):]
        raise ValueError(name)

    if name.startswith("post_quant_conv."):
        return "conv2." + name[len("post_quant_conv."):]
    if name.startswith("decoder.conv_in."):
        return "decoder.conv1." + name[len("decoder.conv_in."):]
    if name.startswith("decoder.norm_out."):
        return "decoder.head.0." + name[len("decoder.norm_out."):]
    if name.startswith("decoder.conv_out."):
        return "decoder.head.2." + name[len("decoder.conv_out."):]
    parts = name.split(".")
    if name.startswith("decoder.mid_block.resnets."):
        return resnet(f"decoder.middle.{2 * int(parts[3])}.", ".".join(parts[4:]))
    if name.startswith("decoder.mid_block.attentions.0."):
        return "decoder.middle.1." + ".".join(parts[4:])
    if name.startswith("decoder.up_blocks."):
        block, per_block = int(parts[2]), num_res_blocks + 2
        if parts[3] == "resnets":
            return resnet(f"decoder.upsamples.{block * per_block + int(parts[4])}.", ".".join(parts[5:]))
        if parts[3] == "upsamplers":
            return f"decoder.upsamples.{block * per_block + num_res_blocks + 1}." + ".".join(parts[5:])
    # Encoder side (convert_vae() maps encoder.downsamples.N to the flat encoder.down_blocks.N).
    for new, old in [("quant_conv.", "conv1."), ("encoder.conv_in.", "encoder.conv1."),
                     ("encoder.norm_out.", "encoder.head.0."), ("encoder.conv_out.", "encoder.head.2.")]:
        if name.startswith(new):
            return old + name[len(new):]
    if name.startswith("encoder.mid_block.resnets."):
        return resnet(f"encoder.middle.{2 * int(parts[3])}.", ".".join(parts[4:]))
    if name.startswith("encoder.mid_block.attentions.0."):
        return "encoder.middle.1." + ".".join(parts[4:])
    if name.startswith("encoder.down_blocks."):
        prefix, rest = f"encoder.downsamples.{parts[2]}.", ".".join(parts[3:])
        if rest.startswith("resample.") or rest.startswith("time_conv."):
            return prefix + rest
        return resnet(prefix, rest)
    raise ValueError(f"no original name for {name}")


def build_vae(cfg, seed):
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * PERTURB_STD)
    return vae


def vae_case_inputs(vae, shape, seed):
    """`latents` as the sampler leaves them and `z`, denormalised exactly as WanPipeline does
    before `vae.decode` (spec §4.3: a division by the reciprocal of std, then + mean)."""
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.dtype)
    return {"latents": latents, "z": latents / inv_std + mean}


def vae_decode(vae, z):
    """diffusers' `vae.decode(z).sample` in f32, and in f64 on a float64 copy of the same weights
    (the exact answer up to f64 rounding: it shows how far f32 itself is from it)."""
    with torch.no_grad():
        out = vae.decode(z, return_dict=False)[0]
        exact = copy.deepcopy(vae).double().decode(z.double(), return_dict=False)[0]
    assert out.dtype == torch.float32 and exact.dtype == torch.float64
    return out, exact


def vae_fixtures(seed):
    """AutoencoderKLWan decoders (checked by models/tests/wan_vae.rs). Each case file holds `latents`
    (sampler output), `z` (denormalised, what `vae.decode` gets; both [B,16,T,H,W] f32), `expected`
    (diffusers' f32 `vae.decode(z).sample`) and `expected_f64` (the same on a float64 copy)."""
    cases = []

    def decode_case(name, model_dir, what, cfg, vae, inputs):
        """Decodes `inputs["z"]`, saves the case file and its manifest entry; returns the file."""
        expected, exact = vae_decode(vae, inputs["z"])
        f32_error = float((expected.double() - exact).abs().max() / exact.abs().max())
        f = save_case(name, dict(inputs, expected_f64=exact), expected)
        cases.append({
            "name": name, "model_dir": model_dir, "inputs": f, "what": what,
            "z": list(inputs["z"].shape), "expected": list(expected.shape),
            "clamped_fraction": round(float((expected.abs() >= 1.0).float().mean()), 4),
            "diffusers_f32_vs_f64": float(f"{f32_error:.3e}"), "config": cfg,
        })
        return f

    # 1. diffusers' unit-test config, batch 2 (the test's (2,3,9,16,16) sample encodes to this shape).
    unit = build_vae(VAE_UNIT_TEST, seed)
    unit.save_pretrained(str(OUT / "vae_unit_test" / "vae"))
    unit_in = vae_case_inputs(unit, (2, 16, 3, 2, 2), seed + 2)
    decode_case("vae_unit_test", "vae_unit_test/vae", "diffusers unit-test VAE (widths 3 -> 1 quirk), batch 2",
                VAE_UNIT_TEST, unit, unit_in)

    # 2. The same weights, decoder half only, under the original Wan2.1_VAE.pth names, with the
    # original constructor's argument names as config.json (Wan2.1_VAE.pth ships without one).
    orig = OUT / "vae_unit_test_original"
    orig.mkdir(parents=True, exist_ok=True)
    decoder_side = {k: v for k, v in unit.state_dict().items()
                    if k.startswith("decoder.") or k.startswith("post_quant_conv.")}
    tensors = {original_vae_name(k, VAE_UNIT_TEST["num_res_blocks"]): v.contiguous()
               for k, v in decoder_side.items()}
    assert len(tensors) == len(decoder_side)
    save_file(tensors, str(orig / "Wan2.1_VAE.safetensors"))
    original_cfg = dict(dim=VAE_UNIT_TEST["base_dim"], z_dim=16, dim_mult=VAE_UNIT_TEST["dim_mult"],
                        num_res_blocks=VAE_UNIT_TEST["num_res_blocks"], attn_scales=[],
                        temperal_downsample=VAE_UNIT_TEST["temperal_downsample"], dropout=0.0)
    (orig / "config.json").write_text(json.dumps(original_cfg, indent=2) + "\n")
    cases.append(dict(cases[0], name="vae_unit_test_original", model_dir="vae_unit_test_original",
                      what="original Wan2.1 VAE key names and config (inputs and expected of vae_unit_test)"))

    # 3. Wan2.1's structure at 1/24 width: num_res_blocks 2, a non-square latent, 5 frames.
    small = build_vae(VAE_SMALL, seed + 10)
    small.save_pretrained(str(OUT / "vae_small" / "vae"))
    decode_case("vae_small", "vae_small/vae", "Wan2.1 VAE structure at base_dim 4, H != W, 5 latent frames",
                VAE_SMALL, small, vae_case_inputs(small, (1, 16, 5, 3, 4), seed + 11))

    # 4. num_res_blocks 1 without 1-channel blocks, H != W, 4 latent frames.
    res1 = build_vae(VAE_RES1, seed + 20)
    res1.save_pretrained(str(OUT / "vae_res1" / "vae"))
    decode_case("vae_res1", "vae_res1/vae", "num_res_blocks 1, dim_mult [1,2,2,2], H != W, 4 latent frames",
                VAE_RES1, res1, vae_case_inputs(res1, (1, 16, 4, 2, 3), seed + 21))
    return cases


def vae_encode(vae, video):
    """diffusers' `vae.encode(video).latent_dist.mean` in f32, and in f64 on a float64 copy."""
    with torch.no_grad():
        out = vae.encode(video).latent_dist.mean
        exact = copy.deepcopy(vae).double().encode(video.double()).latent_dist.mean
    assert out.dtype == torch.float32 and exact.dtype == torch.float64
    return out, exact


def vae_encoder_fixtures(seed):
    """AutoencoderKLWan encoders (checked by models/tests/wan_vae_encode.rs). Each case file holds
    `video` ([B,3,F,H,W] f32 in [-1, 1]), `expected` (diffusers' f32 posterior mean, not normalised)
    and `expected_f64` (the same on a float64 copy of the weights)."""
    cases = []

    def encode_case(name, model_dir, what, cfg, vae, shape, video_seed):
        gen = torch.Generator().manual_seed(video_seed)
        video = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
        expected, exact = vae_encode(vae, video)
        f32_error = float((expected.double() - exact).abs().max() / exact.abs().max())
        f = save_case(name, {"video": video, "expected_f64": exact}, expected)
        cases.append({
            "name": name, "model_dir": model_dir, "inputs": f, "what": what,
            "video": list(video.shape), "expected": list(expected.shape),
            "diffusers_f32_vs_f64": float(f"{f32_error:.3e}"), "config": cfg,
        })

    # 1. diffusers' unit-test VAE and its test's sample shape (2,3,9,16,16): batch 2, 9 frames.
    unit = build_vae(VAE_UNIT_TEST, seed)
    unit.save_pretrained(str(OUT / "vae_enc_unit_test" / "vae"))
    encode_case("vae_enc_unit_test", "vae_enc_unit_test/vae", "diffusers unit-test VAE, batch 2, 9 frames",
                VAE_UNIT_TEST, unit, (2, 3, 9, 16, 16), seed + 1)

    # 2. The same weights, encoder half only, under the original Wan2.1_VAE.pth names.
    orig = OUT / "vae_enc_unit_test_original"
    orig.mkdir(parents=True, exist_ok=True)
    encoder_side = {k: v for k, v in unit.state_dict().items()
                    if k.startswith("encoder.") or k.startswith("quant_conv.")}
    tensors = {original_vae_name(k, VAE_UNIT_TEST["num_res_blocks"]): v.contiguous()
               for k, v in encoder_side.items()}
    assert len(tensors) == len(encoder_side)
    # The decoder's input conv is what names the convention; a checkpoint always has both halves.
    tensors.update({original_vae_name(k, VAE_UNIT_TEST["num_res_blocks"]): v.contiguous()
                    for k, v in unit.state_dict().items() if k.startswith("decoder.conv_in.")})
    save_file(tensors, str(orig / "Wan2.1_VAE.safetensors"))
    original_cfg = dict(dim=VAE_UNIT_TEST["base_dim"], z_dim=16, dim_mult=VAE_UNIT_TEST["dim_mult"],
                        num_res_blocks=VAE_UNIT_TEST["num_res_blocks"], attn_scales=[],
                        temperal_downsample=VAE_UNIT_TEST["temperal_downsample"], dropout=0.0)
    (orig / "config.json").write_text(json.dumps(original_cfg, indent=2) + "\n")
    cases.append(dict(cases[0], name="vae_enc_unit_test_original", model_dir="vae_enc_unit_test_original",
                      what="original Wan2.1 VAE key names and config (video and expected of vae_enc_unit_test)"))

    # 3. Wan2.1's structure at 1/24 width, H != W, 11 frames (the last 2 dropped, as diffusers does).
    small = build_vae(VAE_SMALL, seed + 10)
    small.save_pretrained(str(OUT / "vae_enc_small" / "vae"))
    encode_case("vae_enc_small", "vae_enc_small/vae",
                "Wan2.1 VAE structure at base_dim 4, 11 frames (9 used), 24x32", VAE_SMALL, small,
                (1, 3, 11, 24, 32), seed + 11)
    return cases


# ---------------------------------------------------------------------------------------------
# umT5 text encoder and tokenizer (spec §3)
# ---------------------------------------------------------------------------------------------

# umT5-XXL's structure (gated tanh-GELU FFN, a relative bias per layer, 32 buckets, max distance 128)
# at d_model 32; vocab_size above the tokenizer's size, as the real 256384 > 256300.
UMT5_TINY = dict(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1,
                 decoder_start_token_id=0)
T5_MAX_LENGTH = 512  # WanPipeline.__call__'s max_sequence_length
T5_EXTRA_IDS = 3  # sentinel tokens <extra_id_N>, as umT5 has 300 of
# §4.3's prompts, and the tokenizer's training text.
NEGATIVE_EN = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards")
NEGATIVE_ZH = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走")
T5_CORPUS = [
    NEGATIVE_EN, NEGATIVE_ZH,
    "A cat walks on the grass, realistic style.",
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "A neon sign glows at night in the rain; the camera slowly pans across a busy street.",
    "Un chat marche sur l'herbe, style réaliste. Café, naïve, déjà vu.",
    "& ; # < > \" ' ( ) [ ] { } / | @ ! ? % + = * ~ ^ $ € © ¬ 0123456789",
]
# (name, prompt, run the encoder?) — the encoder cases also check the tokenizer.
T5_PROMPTS = [
    ("empty_negative", "", True),
    ("simple", "A cat walks on the grass, realistic style.", True),
    ("html_whitespace", "  Two &amp;quot;anthropomorphic&amp;quot; cats &lt;b&gt;fight&lt;/b&gt;\t\n on a   "
                        "spotlighted&nbsp;stage &copy; &#x41;&#66;  ", True),
    ("unicode", "色调艳丽，过曝 — Café naïve “déjà vu” ﬁ ① Ｆｕｌｌ 🐱 x\u00a8", True),
    ("negative_en", NEGATIVE_EN, True),
    ("negative_zh", NEGATIVE_ZH, True),
    ("special_literals", "a </s> b <pad> <extra_id_0>x", True),
    ("control_chars", "\x1c rain \x01 at night \x01\x1c", True),
    ("long_truncated", " ".join([NEGATIVE_EN, NEGATIVE_ZH] * 5), True),
    # Tokenizer and prompt_clean only: html.unescape's corners, Python's two whitespace sets.
    ("html_double", "&amp;amp; &amp;lt;b&amp;gt; &amp;nbsp;x &&amp;&&", False),
    ("html_legacy_prefix", "&ampx &amp &AMP; &notit; &notin; &not &copy2024 &lang; &NotNestedGreaterGreater;", False),
    ("html_numeric", "&#0; &#13; &#128; &#x80; &#150; &#x110000; &#xD800; &#1114111; &#65 &#x41 &#X41; "
                     "&#00000000000000000000000065; &#x1F600; &#127; &#xFDD0;", False),
    ("html_not_refs", "&#; &#x; & ; &unknownentity; & &a1234567890123456789012345678901234567890; a&b", False),
    ("whitespace_sets", "\u3000 full\u00a0width \u2028 sep\x85 \x1c\x1d\x1e\x1f edges \x1f tab\tnew\nline\r\n"
                        "vt\x0bff\x0c\u200b zero", False),
    ("fullwidth", "ＡＢＣ １２３ ｶﾀｶﾅ ㈱ ㎏", False),
]


def spm_precompiled_charsmap(model_proto):
    """NormalizerSpec.precompiled_charsmap (ModelProto field 3, NormalizerSpec field 2), read from the
    protobuf wire format directly so that no protobuf package is needed."""
    def varint(b, i):
        value = shift = 0
        while True:
            c = b[i]
            i += 1
            value |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return value, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            wire = key & 7
            if wire == 0:
                value, i = varint(b, i)
            elif wire == 2:
                n, i = varint(b, i)
                value, i = b[i:i + n], i + n
            elif wire in (1, 5):
                n = 8 if wire == 1 else 4
                value, i = b[i:i + n], i + n
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
            yield key >> 3, value

    spec = next(v for f, v in fields(model_proto) if f == 3)
    return next(v for f, v in fields(spec) if f == 2)


def build_umt5_tokenizer(out_dir):
    """A SentencePiece Unigram model trained on T5_CORPUS with umT5's normaliser (nmt_nfkc) and
    special ids (<pad> 0, </s> 1, <unk> 2, no <s>), written as tokenizer.json in the layout
    transformers 4.x's T5Converter gave umT5 (Precompiled + Replace normaliser, Metaspace, Unigram
    without byte fallback, `$A </s>` post-processor, sentinels at the end of the vocabulary)."""
    ensure("sentencepiece")
    import io
    import sentencepiece as spm
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(T5_CORPUS * 4), model_writer=buf, model_type="unigram", vocab_size=300,
        hard_vocab_limit=False, normalization_rule_name="nmt_nfkc", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    sentinels = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    vocab += [(s, 0.0) for s in reversed(sentinels)]
    assert [p for p, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"], vocab[:3]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(spm_precompiled_charsmap(buf.getvalue())),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True) for t in ["<pad>", "</s>", "<unk>"] + sentinels])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "T5Tokenizer", "extra_ids": T5_EXTRA_IDS, "additional_special_tokens": sentinels,
        "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": T5_MAX_LENGTH,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return len(vocab)


def t5_fixtures(seed):
    """umt5_tiny/: a pipeline directory with text_encoder/ (UMT5_TINY, perturbed random weights,
    `save_pretrained`, so the tied embedding is stored once as shared.weight) and tokenizer/
    (build_umt5_tokenizer). cases/t5.safetensors: per prompt `{name}.input_ids` (the pipeline's
    input_ids[:seq_len], int64) and, for encoder cases, `{name}.prompt_embeds` (rows [:seq_len] of
    WanPipeline._get_t5_prompt_embeds' [512, d] output; the rest is asserted zero here), plus
    `relative_position_bucket`. The tokenizer is transformers' AutoTokenizer, as the pipeline loads it."""
    import types
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel
    from diffusers.pipelines.wan.pipeline_wan import WanPipeline, prompt_clean

    root = OUT / "umt5_tiny"
    n_tokens = build_umt5_tokenizer(root / "tokenizer")
    assert n_tokens <= UMT5_TINY["vocab_size"], n_tokens
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    # The file exactly as shipped (what transformers 4.x and the original Wan repo tokenise with),
    # recorded for comparison: transformers 5's T5Tokenizer rebuilds its pre-tokenizer.
    file_tokenizer = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))
    file_tokenizer.enable_truncation(T5_MAX_LENGTH)

    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(**UMT5_TINY)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * PERTURB_STD)
    model.save_pretrained(str(root / "text_encoder"))
    index = {
        "_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__,
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
        "scheduler": [None, None], "transformer": [None, None], "vae": [None, None],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    # The pipeline's own code, on a stand-in `self` holding only what it reads.
    pipe = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=model, _execution_device=torch.device("cpu"))

    tensors, cases = {}, []
    for name, prompt, run_encoder in T5_PROMPTS:
        cleaned = prompt_clean(prompt)
        enc = tokenizer(cleaned, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True,
                        add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        seq_len = int(enc.attention_mask.sum())
        ids = enc.input_ids[0]
        assert ids[seq_len - 1] == 1 and bool((ids[seq_len:] == 0).all()), name
        tensors[f"{name}.input_ids"] = ids[:seq_len].clone()
        entry = {
            "name": name, "model_dir": "umt5_tiny/text_encoder", "pipeline_dir": "umt5_tiny",
            "inputs": "cases/t5.safetensors", "prompt": prompt, "cleaned": cleaned, "seq_len": seq_len,
            "tokenizer_json_as_is_agrees": file_tokenizer.encode(cleaned).ids == ids[:seq_len].tolist(),
        }
        if run_encoder:
            with torch.no_grad():
                embeds = WanPipeline._get_t5_prompt_embeds(
                    pipe, prompt=prompt, max_sequence_length=T5_MAX_LENGTH, device=torch.device("cpu"),
                    dtype=torch.float32)[0]
                unpadded = model(ids[None, :seq_len]).last_hidden_state[0]
            assert embeds.shape == (T5_MAX_LENGTH, UMT5_TINY["d_model"]) and embeds.dtype == torch.float32
            assert bool((embeds[seq_len:] == 0).all()), name
            tensors[f"{name}.prompt_embeds"] = embeds[:seq_len].clone()
            # Spec §3: the encoder on the real tokens alone gives the masked full-length result.
            gap = float((unpadded - embeds[:seq_len]).abs().max() / embeds[:seq_len].abs().max())
            entry.update({
                "what": "prompt_embeds rows [:seq_len] from WanPipeline._get_t5_prompt_embeds (rows after "
                        "seq_len are zero)",
                "prompt_embeds": list(embeds.shape), "unpadded_vs_masked_rel": gap,
                "attn_implementation": model.config._attn_implementation,
            })
        else:
            entry["what"] = "prompt_clean and token ids only"
        cases.append(entry)

    # The relative-position buckets of rel = key - query in -600..600 (fp32 log, truncation).
    rel = torch.arange(-600, 601)
    buckets = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket(rel)
    tensors["relative_position_bucket"] = buckets.to(torch.int64)
    cases.append({"name": "relative_position_bucket", "model_dir": "umt5_tiny/text_encoder",
                  "inputs": "cases/t5.safetensors", "what": "bucket of rel = -600..600 (index rel + 600)",
                  "config": UMT5_TINY})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "cases" / "t5.safetensors"))
    return cases


# ---------------------------------------------------------------------------------------------
# The whole sampler (WanPipeline.__call__, spec §4)
# ---------------------------------------------------------------------------------------------

# (case, scheduler, what): the saved UniPC scheduler, and FlowMatchEuler (float timesteps).
PIPELINE_CASES = [("unipc", "UniPCMultistepScheduler flow_prediction, flow_shift 3.0 (the saved scheduler/)"),
                  ("euler", "FlowMatchEulerDiscreteScheduler(shift=3.0) swapped in (float timesteps)")]
PIPELINE_LATENTS = (1, 16, 3, 4, 6)  # -> 9 frames of 32x48
PIPELINE_SETTINGS = dict(num_inference_steps=4, guidance_scale=5.0, shift=3.0)
PIPELINE_TOKENS = (16, [5, 3])  # text tokens, real rows of prompt / negative prompt (the rest are zero)


def pipeline_fixtures(seed):
    """pipeline_tiny/: a WanPipeline directory written by `WanPipeline.save_pretrained` (no text
    encoder or tokenizer: null entries) with transformer/ (PIPELINE_TEST config), vae/ (VAE_SMALL
    config), both with perturbed random weights, and scheduler/ (UniPC, flow_shift 3.0, spec §4.2).
    cases/pipeline_tiny_{unipc,euler}.safetensors: inputs `latents` [1,16,T,H,W], `prompt_embeds`
    and `negative_prompt_embeds` [1,N,32] (zero rows after the prompt's tokens), and the real
    WanPipeline's f32 CPU results: `expected_latents` (after the last scheduler step, captured by
    callback_on_step_end) and `expected_video` [F,H,W,3] in [0, 1] (output_type "np")."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    root = OUT / "pipeline_tiny"
    transformer = build_transformer(PIPELINE_TEST, seed)
    vae = build_vae(VAE_SMALL, seed + 10)
    scheduler = wan_unipc(PIPELINE_SETTINGS["shift"])
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(root))

    gen = torch.Generator().manual_seed(seed + 20)
    latents = torch.randn(PIPELINE_LATENTS, generator=gen, dtype=torch.float32)
    n_tokens, (n_pos, n_neg) = PIPELINE_TOKENS
    prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen, dtype=torch.float32)
    negative_prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen,
                                         dtype=torch.float32)
    prompt_embeds[:, n_pos:] = 0.0
    negative_prompt_embeds[:, n_neg:] = 0.0
    _, _, lt, lh, lw = PIPELINE_LATENTS
    num_frames, height, width = 4 * (lt - 1) + 1, 8 * lh, 8 * lw

    cases = []
    for name, what in PIPELINE_CASES:
        if name == "unipc":
            pipe.scheduler = UniPCMultistepScheduler.from_config(scheduler.config)
        else:
            pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=PIPELINE_SETTINGS["shift"])
        seen = {"timesteps": []}

        def on_step_end(_pipe, i, t, kwargs):
            seen["timesteps"].append(t.item())
            seen["latents"] = kwargs["latents"].clone()
            return {}

        with torch.no_grad():
            video = pipe(
                prompt=None, negative_prompt=None, prompt_embeds=prompt_embeds.clone(),
                negative_prompt_embeds=negative_prompt_embeds.clone(), latents=latents.clone(),
                height=height, width=width, num_frames=num_frames,
                num_inference_steps=PIPELINE_SETTINGS["num_inference_steps"],
                guidance_scale=PIPELINE_SETTINGS["guidance_scale"], output_type="np",
                callback_on_step_end=on_step_end, return_dict=False,
            )[0]
        video = torch.from_numpy(np.asarray(video[0])).float()
        assert video.shape == (num_frames, height, width, 3), video.shape
        assert seen["latents"].dtype == torch.float32 and seen["latents"].shape == latents.shape
        f = OUT / "cases" / f"pipeline_tiny_{name}.safetensors"
        save_file({
            "latents": latents.contiguous(), "prompt_embeds": prompt_embeds.contiguous(),
            "negative_prompt_embeds": negative_prompt_embeds.contiguous(),
            "expected_latents": seen["latents"].contiguous(), "expected_video": video.contiguous(),
        }, str(f))
        cases.append({
            "name": f"pipeline_tiny_{name}", "model_dir": "pipeline_tiny", "inputs": f"cases/{f.name}",
            "what": what, "solver": name, "steps": PIPELINE_SETTINGS["num_inference_steps"],
            "guidance": PIPELINE_SETTINGS["guidance_scale"], "shift": PIPELINE_SETTINGS["shift"],
            "timesteps": seen["timesteps"], "timestep_dtype": str(pipe.scheduler.timesteps.dtype),
            "sigmas": [float(s) for s in pipe.scheduler.sigmas],
            "latents": list(latents.shape), "prompt_tokens": [n_tokens, n_pos],
            "negative_prompt_tokens": [n_tokens, n_neg], "video": list(video.shape),
            "height": height, "width": width, "num_frames": num_frames, "output_type": "np",
            "scheduler_config": dict(pipe.scheduler.config),
            "transformer_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in PIPELINE_TEST.items()},
            "vae_config": VAE_SMALL,
        })
    return cases


# Seeds follow this order (SEED + 1000·position), so new components go at the end.
# diffusers' image-to-video pipeline test transformer (tests/pipelines/wan/test_wan_image_to_video.py):
# 36 input channels (noise + mask + image latents), image_dim 4, added K/V from the inner dim (24).
I2V_TEST = dict(PIPELINE_TEST, in_channels=36, out_channels=16, image_dim=4, added_kv_proj_dim=24)
# First-and-last-frame: both images' tokens (2 x 5 here) with a learned position embedding.
FLF2V_TEST = dict(I2V_TEST, pos_embed_seq_len=10)


def transformer_i2v_fixtures(seed):
    """Image-to-video transformers (checked by models/tests/wan_transformer_i2v.rs). Each case file
    holds hidden_states [B,36,T,H,W], timestep [B], encoder_hidden_states [B,512,32] (diffusers takes
    the last 512 rows as text, the rest as image), encoder_hidden_states_image [B,M,4] and expected."""
    cases = []

    def run(model, inputs):
        with torch.no_grad():
            out = model(hidden_states=inputs["hidden_states"], timestep=inputs["timestep"],
                        encoder_hidden_states=inputs["encoder_hidden_states"],
                        encoder_hidden_states_image=inputs["encoder_hidden_states_image"], return_dict=False)[0]
        assert out.dtype == torch.float32
        return out

    def add(name, model_dir, what, cfg, model, shape, images, image_tokens, t, case_seed):
        """`images` per batch item (2 for first-and-last-frame: diffusers takes [2B, M, image_dim])."""
        inputs = make_inputs(cfg, shape, 512, [7] * shape[0], t, case_seed)
        gen = torch.Generator().manual_seed(case_seed + 1)
        inputs["encoder_hidden_states_image"] = torch.randn((images * shape[0], image_tokens, cfg["image_dim"]),
                                                            generator=gen, dtype=torch.float32)
        f = save_case(name, inputs, run(model, inputs))
        cases.append({
            "name": name, "model_dir": model_dir, "inputs": f, "what": what,
            "hidden_states": list(inputs["hidden_states"].shape),
            "encoder_hidden_states_image": list(inputs["encoder_hidden_states_image"].shape),
            "timestep": inputs["timestep"].tolist(),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        })

    i2v = build_transformer(I2V_TEST, seed)
    i2v.save_pretrained(str(OUT / "i2v_test" / "transformer"))
    add("i2v_test", "i2v_test/transformer", "I2V pipeline-test transformer, batch 2, 5 image tokens", I2V_TEST,
        i2v, (2, 36, 2, 4, 6), 1, 5, torch.tensor([999, 421]), seed + 1)
    orig = OUT / "i2v_test_original"
    orig.mkdir(parents=True, exist_ok=True)
    save_file({original_name(k): v.contiguous() for k, v in i2v.state_dict().items()},
              str(orig / "diffusion_pytorch_model.safetensors"))
    (orig / "config.json").write_text(json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in I2V_TEST.items()}, indent=2) + "\n")
    cases.append(dict(cases[0], name="i2v_test_original", model_dir="i2v_test_original",
                      what="original Wan2.1 I2V key names (diffusers config; inputs and expected of i2v_test)"))
    flf = build_transformer(FLF2V_TEST, seed + 10)
    flf.save_pretrained(str(OUT / "flf2v_test" / "transformer"))
    add("flf2v_test", "flf2v_test/transformer", "first-and-last-frame transformer: 2 x 5 image tokens + pos_embed",
        FLF2V_TEST, flf, (1, 36, 3, 4, 4), 2, 5, torch.tensor([500]), seed + 11)
    return cases


# diffusers' image-to-video pipeline test's image encoder (CLIPVisionConfig defaults: quick_gelu), and
# ViT-H/14's structure (exact GELU, patch 14) at a small width.
CLIP_TEST = dict(hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                 intermediate_size=16, patch_size=1)
CLIP_VIT_H_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                        image_size=56, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16)


def image_encoder_fixtures(seed):
    """CLIPVisionModel image encoders (checked by models/tests/wan_clip.rs): `pixel_values` [B,3,S,S]
    (as CLIPImageProcessor leaves them) and `expected`, the penultimate hidden states that
    WanImageToVideoPipeline.encode_image keeps (`hidden_states[-2]`)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cases = []
    for name, cfg, batch in [("clip_test", CLIP_TEST, 1), ("clip_vit_h_small", CLIP_VIT_H_SMALL, 2)]:
        torch.manual_seed(seed)
        model = CLIPVisionModel(CLIPVisionConfig(**cfg)).eval()
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for prm in model.parameters():
                prm.add_(torch.randn(prm.shape, generator=gen, dtype=prm.dtype) * PERTURB_STD)
        model.save_pretrained(str(OUT / name / "image_encoder"))
        s = cfg["image_size"]
        pixels = torch.randn((batch, 3, s, s), generator=gen, dtype=torch.float32)
        with torch.no_grad():
            out = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        f = save_case(name, {"pixel_values": pixels}, out)
        cases.append({"name": name, "model_dir": f"{name}/image_encoder", "inputs": f,
                      "what": f"CLIPVisionModel {cfg}", "pixel_values": list(pixels.shape),
                      "expected": list(out.shape)})
        seed += 10
    # The real Wan2.1 I2V image_encoder/ was saved by transformers 4: names under `vision_model.`.
    v4 = OUT / "clip_test_v4_names" / "image_encoder"
    v4.mkdir(parents=True, exist_ok=True)
    shutil.copy(OUT / "clip_test" / "image_encoder" / "config.json", v4 / "config.json")
    src = OUT / "clip_test" / "image_encoder" / "model.safetensors"
    with safetensors.safe_open(str(src), "pt") as fh:
        save_file({f"vision_model.{k}": fh.get_tensor(k) for k in fh.keys()}, str(v4 / "model.safetensors"))
    cases.append(dict(cases[0], name="clip_test_v4_names", model_dir="clip_test_v4_names/image_encoder",
                      what="clip_test's weights under transformers 4's vision_model. names"))
    return cases


PIL_RESIZES = [(16, 23), (64, 91), (37, 20), (5, 53), (224, 388)]


def pil_resize_fixtures(seed):
    """cases/pil_resize.safetensors: a random 37x53 RGB image (`image`, levels as f32) and Pillow's
    bicubic resize of it to each size in PIL_RESIZES (`out_HxW`), checked bit for bit by
    models/tests/wan_clip.rs."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (37, 53, 3), generator=gen, dtype=torch.uint8)
    img = Image.fromarray(pixels.numpy())
    tensors = {"image": pixels.float()}
    for h, w in PIL_RESIZES:
        tensors[f"out_{h}x{w}"] = torch.from_numpy(np.asarray(img.resize((w, h), Image.BICUBIC))).float()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "cases" / "pil_resize.safetensors"))
    import PIL
    return [{"name": "pil_resize", "inputs": "cases/pil_resize.safetensors", "pillow": PIL.__version__,
             "sizes": [list(s) for s in PIL_RESIZES]}]


I2V_SETTINGS = dict(num_inference_steps=4, guidance_scale=5.0, shift=3.0)


def image2video_fixtures(seed):
    """pipeline_i2v/ and pipeline_flf2v/: WanImageToVideoPipeline directories (I2V_TEST transformer;
    FLF2V with pos_embed_seq_len for two images' 1025 tokens), VAE_SMALL vae, CLIP_TEST image encoder
    with CLIPImageProcessor(crop_size=32, size=32), perturbed random weights, no text encoder.
    cases/{i2v,flf2v}.safetensors: `image` (and `last_image`) [H,W,3] f32 = uint8/255 (the pipeline
    gets the same pixels as PIL images), `latents` (the initial noise), prompt embeddings (512 rows), and the
    pipeline's f32 CPU `expected_latents` and `expected_video` [F,H,W,3]. The images are 32x48, so
    CLIPImageProcessor's resize (shortest edge 32) leaves them as they are and its centre crop takes
    the middle 32x32: no interpolation is on the path; i2v_resized's 48x64 images are shrunk first.
    Each case also holds the processor's `pixel_values`."""
    from diffusers import WanImageToVideoPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    cases = []
    _, _, lt, lh, lw = PIPELINE_LATENTS
    num_frames, height, width = 4 * (lt - 1) + 1, 8 * lh, 8 * lw
    # 512 text rows, as the pipeline's text encoder always pads to: diffusers' attention takes the
    # last 512 rows of the concatenated context as text and the rest as image.
    _, (n_pos, n_neg) = PIPELINE_TOKENS
    n_tokens = 512
    clip_tokens = 1 + (CLIP_TEST["image_size"] // CLIP_TEST["patch_size"]) ** 2
    for name, tcfg, two, latent_shape in [
            ("i2v", I2V_TEST, False, PIPELINE_LATENTS),
            ("flf2v", dict(I2V_TEST, pos_embed_seq_len=2 * clip_tokens), True, PIPELINE_LATENTS),
            # 48x64: CLIP's processor shrinks it to 32x42 (Pillow bicubic) before the crop.
            ("i2v_resized", I2V_TEST, False, (1, 16, 3, 6, 8))]:
        _, _, lt, lh, lw = latent_shape
        num_frames, height, width = 4 * (lt - 1) + 1, 8 * lh, 8 * lw
        root = OUT / f"pipeline_{name}"
        transformer = build_transformer(tcfg, seed)
        vae = build_vae(VAE_SMALL, seed + 10)
        torch.manual_seed(seed + 20)
        encoder = CLIPVisionModel(CLIPVisionConfig(**CLIP_TEST)).eval()
        gen = torch.Generator().manual_seed(seed + 21)
        with torch.no_grad():
            for prm in encoder.parameters():
                prm.add_(torch.randn(prm.shape, generator=gen, dtype=prm.dtype) * PERTURB_STD)
        scheduler = wan_unipc(I2V_SETTINGS["shift"])
        pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler,
                                       image_processor=CLIPImageProcessor(crop_size=32, size=32),
                                       image_encoder=encoder, transformer=transformer)
        pipe.set_progress_bar_config(disable=True)
        pipe.save_pretrained(str(root))

        gen = torch.Generator().manual_seed(seed + 30)
        pixels = [torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8) for _ in range(2)]
        images = [Image.fromarray(p.numpy()) for p in pixels]
        latents = torch.randn(latent_shape, generator=gen, dtype=torch.float32)
        prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen, dtype=torch.float32)
        negative_prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen,
                                             dtype=torch.float32)
        prompt_embeds[:, n_pos:] = 0.0
        negative_prompt_embeds[:, n_neg:] = 0.0
        pixel_values = pipe.image_processor(images=images[:1 + int(two)], return_tensors="pt")["pixel_values"]
        seen = {}

        def on_step_end(_pipe, i, t, kwargs):
            seen["latents"] = kwargs["latents"].clone()
            return {}

        with torch.no_grad():
            video = pipe(
                image=images[0], last_image=images[1] if two else None, prompt=None, negative_prompt=None,
                prompt_embeds=prompt_embeds.clone(), negative_prompt_embeds=negative_prompt_embeds.clone(),
                latents=latents.clone(), height=height, width=width, num_frames=num_frames,
                num_inference_steps=I2V_SETTINGS["num_inference_steps"],
                guidance_scale=I2V_SETTINGS["guidance_scale"], output_type="np",
                callback_on_step_end=on_step_end, return_dict=False,
            )[0]
        video = torch.from_numpy(np.asarray(video[0])).float()
        tensors = {
            "image": pixels[0].float() / 255.0, "latents": latents, "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_prompt_embeds, "expected_latents": seen["latents"],
            "expected_video": video, "pixel_values": pixel_values,
        }
        if two:
            tensors["last_image"] = pixels[1].float() / 255.0
        f = OUT / "cases" / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(f))
        cases.append({
            "name": name, "model_dir": f"pipeline_{name}", "inputs": f"cases/{f.name}",
            "what": "WanImageToVideoPipeline" + (", first and last frame" if two else "")
                    + (", CLIP's resize on the path" if name == "i2v_resized" else ""), "solver": "unipc",
            "steps": I2V_SETTINGS["num_inference_steps"], "guidance": I2V_SETTINGS["guidance_scale"],
            "shift": I2V_SETTINGS["shift"], "video": list(video.shape),
        })
        seed += 100
    return cases


V2V_SETTINGS = dict(num_inference_steps=6, strength=0.7, guidance_scale=5.0, shift=3.0)


def video2video_fixtures(seed):
    """pipeline_v2v/: a WanVideoToVideoPipeline directory (PIPELINE_TEST transformer, VAE_SMALL vae,
    perturbed random weights; no text encoder). cases/v2v_{unipc,euler}.safetensors: inputs `video`
    [F,H,W,3] f32 in [0, 1], `latents` (the noise the pipeline draws from its generator, [1,16,T,h,w]),
    `prompt_embeds` and `negative_prompt_embeds`, and the pipeline's f32 CPU results
    `expected_latents` (after the last step) and `expected_video` [F,H,W,3] in [0, 1]."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVideoToVideoPipeline

    root = OUT / "pipeline_v2v"
    transformer = build_transformer(PIPELINE_TEST, seed)
    vae = build_vae(VAE_SMALL, seed + 10)
    scheduler = wan_unipc(V2V_SETTINGS["shift"])
    pipe = WanVideoToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler,
                                   transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(root))

    gen = torch.Generator().manual_seed(seed + 20)
    _, _, lt, lh, lw = PIPELINE_LATENTS
    num_frames, height, width = 4 * (lt - 1) + 1, 8 * lh, 8 * lw
    video = torch.rand((num_frames, height, width, 3), generator=gen, dtype=torch.float32)
    n_tokens, (n_pos, n_neg) = PIPELINE_TOKENS
    prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen, dtype=torch.float32)
    negative_prompt_embeds = torch.randn((1, n_tokens, PIPELINE_TEST["text_dim"]), generator=gen,
                                         dtype=torch.float32)
    prompt_embeds[:, n_pos:] = 0.0
    negative_prompt_embeds[:, n_neg:] = 0.0
    noise_seed = seed + 30
    # The only random draw of the pipeline (the encode takes the posterior's mode).
    noise = torch.randn(PIPELINE_LATENTS, generator=torch.Generator().manual_seed(noise_seed), dtype=torch.float32)

    cases = []
    for name, what in [("unipc", "UniPC from the saved scheduler/, strength 0.7 of 6 steps (4 run)"),
                       ("euler", "FlowMatchEulerDiscreteScheduler(shift=3.0), strength 0.7 of 6 steps")]:
        if name == "unipc":
            pipe.scheduler = UniPCMultistepScheduler.from_config(scheduler.config)
        else:
            pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=V2V_SETTINGS["shift"])
        seen = {"timesteps": []}

        def on_step_end(_pipe, i, t, kwargs):
            seen["timesteps"].append(t.item())
            seen["latents"] = kwargs["latents"].clone()
            return {}

        with torch.no_grad():
            out = pipe(
                video=video.numpy(), prompt=None, negative_prompt=None, prompt_embeds=prompt_embeds.clone(),
                negative_prompt_embeds=negative_prompt_embeds.clone(), height=height, width=width,
                num_inference_steps=V2V_SETTINGS["num_inference_steps"], strength=V2V_SETTINGS["strength"],
                guidance_scale=V2V_SETTINGS["guidance_scale"], output_type="np",
                generator=torch.Generator().manual_seed(noise_seed),
                callback_on_step_end=on_step_end, return_dict=False,
            )[0]
        out = torch.from_numpy(np.asarray(out[0])).float()
        assert out.shape == (num_frames, height, width, 3), out.shape
        f = OUT / "cases" / f"v2v_{name}.safetensors"
        save_file({
            "video": video.contiguous(), "latents": noise.contiguous(),
            "prompt_embeds": prompt_embeds.contiguous(),
            "negative_prompt_embeds": negative_prompt_embeds.contiguous(),
            "expected_latents": seen["latents"].contiguous(), "expected_video": out.contiguous(),
        }, str(f))
        cases.append({
            "name": f"v2v_{name}", "model_dir": "pipeline_v2v", "inputs": f"cases/{f.name}", "what": what,
            "solver": name, "steps": V2V_SETTINGS["num_inference_steps"], "strength": V2V_SETTINGS["strength"],
            "guidance": V2V_SETTINGS["guidance_scale"], "shift": V2V_SETTINGS["shift"],
            "timesteps": seen["timesteps"], "video": list(video.shape),
        })
    return cases


COMPONENTS = {"transformer": transformer_fixtures, "vae": vae_fixtures, "t5": t5_fixtures,
              "pipeline": pipeline_fixtures, "vae_encoder": vae_encoder_fixtures,
              "video2video": video2video_fixtures, "transformer_i2v": transformer_i2v_fixtures,
              "image_encoder": image_encoder_fixtures, "image2video": image2video_fixtures,
              "pil_resize": pil_resize_fixtures}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(COMPONENTS), action="append",
                        help="regenerate only this component (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # leave the CPU to others; also makes the run reproducible
    torch.manual_seed(SEED)
    # The f16 copy is cast whole on purpose; diffusers would warn about its keep-in-fp32 modules.
    diffusers.utils.logging.set_verbosity_error()
    only = args.only or sorted(COMPONENTS)

    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({"generator": "scripts/goldens/wan.py", "seed": SEED, "perturb_std": PERTURB_STD,
                     "versions": versions()})
    components = manifest.setdefault("components", {})
    for i, name in enumerate(COMPONENTS):
        if name not in only:
            continue
        # Model directories are rewritten from scratch so stale shards cannot linger.
        for old in components.get(name, []):
            if "model_dir" not in old:
                continue
            top = OUT / Path(old["model_dir"]).parts[0]
            if top.exists():
                shutil.rmtree(top)
        (OUT / "cases").mkdir(parents=True, exist_ok=True)
        components[name] = COMPONENTS[name](SEED + 1000 * i)
        print(f"{name}: {len(components[name])} cases")
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
