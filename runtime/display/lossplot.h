/* lossplot.h — the loss curve of a training run as a MIME bundle: image/svg+xml (static,
 * survives nbconvert), application/vnd.vegalite.v5+json (front ends that render it) and a
 * text/plain line. `train` redraws it in place while it runs. */
#ifndef LOUPE_DISPLAY_LOSSPLOT_H
#define LOUPE_DISPLAY_LOSSPLOT_H
#include <stddef.h>
#include <jansson.h>

typedef struct dp_curve {
    const double *step, *loss;   /* [n] */
    size_t n;
} dp_curve;

/* NULL on OOM. train: the per-step losses; eval: the evaluations (may be empty). */
json_t *dp_loss_plot(const dp_curve *train, const dp_curve *eval, const char *title);

#endif
