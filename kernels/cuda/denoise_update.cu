// The per-step arithmetic of the co-denoising loop, mirroring kernels/src/cpu/mod.rs and
// core/src/scheduler/: CFG combine, the overlap blend, the scheduler's linear combinations (Euler,
// UniPC first order, x0 prediction) and the UniPC predictor/corrector update. With --fmad=false
// every one of them is bit-identical to its CPU reference (same f32 operations, same order).
#include "common.cuh"

// cond = uncond + g·(cond − uncond), in place on cond.
extern "C" __global__ void cfg_combine_f32(float* cond, const float* uncond, float guidance,
                                           unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float u = uncond[i];
        cond[i] = u + guidance * (cond[i] - u);
    }
}

// left, right: [overlap, frame_len]; both get v_l + w_j·(v_r − v_l), w_j = (j+1)/(overlap+1).
extern "C" __global__ void blend_overlap_f32(float* left, float* right, unsigned int overlap,
                                             unsigned long long frame_len) {
    FOR_EACH_INDEX(i, (unsigned long long)overlap * frame_len) {
        unsigned int j = (unsigned int)(i / frame_len);
        float w = ((float)j + 1.0f) / ((float)overlap + 1.0f);
        float l = left[i];
        float v = l + w * (right[i] - l);
        left[i] = v;
        right[i] = v;
    }
}

// out = Σ_k c_k·s_k for k < terms (1..=4), accumulated left to right from c_0·s_0. Unused source
// pointers may be anything: they are never read.
extern "C" __global__ void lincomb_f32(float* out, unsigned int terms,
                                       const float* s0, float c0, const float* s1, float c1,
                                       const float* s2, float c2, const float* s3, float c3,
                                       unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float acc = c0 * s0[i];
        if (terms > 1) acc += c1 * s1[i];
        if (terms > 2) acc += c2 * s2[i];
        if (terms > 3) acc += c3 * s3[i];
        out[i] = acc;
    }
}

// UniPC's update (core/src/scheduler/unipc.rs `Update::apply`, the branch with history or
// corrector terms): base = cx·x − cm·m0; res from the present terms; out = base − cr·res.
// mode bit 0: history term r0·((m1 − m0)/rk); bit 1: corrector term r1·(mt − m0).
extern "C" __global__ void unipc_update_f32(float* out, const float* x, const float* m0,
                                            const float* m1, const float* mt, float cx, float cm,
                                            float cr, float rk, float r0, float r1,
                                            unsigned int mode, unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float base = cx * x[i] - cm * m0[i];
        float res;
        if (mode == 3u) {
            res = r0 * ((m1[i] - m0[i]) / rk) + r1 * (mt[i] - m0[i]);
        } else if (mode == 1u) {
            res = r0 * ((m1[i] - m0[i]) / rk);
        } else {
            res = r1 * (mt[i] - m0[i]);
        }
        out[i] = base - cr * res;
    }
}
