/* st.h — safetensors files: read (mmap, header validated like the reference), write
 * (atomically), and widen any element range to f32.
 *
 * The format, byte by byte (huggingface/safetensors, safetensors/src/tensor.rs):
 *
 *   offset 0      u64, little-endian: N, the header length in bytes (N <= 100,000,000)
 *   offset 8      N bytes of UTF-8 JSON, one object:
 *                   {"__metadata__": {"format": "pt", ...},          optional, string → string
 *                    "<tensor name>": {"dtype": "F32",
 *                                      "shape": [d0, d1, ...],       non-negative ints, [] = scalar
 *                                      "data_offsets": [begin, end]}, ...}
 *                 The writer pads the JSON with spaces to a multiple of 8, so the data
 *                 that follows is 8-byte aligned in the file.
 *   offset 8+N    the data: each tensor's bytes, row-major, little-endian, at
 *                 [8+N+begin, 8+N+end). Sorted by offset, the tensors tile the data exactly:
 *                 the first begins at 0, each begins where the previous ended, and the last
 *                 ends at the end of the file. end-begin == prod(shape) * bits(dtype) / 8.
 *
 * A file that breaks any of these rules is refused with a message that names the file and,
 * where there is one, the tensor (see st_open). The reference accepts duplicate JSON keys
 * (the last one wins, which then breaks the tiling); loupe names the duplicate instead.
 *
 * Memory: st_open maps the file read-only; tensor data pointers point into the mapping and
 * stay valid until st_close. Nothing is read from the data region until a caller touches it. */
#ifndef LOUPE_ST_H
#define LOUPE_ST_H
#include <stddef.h>
#include <stdint.h>

/* Element types, in the reference's order (increasing alignment): the writer sorts tensors
 * by this order, descending, then by name, as the reference does. */
typedef enum {
    ST_BOOL, ST_F4, ST_F6_E2M3, ST_F6_E3M2, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0,
    ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32,
    ST_C64, ST_F64, ST_I64, ST_U64,
    ST_NDTYPES
} st_dtype;

const char *st_dtype_name(st_dtype dt);          /* "BF16" */
int  st_dtype_parse(const char *name, st_dtype *out);   /* 0, or -1 if unknown (no lp_seterr) */
int  st_dtype_bits(st_dtype dt);                 /* 4, 6, 8, 16, 32 or 64 */
int  st_dtype_is_float(st_dtype dt);             /* floating-point (not C64, not ints, not bool) */

typedef struct st_tensor {
    const char     *name;    /* NUL-terminated, owned by the st_file */
    st_dtype        dtype;
    int             ndim;    /* 0 for a scalar */
    const uint64_t *shape;   /* [ndim], owned by the st_file */
    uint64_t        nelem;   /* prod(shape); 1 for a scalar */
    uint64_t        nbytes;  /* end - begin */
    uint64_t        begin;   /* byte offsets relative to the start of the data region */
    const void     *data;    /* nbytes bytes inside the mapping (no alignment guaranteed) */
} st_tensor;

typedef struct st_file {
    char       *path;        /* as given to st_open, for messages */
    const unsigned char *base;   /* the whole file, mapped (or the caller's buffer) */
    size_t      size;        /* file size in bytes */
    uint64_t    header_len;  /* N */
    size_t      ntensors;
    st_tensor  *tensors;     /* [ntensors], in file (offset) order */
    size_t     *by_name;     /* [ntensors], indices into tensors sorted by name, for lookup */
    size_t      nmeta;
    char      **meta;        /* [2*nmeta]: key, value, key, value ... (__metadata__) */
    int         mapped;      /* 1: base is our mmap, unmapped by st_close */
} st_file;

/* Map and validate `path`. Returns NULL after lp_seterr() when the file cannot be read or its
 * header breaks a rule; the message begins with the path. */
st_file *st_open(const char *path);
/* The same checks over a caller's buffer (kept, not copied: it must outlive the st_file).
 * `name` is used in messages. Fuzzing and tests use it. */
st_file *st_open_mem(const void *buf, size_t size, const char *name);
void     st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);    /* NULL if absent */
const char      *st_meta(const st_file *f, const char *key);     /* NULL if absent */

/* Widen elements [first, first+n) of `src` (a tensor's data, type dt) to f32 in out[n].
 * Floats: F64 (rounded), F32, F16 and BF16 (incl. subnormals, ±inf, NaN), F8_E4M3 (the
 * "fn" variant: no inf, S.1111.111 is NaN), F8_E5M2 (IEEE-like), the FNUZ variants (0x80 is
 * NaN), F8_E8M0 (2^(e-127), 0xFF NaN). Integers and BOOL convert by value (large ones round).
 * Returns -1 after lp_seterr() for F4, F6 and C64, which have no f32 meaning here. */
int st_to_f32(float *out, const void *src, st_dtype dt, uint64_t first, size_t n);

/* Scalar helpers used by st_to_f32, exposed for tests and compute code. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
float st_f8e4m3_to_f32(uint8_t v);
float st_f8e5m2_to_f32(uint8_t v);
uint16_t st_f32_to_bf16(float f);   /* round to nearest even; NaN stays NaN */
uint16_t st_f32_to_f16(float f);    /* round to nearest even, subnormals, overflow → inf */

/* One tensor to write: `data` holds prod(shape) * bits / 8 bytes, little-endian. */
typedef struct st_wtensor {
    const char     *name;
    st_dtype        dtype;
    int             ndim;
    const uint64_t *shape;   /* [ndim] */
    const void     *data;
} st_wtensor;

/* Write tensors t[n] to `path` as the reference writes them: tensors sorted by dtype
 * (descending alignment) then name, compact JSON header with `__metadata__` first, padded with
 * spaces to a multiple of 8. meta_kv[2*nmeta] are key/value strings; with nmeta == 0 the
 * metadata is {"format": "pt"}, which transformers requires. The file appears atomically: a
 * temporary file in the same directory is written, fsync'ed and renamed over `path`.
 * Returns 0, or -1 after lp_seterr() (duplicate names, I/O errors, out of memory). */
int st_write(const char *path, const st_wtensor *t, size_t n, const char *const *meta_kv,
             size_t nmeta);

#endif
