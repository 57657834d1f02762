/* Reads the normalizer, pre_tokenizer, decoder and post_processor sections of tokenizer.json.
 * Every unknown type or option is refused with the field named, rather than ignored: a
 * tokenizer that silently differs from Hugging Face's would corrupt every prompt. */
#include "lm/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 160

/* The regexes Hugging Face files use, spelled exactly as they appear there. */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const cJSON *member(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static plm_status get_type(const tok_tokenizer *t, const cJSON *o, const char *path,
                           const char **type, plm_error *err)
{
    if (!cJSON_IsObject(o))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s is not an object", t->name, path);
    const cJSON *v = member(o, "type");
    if (!cJSON_IsString(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.type is missing or not a string", t->name,
                        path);
    *type = v->valuestring;
    return PLM_OK;
}

static plm_status get_bool(const tok_tokenizer *t, const cJSON *o, const char *path,
                           const char *key, int dflt, int *out, plm_error *err)
{
    const cJSON *v = member(o, key);
    if (!v) {
        *out = dflt;
        return PLM_OK;
    }
    if (!cJSON_IsBool(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is not a boolean", t->name, path, key);
    *out = cJSON_IsTrue(v);
    return PLM_OK;
}

/* A string member, copied (malloc'd) so the config outlives the cJSON tree. */
static plm_status get_str(const tok_tokenizer *t, const cJSON *o, const char *path,
                          const char *key, char **out, size_t *len, plm_error *err)
{
    const cJSON *v = member(o, key);
    if (!cJSON_IsString(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is missing or not a string", t->name,
                        path, key);
    size_t n = strlen(v->valuestring);
    *out = malloc(n + 1);
    if (!*out) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    memcpy(*out, v->valuestring, n + 1);
    *len = n;
    return PLM_OK;
}

/* A one-character string (Metaspace replacement, Strip content). */
static plm_status get_char(const tok_tokenizer *t, const cJSON *o, const char *path,
                           const char *key, char out[5], size_t *len, plm_error *err)
{
    const cJSON *v = member(o, key);
    if (!cJSON_IsString(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is missing or not a string", t->name,
                        path, key);
    const char *s = v->valuestring;
    size_t n = strlen(s);
    if (n == 0 || n > 4 || tok_utf8_valid_len((const unsigned char *)s, n) != n)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s must be a single character", t->name,
                        path, key);
    memcpy(out, s, n + 1);
    *len = n;
    return PLM_OK;
}

/* {"String": "x"} pattern; a Regex pattern is refused (only the pre-tokenizer has regexes). */
static plm_status get_string_pattern(const tok_tokenizer *t, const cJSON *o, const char *path,
                                     char **out, size_t *len, plm_error *err)
{
    const cJSON *p = member(o, "pattern");
    if (!cJSON_IsObject(p))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.pattern is missing or not an object",
                        t->name, path);
    if (member(p, "Regex"))
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.pattern: Regex patterns are not supported "
                        "here, only String", t->name, path);
    char sub[PATH_MAX_LEN];
    snprintf(sub, sizeof sub, "%s.pattern", path);
    PLM_TRY(get_str(t, p, sub, "String", out, len, err));
    if (*len == 0) {
        free(*out);
        *out = NULL;
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.pattern.String is empty", t->name, path);
    }
    return PLM_OK;
}

static plm_status get_prepend_scheme(const tok_tokenizer *t, const cJSON *o, const char *path,
                                     tok_prepend *out, plm_error *err)
{
    *out = TOK_PREPEND_ALWAYS;
    const cJSON *v = member(o, "prepend_scheme");
    if (v) {
        if (!cJSON_IsString(v))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.prepend_scheme is not a string", t->name,
                            path);
        if (strcmp(v->valuestring, "always") == 0)
            *out = TOK_PREPEND_ALWAYS;
        else if (strcmp(v->valuestring, "first") == 0)
            *out = TOK_PREPEND_FIRST;
        else if (strcmp(v->valuestring, "never") == 0)
            *out = TOK_PREPEND_NEVER;
        else
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.prepend_scheme \"%s\" is not one of "
                            "always, first, never", t->name, path, v->valuestring);
    }
    /* Older files say add_prefix_space instead; false must agree with the scheme. */
    int aps = 1;
    PLM_TRY(get_bool(t, o, path, "add_prefix_space", 1, &aps, err));
    if (!aps) {
        if (v && *out != TOK_PREPEND_NEVER)
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.add_prefix_space does not match "
                            "prepend_scheme", t->name, path);
        *out = TOK_PREPEND_NEVER;
    }
    return PLM_OK;
}

/* Appends to a malloc'd array of structs, growing by one. */
static void *grow(void *arr, size_t n, size_t size)
{
    return n + 1 > SIZE_MAX / size ? NULL : realloc(arr, (n + 1) * size);
}

/* ---- normalizer --------------------------------------------------------------------------- */

static plm_status parse_norm(tok_tokenizer *t, const cJSON *o, const char *path, plm_error *err)
{
    const char *type;
    PLM_TRY(get_type(t, o, path, &type, err));
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = member(o, "normalizers");
        if (!cJSON_IsArray(arr))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.normalizers is not an array", t->name,
                            path);
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            char sub[PATH_MAX_LEN];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", path, i);
            PLM_TRY(parse_norm(t, e, sub, err));
        }
        return PLM_OK;
    }
    tok_norm nm = {0};
    if (strcmp(type, "Prepend") == 0) {
        nm.kind = TOK_NORM_PREPEND;
        PLM_TRY(get_str(t, o, path, "prepend", &nm.a, &nm.a_len, err));
    } else if (strcmp(type, "Replace") == 0) {
        nm.kind = TOK_NORM_REPLACE;
        PLM_TRY(get_string_pattern(t, o, path, &nm.a, &nm.a_len, err));
        plm_status st = get_str(t, o, path, "content", &nm.b, &nm.b_len, err);
        if (st != PLM_OK) {
            free(nm.a);
            return st;
        }
    } else if (strcmp(type, "NFC") == 0) {
        nm.kind = TOK_NORM_NFC;
    } else if (strcmp(type, "Strip") == 0) {
        nm.kind = TOK_NORM_STRIP;
        PLM_TRY(get_bool(t, o, path, "strip_left", 1, &nm.left, err));
        PLM_TRY(get_bool(t, o, path, "strip_right", 1, &nm.right, err));
    } else {
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.type \"%s\" is not supported (Sequence, "
                        "Prepend, Replace, NFC, Strip are)", t->name, path, type);
    }
    tok_norm *p = grow(t->norm, t->n_norm, sizeof *p);
    if (!p) {
        free(nm.a);
        free(nm.b);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    }
    t->norm = p;
    t->norm[t->n_norm++] = nm;
    return PLM_OK;
}

plm_status tok_parse_normalizer(tok_tokenizer *t, const cJSON *json, plm_error *err)
{
    return json ? parse_norm(t, json, "normalizer", err) : PLM_OK;
}

/* ---- pre-tokenizer ------------------------------------------------------------------------ */

static plm_status parse_split(tok_tokenizer *t, const cJSON *o, const char *path, tok_pre *pr,
                              plm_error *err)
{
    const cJSON *p = member(o, "pattern");
    if (!cJSON_IsObject(p))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.pattern is missing or not an object",
                        t->name, path);
    const cJSON *re = member(p, "Regex");
    if (re) {
        if (!cJSON_IsString(re))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.pattern.Regex is not a string", t->name,
                            path);
        if (strcmp(re->valuestring, RE_GPT2) == 0)
            pr->regex = TOK_RE_GPT2;
        else if (strcmp(re->valuestring, RE_LLAMA3) == 0)
            pr->regex = TOK_RE_LLAMA3;
        else if (strcmp(re->valuestring, RE_QWEN2) == 0)
            pr->regex = TOK_RE_QWEN2;
        else
            return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.pattern.Regex \"%.200s\" is not a "
                            "pattern prunelm knows (GPT-2, Llama-3 and Qwen2 are)", t->name, path,
                            re->valuestring);
    } else {
        char sub[PATH_MAX_LEN];
        snprintf(sub, sizeof sub, "%s.pattern", path);
        PLM_TRY(get_str(t, p, sub, "String", &pr->literal, &pr->literal_len, err));
    }
    const cJSON *b = member(o, "behavior");
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    int found = -1;
    for (int i = 0; i < 5 && cJSON_IsString(b); i++)
        if (strcmp(b->valuestring, names[i]) == 0) found = i;
    if (found < 0)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.behavior is missing or not one of Removed, "
                        "Isolated, MergedWithPrevious, MergedWithNext, Contiguous", t->name, path);
    pr->behavior = (tok_split_behavior)found;
    return get_bool(t, o, path, "invert", 0, &pr->invert, err);
}

static plm_status parse_pre(tok_tokenizer *t, const cJSON *o, const char *path, plm_error *err)
{
    const char *type;
    PLM_TRY(get_type(t, o, path, &type, err));
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = member(o, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.pretokenizers is not an array", t->name,
                            path);
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            char sub[PATH_MAX_LEN];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", path, i);
            PLM_TRY(parse_pre(t, e, sub, err));
        }
        return PLM_OK;
    }
    /* ByteLevel turns text into byte symbols; nothing after it could see characters again. */
    if (t->byte_level)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s comes after a ByteLevel pre-tokenizer, "
                        "which prunelm supports only as the last step", t->name, path);
    tok_pre pr = {0};
    plm_status st = PLM_OK;
    if (strcmp(type, "Metaspace") == 0) {
        pr.kind = TOK_PRE_METASPACE;
        PLM_TRY(get_char(t, o, path, "replacement", pr.repl, &pr.repl_len, err));
        PLM_TRY(get_prepend_scheme(t, o, path, &pr.prepend, err));
        PLM_TRY(get_bool(t, o, path, "split", 1, &pr.split, err));
    } else if (strcmp(type, "Split") == 0) {
        pr.kind = TOK_PRE_SPLIT;
        st = parse_split(t, o, path, &pr, err);
    } else if (strcmp(type, "ByteLevel") == 0) {
        pr.kind = TOK_PRE_BYTELEVEL;
        PLM_TRY(get_bool(t, o, path, "add_prefix_space", 1, &pr.add_prefix_space, err));
        PLM_TRY(get_bool(t, o, path, "use_regex", 1, &pr.use_regex, err));
        pr.regex = TOK_RE_GPT2;
        t->byte_level = 1;
    } else {
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.type \"%s\" is not supported (Sequence, "
                        "Metaspace, Split, ByteLevel are)", t->name, path, type);
    }
    tok_pre *p = st == PLM_OK ? grow(t->pre, t->n_pre, sizeof *p) : NULL;
    if (!p) {
        free(pr.literal);
        return st != PLM_OK ? st : plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    }
    t->pre = p;
    t->pre[t->n_pre++] = pr;
    return PLM_OK;
}

plm_status tok_parse_pre_tokenizer(tok_tokenizer *t, const cJSON *json, plm_error *err)
{
    return json ? parse_pre(t, json, "pre_tokenizer", err) : PLM_OK;
}

/* ---- decoder ------------------------------------------------------------------------------ */

static plm_status get_count(const tok_tokenizer *t, const cJSON *o, const char *path,
                            const char *key, size_t *out, plm_error *err)
{
    const cJSON *v = member(o, key);
    *out = 0;
    if (!v) return PLM_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 ||
        v->valuedouble != (double)(size_t)v->valuedouble)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is not a count from 0 to 1000000",
                        t->name, path, key);
    *out = (size_t)v->valuedouble;
    return PLM_OK;
}

static plm_status parse_dec(tok_tokenizer *t, const cJSON *o, const char *path, plm_error *err)
{
    const char *type;
    PLM_TRY(get_type(t, o, path, &type, err));
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = member(o, "decoders");
        if (!cJSON_IsArray(arr))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.decoders is not an array", t->name, path);
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            char sub[PATH_MAX_LEN];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", path, i);
            PLM_TRY(parse_dec(t, e, sub, err));
        }
        return PLM_OK;
    }
    tok_dec d = {0};
    plm_status st = PLM_OK;
    char ch[5];
    size_t ch_len = 0;
    if (strcmp(type, "Replace") == 0) {
        d.kind = TOK_DEC_REPLACE;
        PLM_TRY(get_string_pattern(t, o, path, &d.a, &d.a_len, err));
        st = get_str(t, o, path, "content", &d.b, &d.b_len, err);
    } else if (strcmp(type, "ByteFallback") == 0) {
        d.kind = TOK_DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d.kind = TOK_DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        d.kind = TOK_DEC_STRIP;
        PLM_TRY(get_char(t, o, path, "content", ch, &ch_len, err));
        PLM_TRY(get_count(t, o, path, "start", &d.start, err));
        PLM_TRY(get_count(t, o, path, "stop", &d.stop, err));
    } else if (strcmp(type, "ByteLevel") == 0) {
        d.kind = TOK_DEC_BYTE_LEVEL;
    } else if (strcmp(type, "Metaspace") == 0) {
        tok_prepend pp;
        d.kind = TOK_DEC_METASPACE;
        PLM_TRY(get_char(t, o, path, "replacement", ch, &ch_len, err));
        PLM_TRY(get_prepend_scheme(t, o, path, &pp, err));
        d.prepend_first = pp != TOK_PREPEND_NEVER;
    } else {
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.type \"%s\" is not supported (Sequence, "
                        "Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace are)", t->name,
                        path, type);
    }
    if (st == PLM_OK && ch_len) {
        d.a = malloc(ch_len + 1);
        if (!d.a) st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
        else memcpy(d.a, ch, ch_len + 1);
        d.a_len = ch_len;
    }
    tok_dec *p = st == PLM_OK ? grow(t->dec, t->n_dec, sizeof *p) : NULL;
    if (!p) {
        free(d.a);
        free(d.b);
        return st != PLM_OK ? st : plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    }
    t->dec = p;
    t->dec[t->n_dec++] = d;
    return PLM_OK;
}

plm_status tok_parse_decoder(tok_tokenizer *t, const cJSON *json, plm_error *err)
{
    t->has_decoder = json != NULL;
    return json ? parse_dec(t, json, "decoder", err) : PLM_OK;
}

/* ---- post-processor ----------------------------------------------------------------------- */

/* Wraps the current template in a new one: the processors of a Sequence each wrap the output
 * of the one before, so later prefixes go in front and later suffixes go behind. */
static plm_status wrap_template(tok_tokenizer *t, const int32_t *pre, size_t n_pre,
                                const int32_t *post, size_t n_post, plm_error *err)
{
    int32_t *np = malloc((t->n_tpl_pre + n_pre + 1) * sizeof *np);
    int32_t *nq = malloc((t->n_tpl_post + n_post + 1) * sizeof *nq);
    if (!np || !nq) {
        free(np);
        free(nq);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    }
    if (n_pre) memcpy(np, pre, n_pre * sizeof *np);
    if (t->n_tpl_pre) memcpy(np + n_pre, t->tpl_pre, t->n_tpl_pre * sizeof *np);
    if (t->n_tpl_post) memcpy(nq, t->tpl_post, t->n_tpl_post * sizeof *nq);
    if (n_post) memcpy(nq + t->n_tpl_post, post, n_post * sizeof *nq);
    free(t->tpl_pre);
    free(t->tpl_post);
    t->tpl_pre = np;
    t->tpl_post = nq;
    t->n_tpl_pre += n_pre;
    t->n_tpl_post += n_post;
    return PLM_OK;
}

static plm_status get_id(const tok_tokenizer *t, const cJSON *v, const char *path,
                         int32_t *out, plm_error *err)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > TOK_MAX_ID ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s is not a token id", t->name, path);
    if ((size_t)v->valuedouble >= t->n_ids)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s: id %d is past the vocabulary's %zu ids",
                        t->name, path, (int)v->valuedouble, t->n_ids);
    /* the vocabulary may skip ids; a template must not emit one of those */
    if (t->id_off[(size_t)v->valuedouble] == UINT32_MAX)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s: id %d is not a token of the vocabulary",
                        t->name, path, (int)v->valuedouble);
    *out = (int32_t)v->valuedouble;
    return PLM_OK;
}

static plm_status parse_template(tok_tokenizer *t, const cJSON *o, const char *path,
                                 plm_error *err)
{
    const cJSON *single = member(o, "single"), *specials = member(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.single is not an array", t->name, path);
    if (specials && !cJSON_IsObject(specials))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.special_tokens is not an object", t->name,
                        path);
    tok_ids pre = {0}, post = {0};
    plm_status st = PLM_OK;
    int seen_seq = 0, i = 0;
    char sub[PATH_MAX_LEN];
    for (const cJSON *e = single->child; e && st == PLM_OK; e = e->next, i++) {
        snprintf(sub, sizeof sub, "%s.single[%d]", path, i);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        if (cJSON_IsObject(sq)) {
            const cJSON *id = member(sq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") != 0 || seen_seq)
                st = plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s: a single-sequence template "
                              "may name sequence A once", t->name, sub);
            seen_seq = 1;
            continue;
        }
        const cJSON *name = cJSON_IsObject(sp) ? member(sp, "id") : NULL;
        if (!cJSON_IsString(name)) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: %s is neither a SpecialToken nor a Sequence",
                          t->name, sub);
            break;
        }
        const cJSON *def = specials ? member(specials, name->valuestring) : NULL;
        const cJSON *ids = def ? member(def, "ids") : NULL;
        if (!cJSON_IsArray(ids)) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: %s.special_tokens has no ids for \"%s\"",
                          t->name, path, name->valuestring);
            break;
        }
        int k = 0;
        for (const cJSON *x = ids->child; x && st == PLM_OK; x = x->next, k++) {
            char idp[PATH_MAX_LEN + 64];
            int32_t id = 0;
            snprintf(idp, sizeof idp, "%s.special_tokens[\"%.40s\"].ids[%d]", path,
                     name->valuestring, k);
            st = get_id(t, x, idp, &id, err);
            if (st == PLM_OK) st = tok_ids_push(seen_seq ? &post : &pre, id, err);
        }
    }
    if (st == PLM_OK && !seen_seq)
        st = plm_fail(err, PLM_E_FORMAT, "%s: %s.single never names sequence A", t->name, path);
    if (st == PLM_OK) st = wrap_template(t, pre.p, pre.n, post.p, post.n, err);
    tok_ids_free(&pre);
    tok_ids_free(&post);
    return st;
}

/* RobertaProcessing / BertProcessing: "cls": [token, id], "sep": [token, id]. */
static plm_status parse_cls_sep(tok_tokenizer *t, const cJSON *o, const char *path,
                                plm_error *err)
{
    int32_t ids[2];
    const char *keys[2] = {"cls", "sep"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = member(o, keys[i]);
        char sub[PATH_MAX_LEN];
        snprintf(sub, sizeof sub, "%s.%s[1]", path, keys[i]);
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is not a [token, id] pair", t->name,
                            path, keys[i]);
        PLM_TRY(get_id(t, cJSON_GetArrayItem(v, 1), sub, &ids[i], err));
    }
    return wrap_template(t, &ids[0], 1, &ids[1], 1, err);
}

static plm_status parse_post(tok_tokenizer *t, const cJSON *o, const char *path, plm_error *err)
{
    const char *type;
    PLM_TRY(get_type(t, o, path, &type, err));
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = member(o, "processors");
        if (!cJSON_IsArray(arr))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.processors is not an array", t->name,
                            path);
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            char sub[PATH_MAX_LEN];
            snprintf(sub, sizeof sub, "%s.processors[%d]", path, i);
            PLM_TRY(parse_post(t, e, sub, err));
        }
        return PLM_OK;
    }
    if (strcmp(type, "TemplateProcessing") == 0) return parse_template(t, o, path, err);
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0)
        return parse_cls_sep(t, o, path, err);
    if (strcmp(type, "ByteLevel") == 0) return PLM_OK; /* only trims offsets */
    return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s.type \"%s\" is not supported (Sequence, "
                    "TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel are)",
                    t->name, path, type);
}

plm_status tok_parse_post_processor(tok_tokenizer *t, const cJSON *json, plm_error *err)
{
    return json ? parse_post(t, json, "post_processor", err) : PLM_OK;
}
