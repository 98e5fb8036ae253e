#!/usr/bin/env python3
"""The baseline for Longshot's GPU Wan2.1 forward: diffusers' WanTransformer3DModel + PyTorch on
the same device, in the same run (the device harness runs both and prints the ratio).

Random weights (timing does not depend on values), bf16 parameters and activations, as a studio
would run diffusers; PyTorch's SDPA picks its flash kernel on Hopper. Prints one JSON line:
{"config", "latent": [T, H, W], "text_tokens", "dtype", "device", "ms_median", "ms_all", "versions"}.

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
    ap.add_argument("--warmup", type=int, default=2)
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
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            sync()
            t0 = time.perf_counter()
            out = model(hidden_states=x, timestep=step, encoder_hidden_states=ctx, return_dict=False)[0]
            sync()
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    assert out.shape == x.shape and torch.isfinite(out.float()).all(), "bad output"
    print(json.dumps({
        "config": a.config, "layers": cfg["num_layers"], "latent": [t, h, w], "text_tokens": a.text_tokens, "dtype": a.dtype,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
        "ms_median": statistics.median(times), "ms_all": times,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }))


if __name__ == "__main__":
    main()
