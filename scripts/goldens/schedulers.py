#!/usr/bin/env python3
"""Golden fixtures for core/src/scheduler: diffusers' flow-matching schedulers, bit for bit.

Regenerate (from the repository root; installs torch, diffusers and numpy with pip if missing):

    python3 scripts/goldens/schedulers.py

Writes core/tests/fixtures/schedulers/*.json, checked by core/tests/scheduler_goldens.rs.
Every float is stored as the u32 bit pattern of its f32 value, so the comparison can be exact.

Each fixture holds a schedule (sigmas, and the timesteps the pipeline passes to the model) and,
for small step counts, a trajectory: a seeded initial sample of torch shape [1, 4, 3, 2, 2]
stored frame-major ([frames, channels, height, width], as longshot's Latents), then per step a
pseudo model output v_i = 0.5 * sample + randn(seed + 1 + i), which depends on the sample so the
multistep history matters, and the sample returned by scheduler.step.

torch's CPU log is MKL vmsLn, which is not always correctly rounded; the Rust port uses the
correctly rounded log. "lambdas_match_correct_log" records whether UniPC's λ = log(1−σ) − log(σ)
comes out the same with a correctly rounded log (usually it does: the error is absorbed by the
subtraction); where it does not, the Rust test allows a small tolerance. unipc shift 5 / 49 steps
is included because it is such a case (on a smaller [1, 2, 1, 2, 2] sample to keep the file small).
torch's expm1 is SLEEF's, which the Rust port reproduces; unipc shift 3 / 15 steps is included
because there SLEEF's expm1 differs from the correctly rounded value ("expm1_correctly_rounded").
"""

import importlib
import json
import math
import platform
import random
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


ensure("numpy", "torch", "diffusers")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures" / "schedulers"
TORCH_SHAPE = (1, 4, 3, 2, 2)  # [B, C, F, H, W]
SMALL_SHAPE = (1, 2, 1, 2, 2)
SEED = 20240917

# (solver, shift, steps, trajectory sample shape or None)
CASES = (
    [("unipc", s, n, TORCH_SHAPE) for s in (3.0, 5.0) for n in (1, 2, 3, 10)]
    + [("unipc", s, 50, None) for s in (3.0, 5.0, 5.3)]
    + [("unipc", 5.0, 49, SMALL_SHAPE), ("unipc", 3.0, 15, SMALL_SHAPE)]
    + [("euler", s, n, TORCH_SHAPE) for s in (3.0, 7.0) for n in (1, 4, 10)]
    + [("euler", s, 50, None) for s in (3.0, 7.0, 5.3)]
)
# Cases whose λ must differ from the correctly rounded one (the script checks it still does).
LAMBDA_MISMATCH = {("unipc", 5.0, 49)}
# Cases where some expm1(−h) UniPC takes is not correctly rounded (SLEEF), checked likewise.
EXPM1_MISMATCH = {("unipc", 3.0, 15)}


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "machine": platform.machine(),
    }


def make_scheduler(solver, shift):
    if solver == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=shift,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    return FlowMatchEulerDiscreteScheduler(shift=shift)


def bits(t):
    """u32 bit patterns of a float32 tensor, flattened."""
    return t.detach().to(torch.float32).contiguous().numpy().view(np.uint32).ravel().tolist()


def frame_major(t):
    """torch [1, C, F, H, W] -> longshot [F, C, H, W]."""
    return t[0].permute(1, 0, 2, 3)


def lambdas_match_correct_log(sigmas):
    """Whether UniPC's f32 λ(σ_i), i < N, is the same with a correctly rounded log."""
    s = sigmas[:-1]
    got = (torch.log(1 - s) - torch.log(s)).numpy()

    def log(x):
        return np.float32(math.log(float(x)))

    want = np.array([log(a) - log(b) for a, b in zip((1 - s).numpy(), s.numpy())], dtype=np.float32)
    return bool((got.view(np.uint32) == want.view(np.uint32)).all())


def expm1_correctly_rounded(sigmas):
    """Whether torch.expm1(−h) for every step h = λ(σ_{i+1}) − λ(σ_i) with σ_{i+1} > 0 is."""
    s = sigmas[:-1]
    lam = torch.log(1 - s) - torch.log(s)
    hh = -(lam[1:] - lam[:-1])
    got = torch.expm1(hh).numpy()
    want = np.array([math.expm1(float(v)) for v in hh.numpy()]).astype(np.float32)
    return bool((got.view(np.uint32) == want.view(np.uint32)).all())


def generator(seed):
    return torch.Generator().manual_seed(seed)


def trajectory(scheduler, shape, seed):
    sample = torch.randn(shape, generator=generator(seed), dtype=torch.float32)
    record = {
        "seed": seed,
        "torch_shape": list(shape),
        "shape": list(frame_major(sample).shape),
        "model": "v_i = 0.5 * sample + randn(seed + 1 + i)",
        "initial": bits(frame_major(sample)),
        "steps": [],
    }
    for i, t in enumerate(scheduler.timesteps):
        noise = torch.randn(shape, generator=generator(seed + 1 + i), dtype=torch.float32)
        v = 0.5 * sample + noise
        sample = scheduler.step(v, t, sample, return_dict=False)[0]
        assert sample.dtype == torch.float32
        record["steps"].append({"model_output": bits(frame_major(v)), "sample": bits(frame_major(sample))})
    return record


def fixture(solver, shift, steps, shape, index):
    scheduler = make_scheduler(solver, shift)
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps
    # step() looks the timestep up in the schedule; duplicates would make it skip a σ.
    assert len(set(ts.tolist())) == steps, "duplicate timesteps"
    sigmas = scheduler.sigmas.to(torch.float32)
    out = {
        "generator": "scripts/goldens/schedulers.py",
        "versions": versions(),
        "solver": solver,
        "shift": shift,
        "steps": steps,
        "config": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
        "timesteps_dtype": str(ts.dtype),
        "sigmas": bits(sigmas),
        # int64 (UniPC) timesteps are ≤ 1000, so their f32 is exact.
        "timesteps": bits(ts.to(torch.float32)),
        "lambdas_match_correct_log": lambdas_match_correct_log(sigmas) if solver == "unipc" else True,
        "expm1_correctly_rounded": expm1_correctly_rounded(sigmas) if solver == "unipc" else True,
        "trajectory": trajectory(scheduler, shape, SEED + 1000 * index) if shape else None,
    }
    return out


def dump(obj):
    """JSON with one top-level key (and one trajectory step) per line."""
    lines = []
    for k, v in obj.items():
        if k == "trajectory" and v is not None:
            inner = [f'    {json.dumps(a)}: {json.dumps(b)}' for a, b in v.items() if a != "steps"]
            steps = ",\n".join(f"      {json.dumps(s)}" for s in v["steps"])
            inner.append(f'    "steps": [\n{steps}\n    ]')
            lines.append(f'  "trajectory": {{\n' + ",\n".join(inner) + "\n  }")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, default=str)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    info = versions()
    print("versions:", json.dumps(info))
    OUT.mkdir(parents=True, exist_ok=True)
    for index, (solver, shift, steps, shape) in enumerate(CASES):
        fx = fixture(solver, shift, steps, shape, index)
        exact = fx["lambdas_match_correct_log"]
        key = (solver, shift, steps)
        assert exact == (key not in LAMBDA_MISMATCH), f"λ exactness changed for {key}"
        assert fx["expm1_correctly_rounded"] == (key not in EXPM1_MISMATCH), f"expm1 rounding changed for {key}"
        name = f"{solver}_shift{shift:g}_steps{steps}.json"
        (OUT / name).write_text(dump(fx))
        print(f"wrote {name}: λ matches a correctly rounded log = {exact}")


if __name__ == "__main__":
    main()
