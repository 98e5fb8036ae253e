#!/usr/bin/env python3
"""The baseline for Longshot's GPU Wan2.1 forward: diffusers' WanTransformer3DModel + PyTorch on
the same device, in the same run (the device harness runs both and prints the ratio).

Random weights (timing does not depend on values), bf16 parameters and activations, as a studio
would run diffusers. Which SDPA backend PyTorch picked (flash, mem-efficient, cuDNN or math) is
read from the kernel names of the warm-up forward, run under torch.profiler (untimed), next to
the torch.backends.cuda flags that allowed it. Prints one JSON line:
{"config", "latent": [T, H, W], "text_tokens", "dtype", "device", "warmup_ms", "ms_median", "ms_all",
 "sdpa": {"backend", "kernels", "enabled"}, "versions"}.

  python3 scripts/gpu/torch_wan_forward.py --config 1.3b --frames 81 --height 480 --width 832
  python3 scripts/gpu/torch_wan_forward.py --config tiny --device cpu --dtype float32   # smoke test
"""
import argparse
import json
import statistics
import time

import torch
import diffusers
from diffusers import WanTransformer3DModel

CONFIGS = {
    # Wan2.1 T2V-1.3B and 14B (docs/wan21.md §1.1; diffusers' defaults otherwise).
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    # A smoke-test size that runs on a CPU in seconds.
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=32, freq_dim=256),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="1.3b")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--layers", type=int, help="override num_layers (quick runs)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards; the first is profiled for the SDPA backend")
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    for name, v, m in [("frames", a.frames - 1, 4), ("height", a.height, 16), ("width", a.width, 16)]:
        if v < 0 or v % m:
            ap.error(f"--{name}: must be {'4k+1' if name == 'frames' else 'a multiple of 16'}")
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    cfg = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
               cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    cfg.update(CONFIGS[a.config])
    if a.layers:
        cfg["num_layers"] = a.layers
    diffusers.utils.logging.set_verbosity_error()  # the fp32-module cast below is deliberate
    with torch.device(a.device):
        model = WanTransformer3DModel(**cfg).to(dtype).eval()
    # As from_pretrained(torch_dtype=...) does: the modules diffusers keeps in float32 stay there.
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for name, p in model.named_parameters():
        if keep.intersection(name.split(".")):
            p.data = p.data.float()
    t, h, w = (a.frames - 1) // 4 + 1, a.height // 8, a.width // 8
    x = torch.randn(1, 16, t, h, w, device=a.device, dtype=dtype)
    ctx = torch.randn(1, a.text_tokens, cfg["text_dim"], device=a.device, dtype=dtype)
    step = torch.tensor([500], device=a.device)
    sync = synchronizer(a.device)
    forward = lambda: model(hidden_states=x, timestep=step, encoder_hidden_states=ctx, return_dict=False)[0]
    times, warmup_ms, sdpa = [], [], {"backend": "unknown", "kernels": []}
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            sync()
            t0 = time.perf_counter()
            if i == 0 and a.warmup > 0:
                out, sdpa = profiled(forward, a.device)
            else:
                out = forward()
            sync()
            (times if i >= a.warmup else warmup_ms).append((time.perf_counter() - t0) * 1e3)
    assert out.shape == x.shape and torch.isfinite(out.float()).all(), "bad output"
    sdpa["enabled"] = sdpa_flags()
    print(json.dumps({
        "config": a.config, "layers": cfg["num_layers"], "latent": [t, h, w], "text_tokens": a.text_tokens, "dtype": a.dtype,
        "device": device_label(a.device),
        "warmup_ms": warmup_ms, "ms_median": statistics.median(times) if times else None, "ms_all": times,
        "sdpa": sdpa,
        "versions": versions(),
    }))


# Shared with torch_wan_vae_decode.py.
def synchronizer(device):
    """What waits for the device's queued work (nothing to wait for on a CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def device_label(device):
    return torch.cuda.get_device_name() if device.startswith("cuda") else device


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


# Substrings of the kernel names of each SDPA backend (checked in this order; math has no kernel of
# its own: it is a matmul + softmax, seen as softmax kernels with no attention kernel).
# cuDNN also runs the patch embedding's Conv3d, so a cuDNN name counts only with an attention word.
SDPA_KERNELS = [
    ("cudnn", ("cudnn_attention", "native_sdpa", "cudnn_generated_fort_native_sdpa")),
    ("flash", ("flash_fwd", "flash::", "pytorch_flash", "scaled_dot_product_flash")),
    ("mem_efficient", ("fmha_cutlass", "efficient_attention", "mem_eff")),
]


def classify(names):
    """The SDPA backend seen in a list of kernel (or CPU op) names."""
    lower = [n.lower() for n in names]
    for backend, keys in SDPA_KERNELS:
        hits = [n for n, l in zip(names, lower) if any(k in l for k in keys)]
        if hits:
            return backend, hits
    soft = [n for n, l in zip(names, lower) if "softmax" in l]
    return ("math", soft) if soft else ("unknown", [])


def profiled(forward, device):
    """One forward under torch.profiler; returns its output and the SDPA backend it used."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    try:
        with profile(activities=acts) as prof:
            out = forward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
    except Exception as e:  # the profiler is a diagnostic: a failure must not cost the baseline
        return forward(), {"backend": "unknown", "kernels": [], "error": f"profiler: {e}"}
    names = sorted({ev.key for ev in prof.key_averages()})
    backend, hits = classify(names)
    return out, {"backend": backend, "kernels": sorted(set(hits))[:6]}


def sdpa_flags():
    """Which SDPA backends torch.backends.cuda allows (all on unless something turned them off)."""
    b = torch.backends.cuda
    flags = {}
    for name in ("flash_sdp_enabled", "mem_efficient_sdp_enabled", "cudnn_sdp_enabled", "math_sdp_enabled"):
        f = getattr(b, name, None)
        if f is not None:
            flags[name.replace("_sdp_enabled", "")] = bool(f())
    return flags


if __name__ == "__main__":
    main()
