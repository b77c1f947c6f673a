/* test_train_optim.c — learning-rate schedules against transformers, and the optimizer's
 * bookkeeping (defaults, parsing).
 *
 * tests/fixtures/train/schedules.json is what tools/make_optim_fixtures.py read from
 * transformers' get_{constant,linear,cosine}_schedule_with_warmup: the factor of every
 * optimizer step k = 0 … total+2, and the lr a torch AdamW param group held at each step.
 * Run from the repository root (ctest does). */
#include <jansson.h>

#include "t.h"
#include "train/optim.h"

static void test_schedules(void) {
    json_error_t err;
    json_t *root = json_load_file("tests/fixtures/train/schedules.json", 0, &err);
    T_OK(root != NULL);
    if (!root) return;
    json_t *cases = json_object_get(root, "cases");
    T_OK(json_array_size(cases) >= 8);
    size_t i, checked = 0;
    json_t *cs;
    double worst = 0;
    json_array_foreach(cases, i, cs) {
        to_schedule s = {.warmup = (int)json_integer_value(json_object_get(cs, "warmup")),
                         .total = (int)json_integer_value(json_object_get(cs, "total")),
                         .cycles = 0.5};
        int kind = to_sched_parse(json_string_value(json_object_get(cs, "kind")));
        T_OK(kind >= 0);
        s.kind = (to_sched_kind)kind;
        double lr = json_number_value(json_object_get(cs, "lr"));
        json_t *f = json_object_get(cs, "factors"), *lrs = json_object_get(cs, "lrs");
        for (size_t k = 0; k < json_array_size(f); k++) {
            double want = json_number_value(json_array_get(f, k));
            double got = to_lr_factor(&s, (long)k);
            T_NEAR(got, want, 1e-12);
            T_NEAR(lr * got, json_number_value(json_array_get(lrs, k)), 1e-12);
            if (fabs(got - want) > worst) worst = fabs(got - want);
            checked++;
        }
    }
    printf("schedules: %zu factors checked, worst |diff| %.3g\n", checked, worst);
    json_decref(root);
}

static void test_defaults(void) {
    to_config c;
    to_config_default(&c, TO_ADAMW);
    T_NEAR(c.lr, 2e-4, 0);
    T_NEAR(c.beta1, 0.9, 0);
    T_NEAR(c.beta2, 0.999, 0);
    T_NEAR(c.eps, 1e-8, 0);
    T_NEAR(c.weight_decay, 0.01, 0);   /* torch.optim.AdamW's default */
    T_EQ_INT(c.sched.kind, TO_SCHED_CONSTANT);
    T_EQ_INT(to_sched_parse("cosine"), TO_SCHED_COSINE);
    T_EQ_INT(to_sched_parse("cosine_with_restarts"), -1);
    T_STR(to_sched_name(TO_SCHED_LINEAR), "linear");
    /* warmup: the first step runs at lr 0, as the Trainer's LambdaLR */
    to_schedule s = {TO_SCHED_LINEAR, 4, 20, 0.5};
    T_NEAR(to_lr_factor(&s, 0), 0.0, 0);
    T_NEAR(to_lr_factor(&s, 2), 0.5, 1e-15);
    T_NEAR(to_lr_factor(&s, 4), 1.0, 1e-15);
    T_NEAR(to_lr_factor(&s, 25), 0.0, 0);
}

int main(void) {
    T_RUN(test_schedules);
    T_RUN(test_defaults);
    return t_done();
}
