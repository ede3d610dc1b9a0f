/* Fuzz target: chat templates. Byte 0: bit 0 set = the template is the first NUL-ended
 * segment of the input (a name or Jinja text, detected), clear = the format whose index is
 * byte 1 (a name); bits 1..7 = the output capacity to try first. The rest: NUL-separated
 * role, content, role, content, ... (any bytes, so invalid UTF-8 too).
 * Checked: detection reads only the bytes it is given (each call gets an exact-size copy);
 * the needed size is the same for every capacity and a too-small buffer says so without
 * being overrun; the text is NUL-terminated valid UTF-8 when the messages are; the text
 * without the generation prompt is a prefix of the text with it; every failure has a
 * message, and only the documented statuses occur. */
#include "chat.h"
#include "fuzz-common.h"

/* A malloc'd exact copy of n bytes (no terminator), so that ASan sees any over-read. */
static char *exact(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* The next NUL-terminated segment of [*p, end) as a new C string, or NULL at the end. */
static char *segment(const uint8_t **p, const uint8_t *end)
{
    if (*p >= end)
        return NULL;
    const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
    size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += n + (nul ? 1 : 0);
    return s;
}

static void check_format(const char *tmpl, const free_chat_message *msgs, size_t n,
                         size_t first_cap, int msgs_valid)
{
    size_t need[2] = {0, 0};
    char *text[2] = {NULL, NULL};
    for (int add = 0; add < 2; add++) {
        size_t len = 7;
        free_status s = free_chat_format(NULL, tmpl, msgs, n, add, NULL, 0, &len);
        fr_fuzz_check_message(s, "free_chat_format");
        if (s == FREE_ERR_UNSUPPORTED || s == FREE_ERR_INVALID_ARG) {
            FR_FUZZ_ASSERT(len == 0);
            FR_FUZZ_ASSERT(s == FREE_ERR_UNSUPPORTED || !msgs_valid);
            return;
        }
        FR_FUZZ_ASSERT(s == FREE_ERR_BUFFER_TOO_SMALL);
        need[add] = len;
        /* The first capacity, with a guard zone after it. */
        size_t cap = first_cap;
        char *buf = malloc(cap + 16);
        memset(buf, 0x5A, cap + 16);
        size_t len2 = 0;
        s = free_chat_format(NULL, tmpl, msgs, n, add, buf, cap, &len2);
        FR_FUZZ_ASSERT(len2 == len);
        FR_FUZZ_ASSERT(s == (len < cap ? FREE_OK : FREE_ERR_BUFFER_TOO_SMALL));
        for (size_t i = cap; i < cap + 16; i++)
            FR_FUZZ_ASSERT(buf[i] == 0x5A);
        free(buf);
        /* The exact capacity. */
        text[add] = malloc(len + 1);
        s = free_chat_format(NULL, tmpl, msgs, n, add, text[add], len + 1, &len2);
        FR_FUZZ_ASSERT(s == FREE_OK && len2 == len && text[add][len] == '\0');
        FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)text[add], len));
    }
    FR_FUZZ_ASSERT(need[0] <= need[1] && memcmp(text[0], text[1], need[0]) == 0);
    free(text[0]);
    free(text[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        fr_fuzz_quiet();
        quiet = 1;
    }
    if (size < 2)
        return 0;
    const uint8_t *p = data + 1, *end = data + size;
    const size_t first_cap = data[0] >> 1;
    char *tmpl;
    if (data[0] & 1) {
        tmpl = segment(&p, end);
        if (!tmpl)
            return 0;
        /* Detection on the exact bytes, then on every prefix length of up to 64. */
        size_t n = strlen(tmpl);
        char *copy = exact((const uint8_t *)tmpl, n);
        int t = fr_chat_detect(copy, n);
        FR_FUZZ_ASSERT(t >= 0 && t < FR_CHAT_COUNT);
        for (size_t k = 0; k < n && k < 64; k++) {
            char *pre = exact((const uint8_t *)tmpl, k);
            int u = fr_chat_detect(pre, k);
            FR_FUZZ_ASSERT(u >= 0 && u < FR_CHAT_COUNT);
            free(pre);
        }
        free(copy);
    } else {
        int t = 1 + data[1] % (FR_CHAT_COUNT - 1);
        const char *name = fr_chat_name(t);
        tmpl = malloc(strlen(name) + 1);
        strcpy(tmpl, name);
        p++;
    }
    free_chat_message msgs[32];
    size_t n = 0;
    int valid = 1;
    char *role;
    while (n < 32 && (role = segment(&p, end)) != NULL) {
        char *content = segment(&p, end);
        if (!content) {
            content = malloc(1);
            content[0] = '\0';
        }
        valid &= fr_fuzz_utf8_valid((const unsigned char *)role, strlen(role)) &&
                 fr_fuzz_utf8_valid((const unsigned char *)content, strlen(content));
        msgs[n++] = (free_chat_message){role, content};
    }
    check_format(tmpl, n ? msgs : NULL, n, first_cap, valid);
    for (size_t i = 0; i < n; i++) {
        free((char *)msgs[i].role);
        free((char *)msgs[i].content);
    }
    free(tmpl);
    return 0;
}
