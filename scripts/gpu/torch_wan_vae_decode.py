#!/usr/bin/env python3
"""The baseline for Longshot's GPU Wan2.1 VAE decode (models/benches/wan_gpu_vae_decode.rs):
diffusers' AutoencoderKLWan.decode + PyTorch on the same device, in the same run (the device
harness runs both and prints the ratio).

The Wan2.1 VAE config with random weights (timing does not depend on values), in float32 by
default: WanPipeline's documented setup loads the VAE with torch_dtype=torch.float32 next to a
bf16 transformer, and decode() is called on latents cast to the VAE's dtype. PyTorch's defaults
otherwise (cuDNN convs may use TF32: recorded as "tf32_conv"). A decode is `vae.decode(z)` of one
[1, 16, T, H/8, W/8] latent up to the synchronize; the frames stay on the device, so one copy of
them to the host is timed apart ("to_host_ms"; Longshot's decode includes that copy). Prints one
JSON line:
{"config", "latent": [C, T, H, W], "frames", "dtype", "tf32_conv", "device", "warmup_ms",
 "ms_median", "ms_all", "to_host_ms", "finite", "versions"}.

  python3 scripts/gpu/torch_wan_vae_decode.py --frames 81 --height 480 --width 832
  python3 scripts/gpu/torch_wan_vae_decode.py --config tiny --device cpu --frames 5 --height 32 --width 32   # smoke test
"""
import time

T0 = time.perf_counter()  # --budget-s counts from here: the imports take seconds on a cold start

import argparse
import json
import statistics

import torch
from diffusers import AutoencoderKLWan

from torch_wan_forward import device_label, synchronizer, versions

CONFIGS = {
    # Wan2.1's VAE: diffusers' defaults (base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], 2 res blocks,
    # temporal downsampling [False, True, True]), spelled out so a changed default cannot slip in.
    "wan2.1": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True]),
    # A smoke-test size that runs on a CPU in seconds (same latent channels and strides).
    "tiny": dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                 temperal_downsample=[False, True, True]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="wan2.1")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=1, help="untimed decodes")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--budget-s", type=float,
                    help="wall seconds from the start: a timed decode starts only if the last one says it fits")
    a = ap.parse_args()
    if a.warmup + a.iters < 1:
        ap.error("--warmup + --iters: at least one decode")
    for name, v, m in [("frames", a.frames - 1, 4), ("height", a.height, 8), ("width", a.width, 8)]:
        if v < 0 or v % m:
            ap.error(f"--{name}: must be {'4k+1' if name == 'frames' else 'a multiple of 8'}")
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    cfg = CONFIGS[a.config]
    with torch.device(a.device):
        vae = AutoencoderKLWan(**cfg).to(dtype).eval()
    shape = [1, cfg["z_dim"], (a.frames - 1) // 4 + 1, a.height // 8, a.width // 8]
    z = torch.randn(*shape, device=a.device, dtype=dtype)
    sync = synchronizer(a.device)
    fits = lambda last_ms: a.budget_s is None or time.perf_counter() - T0 + 1.1 * last_ms / 1e3 <= a.budget_s
    times, warmup_ms = [], []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            if i >= a.warmup and not fits((times or warmup_ms or [0.0])[-1]):
                break
            sync()
            t0 = time.perf_counter()
            out = vae.decode(z, return_dict=False)[0]
            sync()
            (times if i >= a.warmup else warmup_ms).append((time.perf_counter() - t0) * 1e3)
        want = [1, 3, a.frames, a.height, a.width]
        assert list(out.shape) == want, f"decoded {list(out.shape)}, expected {want}"
        finite = bool(torch.isfinite(out).all())
        t0 = time.perf_counter()
        out.cpu()
        to_host_ms = (time.perf_counter() - t0) * 1e3
    print(json.dumps({
        "config": a.config, "latent": shape[1:], "frames": a.frames, "dtype": a.dtype,
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32) if a.device.startswith("cuda") else None,
        "device": device_label(a.device),
        "warmup_ms": warmup_ms, "ms_median": statistics.median(times) if times else None, "ms_all": times,
        "to_host_ms": to_host_ms, "finite": finite, "versions": versions(),
    }))


if __name__ == "__main__":
    main()
