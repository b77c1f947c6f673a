/* cpu_ops.h — the fast CPU ops (MKL or OpenBLAS, + OpenMP). Each cpu_X has the signature and
 * semantics of nn_X in nn/ops.h; be_cpu() puts them in a be_backend table. */
#ifndef LOUPE_CPU_OPS_H
#define LOUPE_CPU_OPS_H
#include "nn/ops.h"

/* Puts the BLAS in single-threaded mode when OpenMP is present (cpu_ops.c explains why).
 * Idempotent; every op that calls the BLAS calls it, and so does be_cpu(). */
void cpu_init(void);

void cpu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                int trans_b, float alpha, float beta);
int cpu_embedding_forward(float *out, const int *ids, const float *table, int N, int V,
                          int C);
int cpu_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V,
                              int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);
void cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT);
void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int IN, int OUT);
void cpu_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT);
void cpu_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int IN, int OUT);
void cpu_lora_forward(float *out, float *h, const float *inp, const float *mask,
                      const float *A, const float *B, float scale, int N, int IN, int OUT,
                      int R);
void cpu_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                       const float *h, const float *inp, const float *mask, const float *A,
                       const float *B, float scale, int N, int IN, int OUT, int R);
void cpu_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                           const float *bias, int N, int IN, int OUT, float threshold,
                           float *work);
void cpu_row_norm(float *norm, const float *w, int rows, int cols, int trans);
void cpu_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                      const float *bias, const float *m, const float *norm, int N, int OUT);
void cpu_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C);
void cpu_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                                const float *l, int N, int C);
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                         float eps, int add_one, int N, int C);
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                          const float *inp, const float *weight, int add_one, int N, int C);
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, float eps, int N, int C);
void cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *mean, const float *rstd, const float *inp,
                            const float *weight, int N, int C);
void cpu_rope_forward(float *out, const float *inp, const float *cos_t, const float *sin_t,
                      int N, int H, int D);
void cpu_rope_backward(float *dinp, const float *dout, const float *cos_t,
                       const float *sin_t, int N, int H, int D);
void cpu_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                              const float *v, const int *amask, const nn_attn_params *p, int B,
                              int Tq, int Tk, int q_off, int H, int KVH, int D);
void cpu_attention_forward(float *out, float *probs, const float *q, const float *k,
                           const float *v, const int *amask, const nn_attn_params *p, int B,
                           int T, int H, int KVH, int D);
void cpu_attention_backward(float *dq, float *dk, float *dv, float *dscores,
                            const float *dout, const float *probs, const float *q,
                            const float *k, const float *v, const int *amask,
                            const nn_attn_params *p, int B, int T, int H, int KVH, int D);
/* cpu_flash.c: the reference's fused attention, one batch row per thread */
void cpu_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int *amask, const nn_attn_params *p,
                                 int B, int T, int H, int KVH, int D);
void cpu_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int *amask,
                                  const nn_attn_params *p, int B, int T, int H, int KVH, int D);
void cpu_act_forward(float *out, const float *inp, nn_act act, size_t n);
void cpu_act_backward(float *dinp, const float *dout, const float *inp, nn_act act,
                      size_t n);
void cpu_gated_forward(float *out, const float *gate, const float *up, nn_act act,
                       size_t n);
void cpu_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, nn_act act, size_t n);
void cpu_softmax_forward(float *out, const float *inp, int N, int C);
void cpu_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);
int cpu_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                              const int *targets, int N, int V);
void cpu_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                            int N, int V);
void cpu_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                                const float *logits, const int *targets, int count, int N,
                                int V);
void cpu_softcap_forward(float *out, const float *inp, float cap, size_t n);
void cpu_softcap_backward(float *dinp, const float *dout, const float *out, float cap,
                          size_t n);
void cpu_slice_forward(float *out, const float *inp, int N, int CI, int off, int W);
void cpu_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W);
void cpu_add_forward(float *out, const float *a, const float *b, size_t n);
void cpu_add_backward(float *da, float *db, const float *dout, size_t n);
void cpu_mul_forward(float *out, const float *a, const float *b, size_t n);
void cpu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                      size_t n);
void cpu_scale_forward(float *out, const float *inp, float s, size_t n);
void cpu_scale_backward(float *dinp, const float *dout, float s, size_t n);
void cpu_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                    int blocksize, int type);
void cpu_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                    float offset, size_t nb);
void cpu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                    double beta1, double beta2, double eps, double weight_decay, int t);
void cpu_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                  double momentum, double weight_decay, int t);
double cpu_clip_grad_norm(float *const *grads, const size_t *sizes, int count,
                          double max_norm);
void cpu_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n);

#endif
