/* cuda_backend.cu — the CUDA backend's table (backend.h; each op through CU_OP, which times
 * it with LOUPE_CUDA_PROFILE=1: cuda_prof.cuh): memory functions from
 * cuda_mem.cu, GEMM-based ops from cuda_blas.cu, attention from cuda_attn.cu (materialised),
 * cuda_attn_blk.cu and cuda_flash.cu (fused), the other kernels from cuda_ops.cu and cuda_optim.cu. Every op
 * has the signature and semantics of its reference in nn/ops.h and is checked against it by
 * tests/unit/test_nn_ops.c. */
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_int.cuh"
#include "backend/cuda/cuda_prof.cuh"

void *cu_alloc(size_t bytes);
void cu_free(void *p);
void cu_to_device(void *dst, const void *src, size_t bytes);
void cu_to_host(void *dst, const void *src, size_t bytes);
void cu_copy(void *dst, const void *src, size_t bytes);
void cu_zero(void *p, size_t bytes);
void cu_sync(void);

static int flash_attention(void) {
    const char *impl = getenv("LOUPE_CUDA_ATTENTION");
    return impl && strcmp(impl, "flash") == 0;
}

static int no_bf16_attention(void) { return 0; }

static be_bf16_ops make_bf16(void) {
    be_bf16_ops o = {};
    CU_OP_AS(o, round, cu_bf16_round, "bf16.round");
    CU_OP_AS(o, widen, cu_bf16_widen, "bf16.widen");
    CU_OP_AS(o, linear_forward, cu_bf16_linear_forward, "bf16.linear_forward");
    CU_OP_AS(o, linear_backward, cu_bf16_linear_backward, "bf16.linear_backward");
    CU_OP_AS(o, embedding_forward, cu_bf16_embedding_forward, "bf16.embedding_forward");
    CU_OP_AS(o, embedding_rows, cu_bf16_embedding_rows, "bf16.embedding_rows");
    CU_OP_AS(o, linear_forward_rounded, cu_bf16_linear_forward_rounded,
             "bf16.linear_forward_rounded");
    CU_OP_AS(o, gated_forward_rounded, cu_bf16_gated_forward_rounded,
             "bf16.gated_forward_rounded");
    CU_OP_AS(o, gated_backward_rounded, cu_bf16_gated_backward_rounded,
             "bf16.gated_backward_rounded");
    CU_OP_AS(o, linear_backward_rounded, cu_bf16_linear_backward_rounded,
             "bf16.linear_backward_rounded");
    CU_OP_AS(o, head_loss_rows, cu_bf16_head_loss_rows, "bf16.head_loss_rows");
    /* tensor-core attention: bf16 products with the scores in shared memory (cuda_attn_tc.cu,
       heads up to 256 where the device has the shared memory; others go on to the blocked
       ops), or with
       LOUPE_CUDA_ATTENTION=blocked the blocked ops' TF32 products for every head; the SIMT
       flash kernels have no such variant (the model then uses the f32 ops) */
    const char *impl = getenv("LOUPE_CUDA_ATTENTION");
    if (impl && strcmp(impl, "blocked") == 0) {
        CU_OP_AS(o, attention_fused_forward, cu_attention_blk_tc_forward,
                 "bf16.attention_fused_forward (blocked, tf32)");
        CU_OP_AS(o, attention_fused_backward, cu_attention_blk_tc_backward,
                 "bf16.attention_fused_backward (blocked, tf32)");
        o.attention_bf16_dmax = no_bf16_attention;
    } else if (!flash_attention()) {
        CU_OP_AS(o, attention_fused_forward, cu_attention_tc_forward,
                 "bf16.attention_fused_forward (tc)");
        CU_OP_AS(o, attention_fused_backward, cu_attention_tc_backward,
                 "bf16.attention_fused_backward (tc)");
        o.attention_bf16_dmax = cu_attention_tc_dmax;
    }
    return o;
}

static const be_bf16_ops cuda_bf16 = make_bf16();

static be_backend make_table(const be_bf16_ops *bf16) {
    be_backend t = {};
    t.name = "cuda";
    t.alloc = cu_alloc, t.free = cu_free, t.sync = cu_sync;
    CU_OP(t, to_device, cu_to_device);
    CU_OP(t, to_host, cu_to_host);
    CU_OP(t, copy, cu_copy);
    CU_OP(t, zero, cu_zero);
    CU_OP(t, matmul, cu_matmul);
    CU_OP(t, embedding_forward, cu_embedding_forward);
    CU_OP(t, embedding_add_forward, cu_embedding_add_forward);
    CU_OP(t, embedding_backward, cu_embedding_backward);
    CU_OP(t, embedding_rows, cu_embedding_rows);
    CU_OP(t, linear_forward, cu_linear_forward);
    CU_OP(t, linear_backward, cu_linear_backward);
    CU_OP(t, conv1d_forward, cu_conv1d_forward);
    CU_OP(t, conv1d_backward, cu_conv1d_backward);
    CU_OP(t, lora_forward, cu_lora_forward);
    CU_OP(t, lora_forward_first, cu_lora_forward_first);
    CU_OP(t, lora_backward_first, cu_lora_backward_first);
    CU_OP(t, lora_backward, cu_lora_backward);
    CU_OP(t, dropout_mask, cu_dropout_mask);
    CU_OP(t, row_norm, cu_row_norm);
    CU_OP(t, q8_linear_forward, cu_q8_linear_forward);
    CU_OP(t, dora_forward, cu_dora_forward);
    CU_OP(t, channel_scale_forward, cu_channel_scale_forward);
    CU_OP(t, channel_scale_backward, cu_channel_scale_backward);
    CU_OP(t, rmsnorm_forward, cu_rmsnorm_forward);
    CU_OP(t, rmsnorm_backward, cu_rmsnorm_backward);
    CU_OP(t, layernorm_forward, cu_layernorm_forward);
    CU_OP(t, layernorm_backward, cu_layernorm_backward);
    CU_OP(t, rope_forward, cu_rope_forward);
    CU_OP(t, rope_backward, cu_rope_backward);
    CU_OP(t, attention_forward, cu_attention_forward);
    CU_OP(t, attention_kv_forward, cu_attention_kv_forward);
    CU_OP(t, attention_backward, cu_attention_backward);
    /* the fused ops: cuBLAS products over blocks of queries (cuda_attn_blk.cu), or with
       LOUPE_CUDA_ATTENTION=flash the SIMT kernels of cuda_flash.cu (head sizes up to 256).
       Opt-in (LOUPE_FUSED_ATTENTION=1) until they have passed the op and parity tests on a
       GPU (docs/cuda.md); the materialised path has. */
    int flash = flash_attention();
    if (flash) {
        CU_OP_AS(t, attention_fused_forward, cu_attention_fused_forward,
                 "attention_fused_forward (flash)");
        CU_OP_AS(t, attention_fused_backward, cu_attention_fused_backward,
                 "attention_fused_backward (flash)");
    } else {
        CU_OP(t, attention_fused_forward, cu_attention_blk_forward);
        CU_OP(t, attention_fused_backward, cu_attention_blk_backward);
    }
    const char *fused = getenv("LOUPE_FUSED_ATTENTION");
    t.fused_attention = fused && strcmp(fused, "1") == 0 ? (flash ? 256 : 1 << 30) : 0;
    CU_OP(t, act_forward, cu_act_forward);
    CU_OP(t, act_backward, cu_act_backward);
    CU_OP(t, gated_forward, cu_gated_forward);
    CU_OP(t, gated_backward, cu_gated_backward);
    CU_OP(t, softmax_forward, cu_softmax_forward);
    CU_OP(t, softmax_backward, cu_softmax_backward);
    CU_OP(t, cross_entropy_forward, cu_cross_entropy_forward);
    CU_OP(t, cross_entropy_backward, cu_cross_entropy_backward);
    CU_OP(t, cross_entropy_rows, cu_cross_entropy_rows);
    CU_OP(t, softcap_forward, cu_softcap_forward);
    CU_OP(t, softcap_backward, cu_softcap_backward);
    CU_OP(t, slice_forward, cu_slice_forward);
    CU_OP(t, slice_backward, cu_slice_backward);
    CU_OP(t, add_forward, cu_add_forward);
    CU_OP(t, add_backward, cu_add_backward);
    CU_OP(t, mul_forward, cu_mul_forward);
    CU_OP(t, mul_backward, cu_mul_backward);
    CU_OP(t, scale_forward, cu_scale_forward);
    CU_OP(t, scale_backward, cu_scale_backward);
    CU_OP(t, q4_dequant, cu_q4_dequant);
    CU_OP(t, dq_dequant, cu_dq_dequant);
    CU_OP(t, adamw_step, cu_adamw_step);
    CU_OP(t, sgd_step, cu_sgd_step);
    CU_OP(t, clip_grad_norm, cu_clip_grad_norm);
    t.bf16 = bf16;
    t.op_failed = cu_op_failed;
    return t;
}

static const be_backend cuda_table = make_table(NULL);
static const be_backend cuda_bf16_table = make_table(&cuda_bf16);

/* cuda_bf16.cu: frozen weights stored as bf16, bf16 tensor-core GEMMs. Opt-in
   (LOUPE_CUDA_BF16=1) until tests/gpu/run.sh has passed with it (docs/cuda.md). Read at the
   first call (be_cuda()), not at load: test_nn_ops sets it to check the bf16 ops. */
const be_backend *cu_table(void) {
    static int bf16 = -1;
    if (bf16 < 0) {
        const char *e = getenv("LOUPE_CUDA_BF16");
        bf16 = e && strcmp(e, "1") == 0;
    }
    return bf16 ? &cuda_bf16_table : &cuda_table;
}

const be_backend *cu_table_of(int bf16) { return bf16 ? &cuda_bf16_table : &cuda_table; }
