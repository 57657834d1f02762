/* `--kv` specs: the registry of KV-cache policies, the keys they share, budget resolution. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

static const kv_policy_ops *const registry[] = {
    &kv_streaming_ops, &kv_h2o_ops, &kv_snapkv_ops, &kv_scissorhands_ops, &kv_kvcrush_ops,
    &kv_ems_ops, &kv_d2o_ops, &kv_mustafar_ops, &kv_flexprefill_ops, &kv_deltallm_ops,
    &kv_delta_ops, &kv_recycled_ops, &kv_autopasta_ops, &kv_think_ops, &kv_int4_ops,
};

static const kv_policy_ops *find(const char *name)
{
    for (size_t i = 0; i < sizeof registry / sizeof *registry; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}

static plm_status int_key(prune_spec *s, const char *key, int64_t *out, plm_error *err)
{
    double d;
    PLM_TRY(prune_spec_num(s, key, -1, 0, 1 << 24, &d, err));
    if (d >= 0 && d != floor(d))
        return plm_fail(err, PLM_E_FORMAT, "kv spec '%s': %s must be a whole number", s->text,
                        key);
    *out = (int64_t)d;
    return PLM_OK;
}

static plm_status parse_one(const char *text, kv_policy **out, plm_error *err)
{
    prune_spec s;
    PLM_TRY(prune_spec_parse(text, &s, err));
    const kv_policy_ops *ops = find(s.name);
    if (!ops) {
        char names[512] = "";
        for (size_t i = 0; i < sizeof registry / sizeof *registry; i++) {
            if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
            strncat(names, registry[i]->name, sizeof names - strlen(names) - 1);
        }
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': unknown policy '%s' (known: none, %s)",
                        s.text, s.name, names);
    }
    kv_policy *p = calloc(1, sizeof *p);
    if (!p) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    p->ops = ops;
    snprintf(p->spec, sizeof p->spec, "%s", s.text);
    double ratio;
    plm_status st = int_key(&s, "budget", &p->c.budget, err);
    if (st == PLM_OK) st = prune_spec_num(&s, "ratio", 0, 0, 1, &ratio, err);
    if (st == PLM_OK) st = int_key(&s, "sink", &p->c.sink, err);
    if (st == PLM_OK) st = int_key(&s, "recent", &p->c.recent, err);
    if (st == PLM_OK) st = int_key(&s, "window", &p->c.window, err);
    p->c.ratio = ratio;
    if (p->c.budget < 0) p->c.budget = 0;
    if (st == PLM_OK && p->c.budget && p->c.ratio > 0)
        st = plm_fail(err, PLM_E_ARG, "kv spec '%s': give budget= or ratio=, not both", s.text);
    if (st == PLM_OK && ops->parse) st = ops->parse(p, &s, err);
    if (st == PLM_OK) st = prune_spec_check_unused(&s, err);
    if (st != PLM_OK) {
        kv_policy_free(p);
        return st;
    }
    *out = p;
    return PLM_OK;
}

/* The chain's text with every "@FILE" part replaced by the file's spec, so a policy file joins
 * others (`@mine.spec+int4`, what `--kv-quant` builds). A file name may not contain '+'. */
static plm_status expand(const char *spec, char *out, size_t n, plm_error *err)
{
    char raw[2048], part_text[2048];
    if (!spec || !*spec) return plm_fail(err, PLM_E_ARG, "empty kv spec");
    if (strlen(spec) >= sizeof raw)
        return plm_fail(err, PLM_E_LIMIT, "kv spec over %zu characters", sizeof raw - 1);
    strcpy(raw, spec);
    out[0] = 0;
    char *save = NULL;
    for (char *part = strtok_r(raw, "+", &save); part; part = strtok_r(NULL, "+", &save)) {
        PLM_TRY(prune_spec_text(part, part_text, sizeof part_text, err));
        if (strlen(out) + strlen(part_text) + 2 > n)
            return plm_fail(err, PLM_E_LIMIT, "kv spec '%s' over %zu characters", spec, n - 1);
        if (out[0]) strcat(out, "+");
        strcat(out, part_text);
    }
    return PLM_OK;
}

plm_status kv_policy_parse(const char *spec, kv_policy **out, plm_error *err)
{
    *out = NULL;
    char text[2048];
    PLM_TRY(expand(spec, text, sizeof text, err));
    kv_policy *head = NULL, **tail = &head;
    char *save = NULL;
    int parts = 0;
    for (char *part = strtok_r(text, "+", &save); part; part = strtok_r(NULL, "+", &save)) {
        parts++;
        if (!strcmp(part, "none")) continue; /* "none+int4": quantisation alone */
        kv_policy *p = NULL;
        plm_status st = parse_one(part, &p, err);
        if (st != PLM_OK) {
            kv_policy_free(head);
            return st;
        }
        *tail = p;
        tail = &p->next;
    }
    if (!parts) return plm_fail(err, PLM_E_ARG, "empty kv spec");
    *out = head;
    return PLM_OK;
}

void kv_policy_free(kv_policy *p)
{
    while (p) {
        kv_policy *next = p->next;
        if (p->ops && p->ops->destroy) p->ops->destroy(p);
        free(p);
        p = next;
    }
}

plm_status kv_policy_begin(kv_policy *p, const kv_shape *shape, plm_error *err)
{
    for (; p; p = p->next) {
        p->shape = *shape;
        if (p->ops->begin) PLM_TRY(p->ops->begin(p, shape, err));
    }
    return PLM_OK;
}

int64_t kv_budget(const kv_policy *p)
{
    if (p->c.budget > 0) return p->c.budget;
    if (p->c.ratio > 0) {
        int64_t b = (int64_t)ceil(p->c.ratio * (double)p->shape.n_prompt);
        return b > 0 ? b : 1;
    }
    return INT64_MAX;
}

plm_status kv_require_budget(const kv_policy *p, plm_error *err)
{
    if (p->c.budget > 0 || p->c.ratio > 0) return PLM_OK;
    return plm_fail(err, PLM_E_ARG, "kv spec '%s': %s needs budget=N (rows per head and layer) "
                    "or ratio=R (share of the prompt)", p->spec, p->ops->name);
}

int64_t kv_window(const kv_policy *p)
{
    return kv_or(p->c.window, 32);
}
