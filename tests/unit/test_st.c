/* test_st.c — safetensors reader, writer and dtype conversion.
 *
 * Broken files: the *.safetensors in tests/fixtures/broken/ (made by make_broken.py there), one per
 * rule, each with the message loupe must give. Round trips go through out/ (git-ignored).
 *
 * `test_st --write PATH` writes the sample file that tests/parity/test_safetensors_writer.py
 * reads back with the reference `safetensors` library. */
#include "t.h"
#include "model/st.h"
#include "util/err.h"
#include "util/mem.h"
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define BROKEN "tests/fixtures/broken/"

static void expect_refused(const char *file, const char *msg) {
    char path[256];
    snprintf(path, sizeof path, BROKEN "%s.safetensors", file);
    lp_clearerr();
    st_file *f = st_open(path);
    T_CHECK(f == NULL, "%s was accepted", path);
    st_close(f);
    T_CONTAINS(lp_geterr(), path);   /* every message names the file */
    T_CONTAINS(lp_geterr(), msg);
}

static void test_broken_files(void) {
    expect_refused("short", "file is 3 bytes, too short for the 8-byte header length");
    expect_refused("huge_header", "header length 100000001 is over the limit of 100,000,000 bytes");
    expect_refused("header_past_end", "header length 64 runs past the end of the file (15 bytes)");
    expect_refused("bad_utf8", "header is not valid UTF-8 (bad byte 0xff at header offset 3)");
    expect_refused("bad_json", "header is not valid JSON");
    expect_refused("duplicate", "duplicate tensor name `w` in header");
    expect_refused("gap", "tensor `b`: data_offsets [12, 16] leave a gap of 4 bytes after tensor `a`");
    expect_refused("first_gap", "tensor `x`: data_offsets [2, 4] leave a gap of 2 bytes at the start");
    expect_refused("overlap", "tensor `b`: data_offsets [4, 12] overlap tensor `a`, which ends at 8");
    expect_refused("reversed", "tensor `b`: data_offsets [8, 4] end before they begin");
    expect_refused("size_mismatch",
                   "tensor `x`: byte size 12 does not match shape [2, 2] × F32 (16)");
    expect_refused("overflow", "tensor `x`: shape [4611686018427387904, 8] × F32 overflows 64 bits");
    expect_refused("trailing", "tensor data ends at byte 8 of the data region, but the file has 12 "
                               "data bytes (trailing bytes not covered by any tensor)");
    expect_refused("truncated", "but the file has 10 data bytes (file truncated)");
    expect_refused("bad_dtype", "tensor `x`: unknown dtype `F12`");
    expect_refused("not_object", "header is not a JSON object");
}

static void test_missing_file(void) {
    st_file *f = st_open("tests/fixtures/broken/no-such-file.safetensors");
    T_OK(f == NULL);
    T_CONTAINS(lp_geterr(), "no-such-file.safetensors: No such file");
    f = st_open("tests/fixtures/broken");
    T_OK(f == NULL);
    T_CONTAINS(lp_geterr(), "not a regular file");
}

/* Build a header in memory: the other header failures the fixtures do not cover. */
static st_file *mem(const char *json, size_t ndata, unsigned char *buf, size_t cap) {
    size_t hl = strlen(json);
    memset(buf, 0, cap);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, json, hl);
    return st_open_mem(buf, 8 + hl + ndata, "mem");
}

static void test_header_shapes(void) {
    unsigned char buf[512];
    st_file *f = mem("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, buf, sizeof buf);
    T_OK(!f);
    T_CONTAINS(lp_geterr(), "mem: tensor `x`: shape dimension 0 is not a non-negative integer");
    f = mem("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, buf, sizeof buf);
    T_OK(!f);
    T_CONTAINS(lp_geterr(), "`data_offsets` is not a pair");
    f = mem("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, buf, sizeof buf);
    T_OK(!f);
    T_CONTAINS(lp_geterr(), "missing or non-string `dtype`");
    f = mem("{\"__metadata__\":{\"a\":1}}", 0, buf, sizeof buf);
    T_OK(!f);
    T_CONTAINS(lp_geterr(), "`__metadata__` value of `a` is not a string");
    f = mem("{\"x\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1, buf, sizeof buf);
    T_OK(!f);
    T_CONTAINS(lp_geterr(), "shape [3] × F4 is not a whole number of bytes");
    /* A valid header in any tensor order, with scalars, empty tensors and metadata. */
    f = mem("{\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[2,6]},"
            "\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
            "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[2,2]},"
            "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}  ", 6, buf, sizeof buf);
    T_OK(f != NULL);
    if (!f) { fprintf(stderr, "%s\n", lp_geterr()); return; }
    T_EQ_INT(f->ntensors, 3);
    T_STR(f->tensors[0].name, "a");   /* file order: by offset, empty e before b */
    T_STR(f->tensors[1].name, "e");
    T_STR(f->tensors[2].name, "b");
    const st_tensor *b = st_find(f, "b");
    T_OK(b && b->ndim == 0 && b->nelem == 1 && b->nbytes == 4 && b->dtype == ST_F32);
    T_OK(st_find(f, "e")->nelem == 0);
    T_OK(st_find(f, "zz") == NULL);
    T_STR(st_meta(f, "format"), "pt");
    T_STR(st_meta(f, "k"), "v");
    T_OK(st_meta(f, "nope") == NULL);
    st_close(f);
    /* Empty header: a file with no tensors is valid. */
    f = mem("{}", 0, buf, sizeof buf);
    T_OK(f && f->ntensors == 0);
    st_close(f);
}

static void test_dtypes(void) {
    st_dtype d;
    for (int i = 0; i < ST_NDTYPES; i++) {
        T_OK(st_dtype_parse(st_dtype_name((st_dtype)i), &d) == 0 && d == (st_dtype)i);
    }
    T_OK(st_dtype_parse("f32", &d) < 0);
    T_EQ_INT(st_dtype_bits(ST_BF16), 16);
    T_EQ_INT(st_dtype_bits(ST_F8_E4M3), 8);
    T_EQ_INT(st_dtype_bits(ST_F4), 4);
    T_OK(st_dtype_is_float(ST_BF16) && !st_dtype_is_float(ST_I64));
}

static int is_nan(float x) { return x != x; }

static void test_conversion(void) {
    /* f16: normals, subnormals, inf, nan, signed zero */
    T_OK(st_f16_to_f32(0x3c00) == 1.0f);
    T_OK(st_f16_to_f32(0xc000) == -2.0f);
    T_OK(st_f16_to_f32(0x7bff) == 65504.0f);
    T_OK(st_f16_to_f32(0x0001) == 0x1p-24f);          /* smallest subnormal */
    T_OK(st_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);   /* largest subnormal */
    T_OK(st_f16_to_f32(0x0400) == 0x1p-14f);          /* smallest normal */
    T_OK(st_f16_to_f32(0x7c00) == INFINITY && st_f16_to_f32(0xfc00) == -INFINITY);
    T_OK(is_nan(st_f16_to_f32(0x7e00)));
    T_OK(signbit(st_f16_to_f32(0x8000)) && st_f16_to_f32(0x8000) == 0.0f);
    /* bf16 */
    T_OK(st_bf16_to_f32(0x3f80) == 1.0f);
    T_OK(st_bf16_to_f32(0xc0a0) == -5.0f);
    T_OK(st_bf16_to_f32(0x7f80) == INFINITY);
    T_OK(is_nan(st_bf16_to_f32(0x7fc0)));
    T_OK(st_bf16_to_f32(0x0001) == 0x1p-133f);   /* bf16 subnormal */
    /* e4m3fn: max 448, no inf, 0x7f nan, subnormal 2^-9 */
    T_OK(st_f8e4m3_to_f32(0x38) == 1.0f);
    T_OK(st_f8e4m3_to_f32(0x7e) == 448.0f);
    T_OK(st_f8e4m3_to_f32(0xfe) == -448.0f);
    T_OK(is_nan(st_f8e4m3_to_f32(0x7f)) && is_nan(st_f8e4m3_to_f32(0xff)));
    T_OK(st_f8e4m3_to_f32(0x78) == 256.0f);           /* e=15, m=0 is a number, not inf */
    T_OK(st_f8e4m3_to_f32(0x01) == 0x1p-9f);
    T_OK(st_f8e4m3_to_f32(0x07) == 7 * 0x1p-9f);
    /* e5m2: max 57344, inf, nan, subnormal 2^-16 */
    T_OK(st_f8e5m2_to_f32(0x3c) == 1.0f);
    T_OK(st_f8e5m2_to_f32(0x7b) == 57344.0f);
    T_OK(st_f8e5m2_to_f32(0x7c) == INFINITY && st_f8e5m2_to_f32(0xfc) == -INFINITY);
    T_OK(is_nan(st_f8e5m2_to_f32(0x7d)));
    T_OK(st_f8e5m2_to_f32(0x01) == 0x1p-16f);
    /* range conversion, unaligned source, offset into the tensor */
    unsigned char raw[1 + 3 * 2];
    uint16_t v[3] = {0x3c00, 0x4000, 0xbc00};   /* 1, 2, -1 in f16 */
    memcpy(raw + 1, v, sizeof v);
    float out[3];
    T_OK(st_to_f32(out, raw + 1, ST_F16, 1, 2) == 0);
    T_OK(out[0] == 2.0f && out[1] == -1.0f);
    double dd[2] = {0.5, -3.25};
    T_OK(st_to_f32(out, dd, ST_F64, 0, 2) == 0 && out[0] == 0.5f && out[1] == -3.25f);
    int64_t ii[2] = {-7, 1 << 20};
    T_OK(st_to_f32(out, ii, ST_I64, 0, 2) == 0 && out[0] == -7.0f && out[1] == 1048576.0f);
    T_OK(st_to_f32(out, raw, ST_F4, 0, 1) < 0);
    T_CONTAINS(lp_geterr(), "cannot convert F4 to f32");
    /* narrowing: round to nearest even, subnormals, overflow */
    T_EQ_INT(st_f32_to_bf16(1.0f), 0x3f80);
    T_EQ_INT(st_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);   /* tie → even */
    T_EQ_INT(st_f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);
    T_OK(is_nan(st_bf16_to_f32(st_f32_to_bf16(NAN))));
    T_EQ_INT(st_f32_to_f16(1.0f), 0x3c00);
    T_EQ_INT(st_f32_to_f16(65504.0f), 0x7bff);
    T_EQ_INT(st_f32_to_f16(65520.0f), 0x7c00);
    T_EQ_INT(st_f32_to_f16(0x1p-24f), 0x0001);
    T_EQ_INT(st_f32_to_f16(0x1p-25f), 0x0000);        /* tie → even (0) */
    T_EQ_INT(st_f32_to_f16(-0x1p-14f), 0x8400);
    T_EQ_INT(st_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie → even */
    T_EQ_INT(st_f32_to_f16(1.0f + 0x1p-11f + 0x1p-12f), 0x3c01);
    for (uint32_t h = 0; h < 0x10000; h++) {   /* every finite f16 survives a round trip */
        float x = st_f16_to_f32((uint16_t)h);
        if (!is_nan(x) && st_f32_to_f16(x) != h) { T_CHECK(0, "f16 %04x round trip", h); break; }
    }
}

/* The sample file: one tensor of most dtypes, names chosen so that sorting matters. */
static float w_f32[6] = {1, -2, 3.5f, -4, 0.25f, 6};
static uint16_t w_bf16[4], w_f16[3];
static int64_t w_i64[2] = {-5, 1LL << 40};
static uint8_t w_u8[3] = {0, 7, 255}, w_bool[2] = {1, 0}, w_e4m3[2] = {0x38, 0xc0};
static int32_t w_i32[1] = {-123456};
static double w_f64[2] = {1e-300, -2.5};
static const uint64_t s23[] = {2, 3}, s4[] = {4}, s3[] = {3}, s2[] = {2}, s1[] = {1};

static int write_sample(const char *path) {
    for (int i = 0; i < 4; i++) w_bf16[i] = st_f32_to_bf16((float)i - 1.5f);
    for (int i = 0; i < 3; i++) w_f16[i] = st_f32_to_f16((float)i * 0.1f);
    st_wtensor t[] = {
        {"model.layers.0.weight", ST_F32, 2, s23, w_f32},
        {"a.bf16", ST_BF16, 1, s4, w_bf16},
        {"z.f16", ST_F16, 1, s3, w_f16},
        {"ids", ST_I64, 1, s2, w_i64},
        {"bytes", ST_U8, 1, s3, w_u8},
        {"mask", ST_BOOL, 1, s2, w_bool},
        {"fp8", ST_F8_E4M3, 1, s2, w_e4m3},
        {"scalar", ST_I32, 0, NULL, w_i32},
        {"double", ST_F64, 1, s2, w_f64},
        {"empty", ST_F32, 2, (const uint64_t[]){0, 4}, NULL},
        {"one", ST_F32, 1, s1, w_f32},
    };
    return st_write(path, t, sizeof t / sizeof t[0], NULL, 0);
}

static void test_round_trip(void) {
    mkdir("out", 0755);
    const char *path = "out/test_st_roundtrip.safetensors";
    T_OK(write_sample(path) == 0);
    st_file *f = st_open(path);
    T_OK(f != NULL);
    if (!f) { fprintf(stderr, "%s\n", lp_geterr()); return; }
    T_OK(f->header_len % 8 == 0);
    T_OK(f->base[8] == '{');
    T_STR(st_meta(f, "format"), "pt");
    /* __metadata__ first, compact JSON, as the reference writes it */
    T_OK(memcmp(f->base + 8, "{\"__metadata__\":{\"format\":\"pt\"},", 32) == 0);
    /* order: dtype descending (I64, F64, F32..., BF16, F16, F8, U8, BOOL), then name */
    static const char *order[] = {"ids", "double", "empty", "model.layers.0.weight", "one",
                                  "scalar", "a.bf16", "z.f16", "fp8", "bytes", "mask"};
    T_EQ_INT(f->ntensors, 11);
    for (size_t i = 0; i < f->ntensors && i < 11; i++) T_STR(f->tensors[i].name, order[i]);
    const st_tensor *w = st_find(f, "model.layers.0.weight");
    T_OK(w && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->dtype == ST_F32);
    float out[6];
    T_OK(st_to_f32(out, w->data, w->dtype, 0, 6) == 0 && memcmp(out, w_f32, sizeof out) == 0);
    const st_tensor *bf = st_find(f, "a.bf16");
    T_OK(st_to_f32(out, bf->data, bf->dtype, 0, 4) == 0);
    T_OK(out[0] == -1.5f && out[3] == 1.5f);
    const st_tensor *ids = st_find(f, "ids");
    int64_t i64[2];
    memcpy(i64, ids->data, 16);
    T_OK(i64[0] == -5 && i64[1] == (1LL << 40));
    T_OK(st_find(f, "scalar")->ndim == 0 && st_find(f, "empty")->nbytes == 0);
    T_OK(f->size == 8 + f->header_len + 24 + 16 + 16 + 0 + 4 + 4 + 8 + 6 + 2 + 3 + 2);
    st_close(f);
    /* metadata given by the caller; duplicate names refused; no temp file left behind */
    const char *kv[] = {"format", "pt", "source", "loupe"};
    st_wtensor one = {"x", ST_F32, 1, s1, w_f32};
    T_OK(st_write(path, &one, 1, kv, 2) == 0);
    f = st_open(path);
    T_OK(f && st_meta(f, "source") && strcmp(st_meta(f, "source"), "loupe") == 0);
    st_close(f);
    st_wtensor dup[2] = {one, one};
    T_OK(st_write(path, dup, 2, NULL, 0) < 0);
    T_CONTAINS(lp_geterr(), "duplicate tensor name `x`");
    T_OK(st_write("out/no-such-dir/x.safetensors", &one, 1, NULL, 0) < 0);
    T_CONTAINS(lp_geterr(), "cannot create a temporary file");
    unlink(path);
}

/* Failed allocations turn into errors, never crashes. */
static void test_oom(void) {
    for (long n = 1; n < 40; n++) {
        lp_mem_fail_after(n);
        st_file *f = st_open("tests/fixtures/models/llama/model.safetensors");
        lp_mem_fail_after(0);
        if (f) { st_close(f); break; }
        T_CONTAINS(lp_geterr(), "out of memory");
    }
}

static void test_real_checkpoint(void) {
    st_file *f = st_open("tests/fixtures/models/llama/model.safetensors");
    T_OK(f != NULL);
    if (!f) { fprintf(stderr, "%s\n", lp_geterr()); return; }
    T_STR(st_meta(f, "format"), "pt");
    const st_tensor *q = st_find(f, "model.layers.0.self_attn.q_proj.weight");
    T_OK(q && q->dtype == ST_F32 && q->ndim == 2 && q->shape[0] == 32 && q->shape[1] == 32);
    st_close(f);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        if (write_sample(argv[2]) < 0) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
        return 0;
    }
    T_RUN(test_broken_files);
    T_RUN(test_missing_file);
    T_RUN(test_header_shapes);
    T_RUN(test_dtypes);
    T_RUN(test_conversion);
    T_RUN(test_round_trip);
    T_RUN(test_oom);
    T_RUN(test_real_checkpoint);
    return t_done();
}
