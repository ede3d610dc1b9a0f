/* Pre-tokenization for byte-level BPE ("gpt2") vocabularies, as llama.cpp does it.
 *
 * llama.cpp's semantics, which this file reproduces:
 * - The text is decoded into code points; a byte that does not start a well-formed
 *   sequence (by lead byte and continuation bytes only: overlong forms and surrogates pass)
 *   becomes U+FFFD. The words are re-encoded from these code points.
 * - Each pre-tokenizer is a list of expressions applied in turn: every piece the previous
 *   expression left is cut into its matches and the text between them (both kept).
 * - Unicode classes come from a per-code-point class: whitespace (the White_Space
 *   property), number, letter, punctuation, mark, symbol, or other. An expression using
 *   \p{..} runs over a "collapsed" text with one byte per code point: ASCII as itself,
 *   other whitespace as \v, the classes as the bytes 0xD1..0xD5 (other: 0xD0), and
 *   \p{N} becomes [\xD1 0-9], \p{L} [\xD2 A-Za-z] and so on. Expressions without
 *   \p{..} run over the code points, non-ASCII whitespace replaced by \v.
 * - llama.cpp hand-codes the GPT-2 and Llama 3 expressions; over the collapsed text the
 *   expressions themselves give the same words.
 *
 * PCRE2 does both the matching and the classes: the class table is built once per
 * pre-tokenizer by matching \s, \p{N}, \p{L}, \p{P}, \p{M} and \p{S} (UTF + UCP) over
 * every code point, so the Unicode data is PCRE2's (Debian 12: Unicode 14.0; llama.cpp's
 * tables are newer, so code points assigned since are classed differently: see README). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretokenize.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CPT 0x110000u
#define MAX_EXPRS 6

/* Code point classes, and the byte each becomes in the collapsed text. */
enum { CLS_OTHER, CLS_SPACE, CLS_N, CLS_L, CLS_P, CLS_M, CLS_S };
static const unsigned char COLLAPSED[] = {0xD0, 0x0B, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5};

typedef struct pre_def {
    const char *names; /* '|'-separated */
    const char *exprs[MAX_EXPRS];
    bool ignore_merges, add_bos;
} pre_def;

/* The GPT-2 expression and Llama 3's (its case-insensitive contractions written out). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3                                                                          \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*" \
                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                           \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"     \
                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const pre_def PRE_DEFS[] = {
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false,
     false},
    {"llama3|llama-v3|llama-bpe", {RE_LLAMA3}, true, true},
    {"qwen2|deepseek-r1-qwen", {RE_QWEN2}, false, false},
    {"starcoder|refact|smollm", {"\\p{N}", RE_GPT2}, false, false},
    {"gpt-2|phi-2", {RE_GPT2}, false, false},
    {"deepseek-coder",
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
      "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
      "\\p{N}"},
     false, false},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf"
      "\xc7\x84-\xca\x93\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd"
      "\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-"
      "\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-\xe1"
      "\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf"
      "\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8"
      "\x80-\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1"
      "\xbd\x8d\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1"
      "\xbd\xbd\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-"
      "\xe1\xbf\x84\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf"
      "\x9b\xe1\xbf\xa0-\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2"
      "\x84\x82\xe2\x84\x87\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d"
      "\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84"
      "\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2"
      "\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-"
      "\xe2\xb3\xae\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a"
      "\x9b\xea\x9c\xa2-\xea\x9d\xaf\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea"
      "\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-"
      "\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f\xf0\x90\x92"
      "\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2"
      "\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4"
      "\x80-\xf0\x9e\xa5\x83]+",
      "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"
      "\xe3\x80\x80-\xe3\x80\x82]+",
      "\\s+$", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
      "\\p{N}+"},
     false, false},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false, false},
};

typedef struct expr {
    pcre2_code *code;
    bool collapsed; /* runs over the collapsed text (else over UTF-8) */
} expr;

struct fr_pretok {
    expr exprs[MAX_EXPRS];
    int n_exprs;
    uint8_t *cls; /* MAX_CPT classes */
};

/* ------------------------------------------------------------------------------------ */
/* UTF-8 as llama.cpp reads and writes it                                               */

/* Decodes one code point at s[*i] (n bytes in all); invalid: U+FFFD, one byte. */
static uint32_t decode_cpt(const unsigned char *s, size_t n, size_t *i)
{
    size_t o = *i;
    unsigned char b = s[o];
    int k = b < 0x80 ? 1 : (b & 0x40) == 0 ? 0 : (b & 0x20) == 0 ? 2 : (b & 0x10) == 0 ? 3
                                                                    : (b & 0x08) == 0 ? 4 : 0;
    if (k == 1) {
        *i = o + 1;
        return b;
    }
    if (k == 0 || o + (size_t)k > n) {
        *i = o + 1;
        return 0xFFFD;
    }
    uint32_t c = b & (0x7Fu >> k);
    for (int j = 1; j < k; j++) {
        if ((s[o + j] & 0xC0) != 0x80) {
            *i = o + 1;
            return 0xFFFD;
        }
        c = c << 6 | (s[o + j] & 0x3Fu);
    }
    *i = o + (size_t)k;
    return c;
}

/* Encodes c (surrogates too, as llama.cpp does; past U+10FFFF as U+FFFD). */
static size_t encode_cpt(uint32_t c, unsigned char *o)
{
    if (c > 0x10FFFF)
        c = 0xFFFD;
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | c >> 6);
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12);
        o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | c >> 18);
    o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------------------ */
/* The class table                                                                      */

static free_status pcre_fail(fr_error *err, int code, const char *what)
{
    PCRE2_UCHAR msg[160];
    if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
        strcpy((char *)msg, "unknown error");
    return fr_fail(err, code == PCRE2_ERROR_NOMEMORY ? FREE_ERR_NOMEM : FREE_ERR_INTERNAL,
                   "pre-tokenizer: %s: PCRE2: %s", what, (const char *)msg);
}

/* Every code point from U+0080 that can be assigned (surrogates and the unassigned and
 * private-use planes skipped) matched against the classes. */
static free_status build_classes(fr_pretok *p, fr_error *err)
{
    p->cls = calloc(MAX_CPT, 1);
    unsigned char *all = malloc((size_t)MAX_CPT * 4);
    if (!p->cls || !all) {
        free(all);
        return fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory for the classes");
    }
    /* ASCII stays itself in the collapsed text: its classes are never looked up. */
    /* Planes 4-13 are unassigned and 15-16 private use: class other, left at 0. */
    size_t n = 0;
    for (uint32_t c = 0x80; c < MAX_CPT; c++)
        if ((c < 0xD800 || c > 0xDFFF) && (c < 0x40000 || (c >= 0xE0000 && c < 0xF0000)))
            n += encode_cpt(c, all + n);
    int ec;
    PCRE2_SIZE eo;
    static const char pat[] =
        "([\\s\\x{85}]+)|(\\p{N}+)|(\\p{L}+)|(\\p{P}+)|(\\p{M}+)|(\\p{S}+)";
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        free(all);
        return pcre_fail(err, ec, "compiling the class expression");
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    free_status st = FREE_OK;
    if (!md)
        st = fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory");
    for (size_t at = 0; st == FREE_OK && at < n;) {
        int rc = pcre2_match(re, all, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            st = pcre_fail(err, rc, "building the classes");
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        uint8_t cls = (uint8_t)(rc - 1); /* group g matched: class g (1 = space) */
        for (size_t i = ov[0]; i < ov[1];)
            p->cls[decode_cpt(all, n, &i)] = cls;
        at = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    free(all);
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* Expressions                                                                          */

/* What \p{X} becomes over the collapsed text (inside a class): its collapsed byte and
 * its ASCII members as llama.cpp lists them ('~' is in neither P nor S there). */
static const char *class_set(char x)
{
    switch (x) {
    case 'N': return "\\x{d1}0-9";
    case 'L': return "\\x{d2}A-Za-z";
    case 'P': return "\\x{d3}!-#%-*,-/:-;?-@\\[-\\]_\\{\\}";
    case 'M': return "\\x{d4}";
    case 'S': return "\\x{d5}\\$\\+<->\\^`\\|";
    default: return NULL;
    }
}

static bool uses_classes(const char *re)
{
    for (const char *q = re; (q = strstr(q, "\\p{")) != NULL; q += 3)
        if (class_set(q[3]) && q[4] == '}')
            return true;
    return false;
}

/* Rewrites re for the collapsed text into out (cap bytes). */
static bool collapse_expr(const char *re, char *out, size_t cap)
{
    size_t o = 0;
    bool inside = false;
    for (size_t i = 0; re[i]; i++) {
        const char *add = NULL;
        char one[2] = {re[i], 0};
        bool escaped = i > 0 && re[i - 1] == '\\';
        if (re[i] == '[' && !escaped) {
            inside = true;
        } else if (re[i] == ']' && inside && !escaped) {
            inside = false;
        } else if (re[i] == '\\' && re[i + 1] == 'p' && re[i + 2] == '{' && re[i + 3] &&
                   re[i + 4] == '}' && class_set(re[i + 3])) {
            add = class_set(re[i + 3]);
            size_t k = strlen(add) + 2;
            if (o + k >= cap)
                return false;
            if (!inside)
                out[o++] = '[';
            memcpy(out + o, add, strlen(add));
            o += strlen(add);
            if (!inside)
                out[o++] = ']';
            i += 4;
            continue;
        }
        add = one;
        if (o + 1 >= cap)
            return false;
        out[o++] = add[0];
    }
    out[o] = 0;
    return true;
}

static free_status compile_expr(const char *re, expr *e, fr_error *err)
{
    char buf[2048];
    const char *pat = re;
    uint32_t opts = PCRE2_DOLLAR_ENDONLY;
    e->collapsed = uses_classes(re);
    if (e->collapsed) {
        if (!collapse_expr(re, buf, sizeof buf))
            return fr_fail(err, FREE_ERR_INTERNAL, "pre-tokenizer: expression too long");
        pat = buf;
    } else {
        opts |= PCRE2_UTF;
    }
    int ec;
    PCRE2_SIZE eo;
    e->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!e->code)
        return pcre_fail(err, ec, "compiling an expression");
    pcre2_jit_compile(e->code, PCRE2_JIT_COMPLETE);
    return FREE_OK;
}

static bool name_in(const char *names, const char *name, size_t len)
{
    for (const char *q = names;;) {
        const char *bar = strchr(q, '|');
        size_t k = bar ? (size_t)(bar - q) : strlen(q);
        if (k == len && memcmp(q, name, len) == 0)
            return true;
        if (!bar)
            return false;
        q = bar + 1;
    }
}

static const pre_def *find_def(const char *name, size_t len)
{
    if (len == 0) {
        name = "default";
        len = 7;
    }
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++)
        if (name_in(PRE_DEFS[i].names, name, len))
            return &PRE_DEFS[i];
    return NULL;
}

bool fr_pretok_lookup(const char *name, size_t len, fr_pretok_info *info)
{
    const pre_def *d = find_def(name, len);
    if (d) {
        info->ignore_merges = d->ignore_merges;
        info->add_bos = d->add_bos;
    }
    return d != NULL;
}

free_status fr_pretok_create(const char *name, size_t len, fr_pretok **out,
                             fr_pretok_info *info, fr_error *err)
{
    *out = NULL;
    const pre_def *d = find_def(name, len);
    if (!d)
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tokenizer.ggml.pre is \"%.*s\"; supported pre-tokenizers: llama-bpe "
                       "(llama3, llama-v3), qwen2, deepseek-r1-qwen, smollm, starcoder, "
                       "refact, gpt-2, phi-2, deepseek-coder, deepseek-llm, falcon, default",
                       (int)(len < 40 ? len : 40), name);
    fr_pretok *p = calloc(1, sizeof *p);
    if (!p)
        return fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory");
    free_status st = build_classes(p, err);
    for (int i = 0; st == FREE_OK && i < MAX_EXPRS && d->exprs[i]; i++) {
        st = compile_expr(d->exprs[i], &p->exprs[i], err);
        if (st == FREE_OK)
            p->n_exprs = i + 1;
    }
    if (st != FREE_OK) {
        fr_pretok_destroy(p);
        return st;
    }
    info->ignore_merges = d->ignore_merges;
    info->add_bos = d->add_bos;
    *out = p;
    return FREE_OK;
}

void fr_pretok_destroy(fr_pretok *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_exprs; i++)
        pcre2_code_free(p->exprs[i].code);
    free(p->cls);
    free(p);
}

/* ------------------------------------------------------------------------------------ */
/* Splitting                                                                            */

/* Offsets are 32-bit: the tokenizer refuses text over 2^30 bytes. */
typedef struct split_state {
    uint32_t *cpts;
    size_t n;
    unsigned char *collapsed; /* n bytes */
    /* Only when an expression runs over UTF-8: */
    unsigned char *utf8;      /* the code points, non-ASCII whitespace as \v */
    uint32_t *byte_at;        /* n + 1: byte offset of code point i in utf8 */
    uint32_t *cpt_at;         /* utf8 length + 1: code point at a byte offset */
    uint32_t *lens;           /* current pieces, in code points */
    size_t n_lens;
    uint32_t *next;           /* the pieces being made */
    size_t n_next;
} split_state;

static void push_len(split_state *s, size_t k)
{
    if (k > 0)
        s->next[s->n_next++] = (uint32_t)k;
}

/* Cuts every current piece by e; pieces are runs of code points. */
static free_status apply_expr(split_state *s, const expr *e, pcre2_match_data *md,
                              fr_error *err)
{
    s->n_next = 0;
    size_t start = 0;
    for (size_t p = 0; p < s->n_lens; p++) {
        size_t len = s->lens[p];
        const unsigned char *subj;
        size_t slen;
        if (e->collapsed) {
            subj = s->collapsed + start;
            slen = len;
        } else {
            subj = s->utf8 + s->byte_at[start];
            slen = s->byte_at[start + len] - s->byte_at[start];
        }
        size_t at = 0, last = 0; /* in subject units */
        while (at <= slen) {
            int rc = pcre2_match(e->code, subj, slen, at, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0)
                return pcre_fail(err, rc, "splitting the text");
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* an empty match cuts nothing: step one character */
                at = ms + 1;
                while (!e->collapsed && at < slen && (subj[at] & 0xC0) == 0x80)
                    at++;
                continue;
            }
            if (e->collapsed) {
                push_len(s, ms - last);
                push_len(s, me - ms);
            } else {
                size_t base = s->byte_at[start];
                size_t c_last = s->cpt_at[base + last], c_ms = s->cpt_at[base + ms];
                size_t c_me = s->cpt_at[base + me];
                push_len(s, c_ms - c_last);
                push_len(s, c_me - c_ms);
            }
            last = at = me;
        }
        if (e->collapsed) {
            push_len(s, slen - last);
        } else {
            size_t base = s->byte_at[start];
            push_len(s, s->cpt_at[base + slen] - s->cpt_at[base + last]);
        }
        start += len;
    }
    uint32_t *t = s->lens;
    s->lens = s->next;
    s->next = t;
    s->n_lens = s->n_next;
    return FREE_OK;
}

static free_status words_reserve(fr_words *w, size_t bytes, size_t n, fr_error *err)
{
    if (bytes > w->cap) {
        char *b = realloc(w->buf, bytes);
        if (!b)
            return fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory");
        w->buf = b;
        w->cap = bytes;
    }
    if (n > w->ends_cap) {
        size_t *e = realloc(w->ends, n * sizeof *e);
        if (!e)
            return fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory");
        w->ends = e;
        w->ends_cap = n;
    }
    return FREE_OK;
}

/* Decodes text into s (and the UTF-8 subject when utf8 is set). */
static void decode_text(const fr_pretok *p, const unsigned char *t, size_t len, bool utf8,
                        split_state *s)
{
    size_t nb = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c = decode_cpt(t, len, &i);
        uint8_t cls = c < MAX_CPT ? p->cls[c] : CLS_OTHER;
        s->cpts[s->n] = c;
        s->collapsed[s->n] = c < 0x80 ? (unsigned char)c : COLLAPSED[cls];
        if (utf8) {
            /* Non-ASCII whitespace as \v; what PCRE2 cannot hold (a surrogate, a value
             * past U+10FFFF) as U+FFFD, which no expression names. */
            uint32_t u = c >= 0x80 && cls == CLS_SPACE ? 0x0B : c;
            if ((u >= 0xD800 && u <= 0xDFFF) || u > 0x10FFFF)
                u = 0xFFFD;
            s->byte_at[s->n] = (uint32_t)nb;
            size_t k = encode_cpt(u, s->utf8 + nb);
            for (size_t j = 0; j < k; j++)
                s->cpt_at[nb + j] = (uint32_t)s->n;
            nb += k;
        }
        s->n++;
    }
    if (utf8) {
        s->byte_at[s->n] = (uint32_t)nb;
        s->cpt_at[nb] = (uint32_t)s->n;
    }
}

free_status fr_pretok_split(const fr_pretok *p, const char *text, size_t len, fr_words *w,
                            fr_error *err)
{
    w->len = 0;
    w->n = 0;
    if (len == 0)
        return FREE_OK;
    if (len > UINT32_MAX / 4)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "pre-tokenizer: %zu bytes is too long", len);
    bool utf8 = false;
    for (int i = 0; i < p->n_exprs; i++)
        utf8 = utf8 || !p->exprs[i].collapsed;
    split_state s = {0};
    s.cpts = malloc(len * sizeof *s.cpts);
    s.collapsed = malloc(len);
    s.lens = malloc(len * sizeof *s.lens);
    s.next = malloc(len * sizeof *s.next);
    if (utf8) {
        s.utf8 = malloc(4 * len);
        s.byte_at = malloc((len + 1) * sizeof *s.byte_at);
        s.cpt_at = malloc((4 * len + 1) * sizeof *s.cpt_at);
    }
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    free_status st = FREE_OK;
    if (!s.cpts || !s.collapsed || !s.lens || !s.next || !md ||
        (utf8 && (!s.utf8 || !s.byte_at || !s.cpt_at))) {
        st = fr_fail(err, FREE_ERR_NOMEM, "pre-tokenizer: out of memory for %zu bytes", len);
        goto done;
    }
    decode_text(p, (const unsigned char *)text, len, utf8, &s);
    s.lens[0] = (uint32_t)s.n;
    s.n_lens = 1;
    for (int i = 0; i < p->n_exprs && st == FREE_OK; i++)
        st = apply_expr(&s, &p->exprs[i], md, err);
    if (st != FREE_OK)
        goto done;
    if ((st = words_reserve(w, 4 * s.n, s.n_lens, err)) != FREE_OK)
        goto done;
    size_t c = 0;
    for (size_t i = 0; i < s.n_lens; i++) {
        for (size_t j = 0; j < s.lens[i]; j++, c++)
            w->len += encode_cpt(s.cpts[c], (unsigned char *)w->buf + w->len);
        w->ends[w->n++] = w->len;
    }
done:
    pcre2_match_data_free(md);
    free(s.cpts);
    free(s.collapsed);
    free(s.utf8);
    free(s.byte_at);
    free(s.cpt_at);
    free(s.lens);
    free(s.next);
    return st;
}

void fr_words_free(fr_words *w)
{
    free(w->buf);
    free(w->ends);
    memset(w, 0, sizeof *w);
}
