/* lossplot.c — a small hand-written SVG line chart (lossplot.h). */
#include "display/lossplot.h"

#include <math.h>
#include <stdio.h>

#include "util/sbuf.h"

enum { W = 560, H = 260, L = 56, R = 16, TOP = 28, BOT = 36 };

static void path(sbuf *b, const dp_curve *c, double x0, double x1, double y0, double y1,
                 const char *color, int dots) {
    if (!c->n) return;
    double sx = (W - L - R) / (x1 > x0 ? x1 - x0 : 1), sy = (H - TOP - BOT) / (y1 > y0 ? y1 - y0 : 1);
    sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
    for (size_t i = 0; i < c->n; i++) {
        if (!isfinite(c->loss[i])) continue;
        sb_printf(b, "%s%.1f,%.1f", i ? " " : "", L + (c->step[i] - x0) * sx,
                  H - BOT - (c->loss[i] - y0) * sy);
    }
    sb_puts(b, "\"/>\n");
    for (size_t i = 0; dots && i < c->n; i++)
        if (isfinite(c->loss[i]))
            sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                      L + (c->step[i] - x0) * sx, H - BOT - (c->loss[i] - y0) * sy, color);
}

json_t *dp_loss_plot(const dp_curve *tr, const dp_curve *ev, const char *title) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    const dp_curve *cs[2] = {tr, ev};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < cs[k]->n; i++) {
            if (!isfinite(cs[k]->loss[i])) continue;
            x0 = fmin(x0, cs[k]->step[i]), x1 = fmax(x1, cs[k]->step[i]);
            y0 = fmin(y0, cs[k]->loss[i]), y1 = fmax(y1, cs[k]->loss[i]);
        }
    if (!isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 - x0 < 1) x1 = x0 + 1;
    double pad = (y1 - y0) * 0.05 + 1e-3;
    y0 -= pad, y1 += pad;
    sbuf b, t;
    sb_init(&b);
    sb_init(&t);
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    sb_printf(&b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    sb_puts(&b, "<text x=\"8\" y=\"16\" font-size=\"13\">");
    sb_html_escape(&b, title);
    sb_puts(&b, "</text>\n");
    sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>\n", L, H - BOT, W - R, H - BOT);
    sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>\n", L, TOP, L, H - BOT);
    for (int k = 0; k <= 4; k++) {   /* y ticks */
        double v = y0 + (y1 - y0) * k / 4, y = H - BOT - (double)(H - TOP - BOT) * k / 4;
        sb_printf(&b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 4, y + 4, v);
        sb_printf(&b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>\n", L + 1, y, W - R, y);
    }
    for (int k = 0; k <= 4; k++) {   /* x ticks */
        double v = x0 + (x1 - x0) * k / 4, x = L + (double)(W - L - R) * k / 4;
        sb_printf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x, H - BOT + 14, v);
    }
    sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 6);
    path(&b, tr, x0, x1, y0, y1, "#1f77b4", 0);
    path(&b, ev, x0, x1, y0, y1, "#d62728", 1);
    sb_printf(&b, "<text x=\"%d\" y=\"16\" fill=\"#1f77b4\" text-anchor=\"end\">train</text>\n", W - R - 40);
    if (ev->n) sb_printf(&b, "<text x=\"%d\" y=\"16\" fill=\"#d62728\" text-anchor=\"end\">eval</text>\n", W - R);
    sb_puts(&b, "</svg>\n");
    sb_printf(&t, "%s", title);
    if (tr->n) sb_printf(&t, " · train loss %.4f at step %.0f", tr->loss[tr->n - 1], tr->step[tr->n - 1]);
    if (ev->n) sb_printf(&t, " · eval loss %.4f at step %.0f", ev->loss[ev->n - 1], ev->step[ev->n - 1]);
    if (b.oom || t.oom) { sb_free(&b); sb_free(&t); return NULL; }
    json_t *vals = json_array();
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < cs[k]->n; i++)
            if (isfinite(cs[k]->loss[i]))
                json_array_append_new(vals, json_pack("{s:f,s:f,s:s}", "step", cs[k]->step[i], "loss",
                                                      cs[k]->loss[i], "split", k ? "eval" : "train"));
    json_t *vl = json_pack("{s:s,s:i,s:i,s:{s:o},s:{s:s,s:b},s:{s:{s:s,s:s},s:{s:s,s:s,s:{s:b}},s:{s:s,s:s}}}",
                           "$schema", "https://vega.github.io/schema/vega-lite/v5.json", "width", 480,
                           "height", 200, "data", "values", vals, "mark", "type", "line", "point", 1,
                           "encoding", "x", "field", "step", "type", "quantitative", "y", "field", "loss",
                           "type", "quantitative", "scale", "zero", 0, "color", "field", "split", "type",
                           "nominal");
    json_t *bundle = json_pack("{s:s,s:s}", "text/plain", sb_str(&t), "image/svg+xml", sb_str(&b));
    if (bundle && vl) json_object_set_new(bundle, "application/vnd.vegalite.v5+json", vl);
    else json_decref(vl);
    sb_free(&b);
    sb_free(&t);
    return bundle;
}
