/* The speed/quality figure: quality against speed-up over the full model, one point per
 * threshold joined in threshold order, adaptive and verify marked apart (as in the FREE
 * paper's figure). Plain SVG text, no dependencies. */
#include "bench.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { W = 1000, H = 520, PANEL_W = 470, LEFT = 70, RIGHT = 20, TOP = 110, BOTTOM = 60 };

typedef struct axis {
    double lo, hi, step;
} axis;

typedef struct panel {
    double x0;       /* left edge of the panel */
    axis x, y;
    const char *ylabel;
    int quality;     /* 0: ROUGE-L, 1: agreement */
} panel;

static double nice_step(double span)
{
    double raw = span / 6.0;
    double mag = pow(10.0, floor(log10(raw)));
    double norm = raw / mag;
    return (norm < 1.5 ? 1.0 : norm < 3.0 ? 2.0 : norm < 7.0 ? 5.0 : 10.0) * mag;
}

/* An axis covering [lo, hi] with a margin, its ends on multiples of the tick step. */
static axis make_axis(double lo, double hi, double min_span)
{
    if (!(hi - lo >= min_span)) {
        double mid = (lo + hi) / 2.0;
        lo = mid - min_span / 2.0;
        hi = mid + min_span / 2.0;
    }
    double pad = (hi - lo) * 0.08;
    axis a;
    a.step = nice_step(hi - lo + 2 * pad);
    a.lo = floor((lo - pad) / a.step) * a.step;
    a.hi = ceil((hi + pad) / a.step) * a.step;
    return a;
}

static double quality(const fb_point *p, int which)
{
    return which ? p->agreement : p->rouge_l;
}

static double px(const panel *pn, double v)
{
    double w = PANEL_W - LEFT - RIGHT;
    return pn->x0 + LEFT + (v - pn->x.lo) / (pn->x.hi - pn->x.lo) * w;
}

static double py(const panel *pn, double v)
{
    double h = H - TOP - BOTTOM;
    return TOP + h - (v - pn->y.lo) / (pn->y.hi - pn->y.lo) * h;
}

static void text_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else
            fputc(*s, f);
    }
}

static void marker(FILE *f, fb_kind kind, double x, double y)
{
    switch (kind) {
    case FB_FREE:
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='5' fill='#1f77b4'/>\n", x, y);
        break;
    case FB_ADAPTIVE:
        fprintf(f, "<path d='M%.1f %.1fl7 7l-7 7l-7 -7z' fill='#ff7f0e' stroke='#000' "
                   "stroke-width='0.6'/>\n", x, y - 7);
        break;
    case FB_VERIFY:
        fprintf(f, "<rect x='%.1f' y='%.1f' width='11' height='11' fill='#2ca02c' "
                   "stroke='#000' stroke-width='0.6'/>\n", x - 5.5, y - 5.5);
        break;
    default:
        fprintf(f, "<path d='M%.1f %.1fh14M%.1f %.1fv14' stroke='#000' stroke-width='2.5'/>\n",
                x - 7, y, x, y - 7);
        break;
    }
}

static int by_threshold(const void *a, const void *b)
{
    const fb_point *const *pa = a, *const *pb = b;
    return ((*pa)->threshold > (*pb)->threshold) - ((*pa)->threshold < (*pb)->threshold);
}

typedef struct box {
    double x0, y0, x1, y1;
} box;

static bool overlaps(box a, box b)
{
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

/* Puts each label beside its point where it hides no other label or marker: points often
 * sit together at quality 1, so a few positions around the point are tried, nearest
 * first, then further up and down. */
static void place_labels(FILE *f, const panel *pn, const fb_point *pts, int n)
{
    enum { CH = 11, MAX_BOXES = 256 };
    box placed[MAX_BOXES];
    int nb = 0;
    for (int i = 0; i < n && nb < MAX_BOXES; i++) {
        double x = px(pn, pts[i].speedup), y = py(pn, quality(&pts[i], pn->quality));
        placed[nb++] = (box){x - 7, y - 7, x + 7, y + 7};
    }
    const double left = px(pn, pn->x.lo), right = px(pn, pn->x.hi);
    for (int i = 0; i < n; i++) {
        double x = px(pn, pts[i].speedup), y = py(pn, quality(&pts[i], pn->quality));
        double w = 6.2 * (double)strlen(pts[i].label);
        box best = {x + 8, y - 7 - CH, x + 8 + w, y - 7};
        for (int k = 0; k < 24; k++) {
            /* k: right/left, then above/below, then one line further out per round. */
            double out = (k / 4) * (CH + 2);
            double bx = k % 2 ? x - 8 - w : x + 8;
            double by = (k / 2) % 2 ? y + 7 + out : y - 7 - CH - out;
            box b = {bx, by, bx + w, by + CH};
            if (b.x0 < left || b.x1 > right)
                continue;
            bool free_spot = true;
            for (int j = 0; j < nb && free_spot; j++)
                free_spot = !overlaps(b, placed[j]);
            if (free_spot) {
                best = b;
                break;
            }
        }
        if (nb < MAX_BOXES)
            placed[nb++] = best;
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11'>", best.x0, best.y1 - 1);
        text_escaped(f, pts[i].label);
        fputs("</text>\n", f);
    }
}

static void draw_panel(FILE *f, const panel *pn, const fb_point *pts, int n)
{
    const double l = px(pn, pn->x.lo), r = px(pn, pn->x.hi);
    const double t = py(pn, pn->y.hi), b = py(pn, pn->y.lo);
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#fff' "
               "stroke='#444'/>\n", l, t, r - l, b - t);
    /* Ticks with light grid lines; rounding keeps 0.30000000000000004 off the labels. */
    for (double v = pn->x.lo; v <= pn->x.hi + pn->x.step * 1e-6; v += pn->x.step) {
        double x = px(pn, v);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#e4e4e4'/>\n", x, t,
                x, b);
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>%.4g</text>\n", x, b + 18,
                round(v * 1e6) / 1e6);
    }
    for (double v = pn->y.lo; v <= pn->y.hi + pn->y.step * 1e-6; v += pn->y.step) {
        double y = py(pn, v);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#e4e4e4'/>\n", l, y,
                r, y);
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='end'>%.4g</text>\n", l - 6, y + 4,
                round(v * 1e6) / 1e6);
    }
    if (pn->x.lo < 1.0 && 1.0 < pn->x.hi)
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#888' "
                   "stroke-dasharray='6 4'/>\n", px(pn, 1.0), t, px(pn, 1.0), b);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>decode speed-up over NONE "
               "(median of paired runs)</text>\n", (l + r) / 2, b + 42);
    fprintf(f, "<text transform='translate(%.1f %.1f) rotate(-90)' text-anchor='middle'>%s"
               "</text>\n", pn->x0 + 18, (t + b) / 2, pn->ylabel);

    /* The fixed thresholds as a curve, in threshold order. */
    const fb_point **fr = malloc((size_t)(n > 0 ? n : 1) * sizeof *fr);
    int nf = 0;
    for (int i = 0; fr && i < n; i++)
        if (pts[i].kind == FB_FREE)
            fr[nf++] = &pts[i];
    if (fr && nf > 1) {
        qsort(fr, (size_t)nf, sizeof *fr, by_threshold);
        fputs("<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='", f);
        for (int i = 0; i < nf; i++)
            fprintf(f, "%s%.1f,%.1f", i ? " " : "", px(pn, fr[i]->speedup),
                    py(pn, quality(fr[i], pn->quality)));
        fputs("'/>\n", f);
    }
    free(fr);
    for (int i = 0; i < n; i++)
        marker(f, pts[i].kind, px(pn, pts[i].speedup), py(pn, quality(&pts[i], pn->quality)));
    place_labels(f, pn, pts, n);
}

static void legend(FILE *f, double x, double y)
{
    static const struct { fb_kind kind; const char *text; } items[] = {
        {FB_FREE, "FREE, fixed threshold (labelled)"},
        {FB_ADAPTIVE, "FREE, adaptive threshold (learned value)"},
        {FB_VERIFY, "verify (lossless)"},
        {FB_NONE, "none (full model)"},
    };
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        marker(f, items[i].kind, x + 8, y - 4);
        fprintf(f, "<text x='%.1f' y='%.1f'>%s</text>\n", x + 20, y, items[i].text);
        x += 60 + 6.4 * (double)strlen(items[i].text);
    }
}

int fb_svg_write(const char *path, const char *title, const char *subtitle,
                 const fb_point *pts, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    double xlo = 1.0, xhi = 1.0, ylo[2] = {1.0, 1.0};
    for (int i = 0; i < n; i++) {
        xlo = fmin(xlo, pts[i].speedup);
        xhi = fmax(xhi, pts[i].speedup);
        for (int q = 0; q < 2; q++)
            ylo[q] = fmin(ylo[q], quality(&pts[i], q));
    }
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n"
               "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
               "viewBox='0 0 %d %d' font-family='sans-serif' font-size='12'>\n"
               "<rect width='100%%' height='100%%' fill='#fafafa'/>\n", W, H, W, H);
    fputs("<text x='20' y='28' font-size='16' font-weight='bold'>", f);
    text_escaped(f, title);
    fputs("</text>\n<text x='20' y='50' fill='#333'>", f);
    text_escaped(f, subtitle);
    fputs("</text>\n", f);
    legend(f, 20, 80);
    static const char *const names[2] = {"ROUGE-L vs NONE's text (tokens)",
                                         "token agreement with the full model"};
    for (int q = 0; q < 2; q++) {
        panel pn;
        pn.x0 = 20 + q * (PANEL_W + 20);
        pn.x = make_axis(xlo, xhi, 0.2);
        pn.y = make_axis(ylo[q], 1.0, 0.1);
        /* Quality never exceeds 1: half a step of room keeps markers at 1 inside. */
        pn.y.hi = 1.0 + pn.y.step / 2;
        pn.ylabel = names[q];
        pn.quality = q;
        draw_panel(f, &pn, pts, n);
    }
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}
