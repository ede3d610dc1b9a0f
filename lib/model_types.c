/* The weight type label of a loaded model (free_model_weight_type). */
#include "model.h"

#include <stdio.h>
#include <string.h>

/* llama.cpp's general.file_type values (LLAMA_FTYPE_*) and their names. */
static const char *file_type_name(uint32_t ft)
{
    switch (ft) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return NULL;
    }
}

enum { MAX_TYPES = 40 };

static void count(const fr_matrix *w, int *counts)
{
    if (w->data && w->type < MAX_TYPES)
        counts[w->type]++;
}

void fr_model_weight_type(const struct free_model *m, char *buf, size_t cap)
{
    int counts[MAX_TYPES] = {0};
    count(&m->tok_embd, counts);
    if (m->output.data != m->tok_embd.data)
        count(&m->output, counts);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const fr_layer *L = &m->layers[il];
        const fr_matrix *ws[] = {&L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo,
                                 &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            count(ws[i], counts);
    }
    int kinds = 0, only = 0;
    for (int t = 0; t < MAX_TYPES; t++)
        if (counts[t]) {
            kinds++;
            only = t;
        }
    if (kinds <= 1) {
        snprintf(buf, cap, "%s", kinds ? gguf_tensor_type_name((uint32_t)only) : "");
        return;
    }
    uint32_t ft = 0;
    bool found = false;
    fr_error err;
    const char *label = NULL;
    if (gguf_get_u32(m->gguf, "general.file_type", &ft, &found, &err) == FREE_OK && found)
        label = file_type_name(ft);
    size_t len = (size_t)snprintf(buf, cap, "%s:", label ? label : "mixed");
    /* The types by decreasing count (ties: by type id). */
    for (int k = 0; k < kinds && len < cap; k++) {
        int best = -1;
        for (int t = 0; t < MAX_TYPES; t++)
            if (counts[t] > 0 && (best < 0 || counts[t] > counts[best]))
                best = t;
        len += (size_t)snprintf(buf + len, cap - len, "%s %d %s", k ? "," : "", counts[best],
                                gguf_tensor_type_name((uint32_t)best));
        counts[best] = -counts[best];
    }
}
