#!/usr/bin/env python3
"""Golden fixtures for models/src/wan: Wan2.1 components as diffusers computes them, on the CPU in f32.

Regenerate (from the repository root; installs torch, diffusers, transformers, safetensors and
numpy with pip if missing):

    python3 scripts/goldens/wan.py                      # every component
    python3 scripts/goldens/wan.py --only transformer   # one component

Writes models/tests/fixtures/wan/ (checked by models/tests/wan_*.rs):

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

Components are one function each (`transformer_fixtures` now; the VAE decoder, the umT5 encoder
and the pipeline add theirs to COMPONENTS).
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
]
ORIGINAL_BLOCK_PARTS = [
    ("attn1.to_q.", "self_attn.q."), ("attn1.to_k.", "self_attn.k."), ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."), ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."), ("attn2.to_k.", "cross_attn.k."), ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."), ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
    ("norm2.", "norm3."),  # the affine cross-attention norm is norm3 in the original
    ("scale_shift_table", "modulation"),
]


def original_name(name):
    if name == "scale_shift_table":
        return "head.modulation"
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
    with torch.no_grad():
        out = vae.decode(z, return_dict=False)[0]
    assert out.dtype == torch.float32
    return out


def vae_fixtures(seed):
    cases = []

    def case(name, model_dir, inputs_file, what, cfg, inputs, expected):
        cases.append({
            "name": name, "model_dir": model_dir, "inputs": inputs_file, "what": what,
            "z": list(inputs["z"].shape), "expected": list(expected.shape),
            "clamped_fraction": round(float((expected.abs() >= 1.0).float().mean()), 4), "config": cfg,
        })

    # 1. diffusers' unit-test config, batch 2 (the test's (2,3,9,16,16) sample encodes to this shape).
    unit = build_vae(VAE_UNIT_TEST, seed)
    unit.save_pretrained(str(OUT / "vae_unit_test" / "vae"))
    unit_in = vae_case_inputs(unit, (2, 16, 3, 2, 2), seed + 2)
    expected = vae_decode(unit, unit_in["z"])
    f = save_case("vae_unit_test", unit_in, expected)
    case("vae_unit_test", "vae_unit_test/vae", f, "diffusers unit-test VAE (widths 3 -> 1 quirk), batch 2",
         VAE_UNIT_TEST, unit_in, expected)

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
    case("vae_unit_test_original", "vae_unit_test_original", f, "original Wan2.1 VAE key names and config",
         VAE_UNIT_TEST, unit_in, expected)

    # 3. Wan2.1's structure at 1/24 width: num_res_blocks 2, a non-square latent, 5 frames.
    small = build_vae(VAE_SMALL, seed + 10)
    small.save_pretrained(str(OUT / "vae_small" / "vae"))
    small_in = vae_case_inputs(small, (1, 16, 5, 3, 4), seed + 11)
    expected = vae_decode(small, small_in["z"])
    f = save_case("vae_small", small_in, expected)
    case("vae_small", "vae_small/vae", f, "Wan2.1 VAE structure at base_dim 4, H != W, 5 latent frames",
         VAE_SMALL, small_in, expected)
    return cases


COMPONENTS = {"transformer": transformer_fixtures, "vae": vae_fixtures}


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
    for i, name in enumerate(sorted(COMPONENTS)):
        if name not in only:
            continue
        # Model directories are rewritten from scratch so stale shards cannot linger.
        for old in components.get(name, []):
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
