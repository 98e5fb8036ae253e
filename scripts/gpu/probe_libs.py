#!/usr/bin/env python3
"""The device harness's start-up check: can the CUDA libraries Longshot opens at run time be
loaded from LD_LIBRARY_PATH, and is there a GPU? Loads each with ctypes and calls one function:
libcuda (cuInit, cuDeviceGetCount), NVRTC (nvrtcVersion, and a one-line compile, which is what
loads libnvrtc-builtins), cuBLASLt (cublasLtGetVersion) and NCCL under the name cudarc opens,
libnccl.so (ncclGetVersion). One line per library; the last line is the verdict.

Exit status: 0 all present and a GPU; 3 no GPU (no libcuda, or no device): the harness skips the
GPU steps; 2 a GPU but a library missing: the last line names it and how to install it.
"""
import ctypes
import sys

HINTS = {
    "nvrtc": "pip install 'nvidia-cuda-nvrtc==13.0.*'",
    "nvrtc-builtins": "libnvrtc-builtins.so.13.0 ships with nvidia-cuda-nvrtc, next to libnvrtc.so.13",
    "cublasLt": "pip install the CUDA 13 nvidia-cublas package",
    "nccl": "pip install nvidia-nccl-cu13; run.sh links its libnccl.so.2 as lib-links/libnccl.so",
}


def load(names):
    err = ""
    for n in names:
        try:
            return n, ctypes.CDLL(n, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            err = err or str(e)  # the first (preferred) name's error
    return None, err


def main():
    missing = []

    name, cuda = load(["libcuda.so.1", "libcuda.so"])
    devices = 0
    if name is None:
        cuda_err = cuda
        print(f"libcuda: not loadable ({cuda_err})")
    else:
        rc = cuda.cuInit(0)
        n = ctypes.c_int(0)
        ver = ctypes.c_int(0)
        cuda.cuDriverGetVersion(ctypes.byref(ver))
        if rc == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0:
            devices = n.value
        print(f"libcuda: {name}, driver API {ver.value // 1000}.{ver.value % 1000 // 10}, cuInit={rc}, {devices} device(s)")

    name, nvrtc = load(["libnvrtc.so.13", "libnvrtc.so"])
    if name is None:
        print(f"nvrtc: MISSING ({nvrtc})")
        missing.append("nvrtc")
    else:
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        print(f"nvrtc: {name} {major.value}.{minor.value}")
        # NVRTC dlopens its builtins library during a compile: compile one empty kernel.
        prog = ctypes.c_void_p()
        src = b'extern "C" __global__ void k() {}'
        rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"probe.cu", 0, None, None)
        opts = (ctypes.c_char_p * 1)(b"--gpu-architecture=compute_90")
        rc = rc or nvrtc.nvrtcCompileProgram(prog, 1, opts)
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
        bname, builtins = load(["libnvrtc-builtins.so.13.0", "libnvrtc-builtins.so.13", "libnvrtc-builtins.so"])
        if rc != 0 or bname is None:
            print(f"nvrtc-builtins: MISSING (compile rc={rc}; {builtins if bname is None else bname})")
            missing.append("nvrtc-builtins")
        else:
            print(f"nvrtc-builtins: {bname} (a test compile succeeded)")

    name, lt = load(["libcublasLt.so.13", "libcublasLt.so"])
    if name is None:
        print(f"cublasLt: MISSING ({lt})")
        missing.append("cublasLt")
    else:
        lt.cublasLtGetVersion.restype = ctypes.c_size_t
        print(f"cublasLt: {name} version {lt.cublasLtGetVersion()}")

    # cudarc opens the unversioned name; libnccl.so.2 alone is not enough.
    name, nccl = load(["libnccl.so"])
    if name is None:
        print(f"nccl: MISSING ({nccl})")
        missing.append("nccl")
    else:
        v = ctypes.c_int(0)
        nccl.ncclGetVersion(ctypes.byref(v))
        print(f"nccl: {name} version {v.value}")

    if devices == 0:
        print("verdict: no GPU (libcuda not loadable or no device): the GPU steps are skipped")
        return 3
    if missing:
        print("verdict: MISSING " + "; ".join(f"{m} ({HINTS[m]})" for m in missing))
        return 2
    print(f"verdict: ok ({devices} GPU(s), every library loads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
