/* cuda_optim.cu — AdamW, SGD and gradient clipping on the GPU.
 *
 * The update kernels repeat the reference's f32 arithmetic operation by operation
 * (nn/ops_ref.c, which mirrors torch's), with the _rn intrinsics so that the compiler
 * cannot fuse a multiply and an add into an FMA and round differently. The clipping norm
 * sums squares in double, like the reference, and is the one value read back to the host. */
#include <math.h>

#include "backend/cuda/cuda_int.cuh"

__global__ void adamw_kernel(float *param, float *m, float *v, const float *grad, size_t n,
                             float decay, int use_decay, float w1, float b2, float w2,
                             float step_size, float bc2_sqrt, float e) {
    CU_GRID_STRIDE(i, n) {
        float g = grad[i], p = param[i];
        if (use_decay) p = __fmul_rn(p, decay);
        float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(g, m[i])));   // torch.lerp, w < 0.5
        float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, g), g));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), e);
        param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(-step_size, mi), denom));
    }
}

void cu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                   double beta1, double beta2, double eps, double weight_decay, int t) {
    if (!n) return;
    float decay = (float)(1.0 - lr * weight_decay);
    float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), e = (float)eps;
    adamw_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(param, m, v, grad, n, decay,
                                                      weight_decay != 0, w1, b2, w2, step_size,
                                                      bc2_sqrt, e);
    CU_LAUNCHED();
}

__global__ void sgd_kernel(float *param, float *buf, const float *grad, size_t n, float wd,
                           int use_wd, float mu, int use_mom, int first, float nlr) {
    CU_GRID_STRIDE(i, n) {
        float d = grad[i];
        if (use_wd) d = __fadd_rn(d, __fmul_rn(wd, param[i]));
        if (use_mom) {
            float b = first ? d : __fadd_rn(__fmul_rn(buf[i], mu), d);
            buf[i] = b;
            d = b;
        }
        param[i] = __fadd_rn(param[i], __fmul_rn(nlr, d));
    }
}

void cu_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                 double momentum, double weight_decay, int t) {
    if (!n) return;
    sgd_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(param, buf, grad, n, (float)weight_decay,
                                                    weight_decay != 0, (float)momentum,
                                                    momentum != 0, t <= 1, (float)-lr);
    CU_LAUNCHED();
}

/* ---- clip_grad_norm ------------------------------------------------------------------------ */

__global__ void sumsq_kernel(double *acc, const float *g, size_t n) {
    __shared__ double sh[32];
    double s = 0;
    CU_GRID_STRIDE(i, n) s += (double)g[i] * g[i];
    s = cu_block_sum(s, sh);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}

__global__ void scale_inplace_kernel(float *g, float c, size_t n) {
    CU_GRID_STRIDE(i, n) g[i] *= c;
}

static unsigned reduce_blocks(size_t n) {
    size_t b = (n + 1023) / 1024;   // about 4 elements a thread before the block sum
    return (unsigned)(b < 1 ? 1 : b > 1024 ? 1024 : b);
}

double cu_clip_grad_norm(float *const *grads, const size_t *sizes, int count, double max_norm) {
    double *acc = (double *)cu_scratch("clip_grad_norm", sizeof(double)), total = 0;
    if (!acc) return NAN;   // nothing scaled; a caller that skips op_failed sees a NaN norm
    CU_CHECK(cudaMemsetAsync(acc, 0, sizeof(double), cu_stream));
    for (int k = 0; k < count; k++) {
        if (!sizes[k]) continue;
        sumsq_kernel<<<reduce_blocks(sizes[k]), 256, 0, cu_stream>>>(acc, grads[k], sizes[k]);
        CU_LAUNCHED();
    }
    CU_CHECK(cudaMemcpyAsync(&total, acc, sizeof(double), cudaMemcpyDeviceToHost, cu_stream));
    cu_wait();
    cu_scratch_free(acc);
    total = sqrt(total);
    if (max_norm > 0) {   // as the reference: a NaN total compares false and scales nothing
        double coef = max_norm / (total + 1e-6);
        if (coef < 1.0)
            for (int k = 0; k < count; k++) {
                if (!sizes[k]) continue;
                scale_inplace_kernel<<<cu_blocks(sizes[k]), 256, 0, cu_stream>>>(
                    grads[k], (float)coef, sizes[k]);
                CU_LAUNCHED();
            }
    }
    return total;
}
