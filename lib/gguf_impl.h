/* Private to gguf.c and gguf_get.c: the little-endian loads, value sizes and block
 * layouts both need. Other modules include gguf.h. */
#ifndef FREE_GGUF_IMPL_H
#define FREE_GGUF_IMPL_H

#include "gguf.h"
#include "quant.h"

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libfree's GGUF reader assumes a little-endian host"
#endif

/* Messages quote at most this many bytes of a key or tensor name. */
#define NAME_SHOWN 80

static inline int shown_len(gguf_str s)
{
    return s.len > NAME_SHOWN ? NAME_SHOWN : (int)s.len;
}

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes of one scalar of type t; 0 for strings, arrays and unknown types. */
static inline uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* Elements per block and bytes per block of the types libfree reads: from the one type
 * table (quant.h). */
static inline bool block_layout(uint32_t type, uint64_t *blck, uint64_t *bytes)
{
    const fr_type_traits *tt = fr_type_traits_of(type);
    if (!tt)
        return false;
    *blck = (uint64_t)tt->blck;
    *bytes = (uint64_t)tt->bytes;
    return true;
}

#endif
