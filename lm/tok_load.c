/* Loading tokenizer.json: the BPE model (vocab, merges), the added tokens, then the sections
 * tok_config.c reads; and the read-only accessors. */
#include "lm/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static const cJSON *member(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int as_id(const cJSON *v, int32_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > TOK_MAX_ID ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return 0;
    *out = (int32_t)v->valuedouble;
    return 1;
}

/* Strings are copied into one pool sized up front, so map keys pointing into it stay valid. */
plm_status tok_pool_add(tok_tokenizer *t, const char *s, size_t len, uint32_t *off,
                        plm_error *err)
{
    if (len + 1 > t->pool_cap - t->pool_len)
        return plm_fail(err, PLM_E_LIMIT, "%s: string pool overflow", t->name);
    memcpy(t->pool + t->pool_len, s, len);
    t->pool[t->pool_len + len] = '\0';
    *off = (uint32_t)t->pool_len;
    t->pool_len += len + 1;
    return PLM_OK;
}

static plm_status check_flag(const tok_tokenizer *t, const cJSON *o, const char *path,
                             const char *key, int *out, plm_error *err)
{
    const cJSON *v = member(o, key);
    *out = 0;
    if (!v) return PLM_OK;
    if (!cJSON_IsBool(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s.%s is not a boolean", t->name, path, key);
    *out = cJSON_IsTrue(v);
    return PLM_OK;
}

/* Features of the BPE model that change ids and that prunelm does not implement. */
static plm_status check_model_options(const tok_tokenizer *t, const cJSON *model,
                                      plm_error *err)
{
    const cJSON *type = member(model, "type");
    if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0))
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: model.type %s%s%s is not supported (only "
                        "BPE)", t->name, cJSON_IsString(type) ? "\"" : "",
                        cJSON_IsString(type) ? type->valuestring : "(not a string)",
                        cJSON_IsString(type) ? "\"" : "");
    const cJSON *dropout = member(model, "dropout");
    if (dropout && (!cJSON_IsNumber(dropout) || dropout->valuedouble != 0.0))
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: model.dropout must be null or 0 (BPE "
                        "dropout is random; inference needs stable ids)", t->name);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = member(model, keys[i]);
        if (v && (!cJSON_IsString(v) || v->valuestring[0] != '\0'))
            return plm_fail(err, PLM_E_UNSUPPORTED, "%s: model.%s is not supported (must be "
                            "null)", t->name, keys[i]);
    }
    return PLM_OK;
}

static plm_status load_vocab(tok_tokenizer *t, const cJSON *vocab, size_t *max_id,
                             plm_error *err)
{
    size_t n = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) n++;
    PLM_TRY(tok_strmap_init(&t->vocab, n, err));
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (!as_id(e, &id))
            return plm_fail(err, PLM_E_FORMAT, "%s: model.vocab[\"%.80s\"] is not an id from 0 "
                            "to %d", t->name, e->string, TOK_MAX_ID);
        uint32_t off = 0;
        size_t len = strlen(e->string);
        PLM_TRY(tok_pool_add(t, e->string, len, &off, err));
        if (tok_strmap_get(&t->vocab, e->string, len) >= 0)
            return plm_fail(err, PLM_E_FORMAT, "%s: model.vocab has \"%.80s\" twice", t->name,
                            e->string);
        PLM_TRY(tok_strmap_put(&t->vocab, t->pool + off, len, id, err));
        if ((size_t)id + 1 > *max_id) *max_id = (size_t)id + 1;
    }
    return PLM_OK;
}

/* Merges are "a b" strings (older files) or ["a", "b"] pairs; the rank is the position, not
 * counting "#version" header lines. */
static plm_status load_merges(tok_tokenizer *t, const cJSON *merges, plm_error *err)
{
    size_t n = 0;
    for (const cJSON *e = merges->child; e; e = e->next) n++;
    PLM_TRY(tok_mergemap_init(&t->merges, n, err));
    char *buf = NULL;
    size_t cap = 0, i = 0;
    uint32_t rank = 0;
    plm_status st = PLM_OK;
    /* tokenizers reads the list as all strings or all pairs and refuses a mix. */
    int strings = merges->child && cJSON_IsString(merges->child);
    for (const cJSON *e = merges->child; e && st == PLM_OK; e = e->next, i++) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(e) != strings && (cJSON_IsString(e) || cJSON_IsArray(e))) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: model.merges[%zu] is a %s but model.merges[0] "
                          "is a %s; the list must be all \"a b\" strings or all pairs", t->name,
                          i, strings ? "pair" : "string", strings ? "string" : "pair");
            break;
        }
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (strncmp(s, "#version", 8) == 0) continue;
            if (sp && !strchr(sp + 1, ' ')) {
                a = s;
                la = (size_t)(sp - s);
                b = sp + 1;
                lb = strlen(b);
            }
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            la = strlen(a);
            b = e->child->next->valuestring;
            lb = strlen(b);
        }
        if (!a) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: model.merges[%zu] is not a string or pair",
                          t->name, i);
            break;
        }
        int32_t ia = tok_strmap_get(&t->vocab, a, la), ib = tok_strmap_get(&t->vocab, b, lb);
        if (ia < 0 || ib < 0) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: model.merges[%zu]: \"%.*s\" is not in the "
                          "vocabulary", t->name, i, (int)(ia < 0 ? la : lb), ia < 0 ? a : b);
            break;
        }
        if (la + lb + 1 > cap) {
            cap = la + lb + 64;
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
                break;
            }
            buf = nb;
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t m = tok_strmap_get(&t->vocab, buf, la + lb);
        if (m < 0) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: model.merges[%zu]: the merged token \"%.*s\" "
                          "is not in the vocabulary", t->name, i, (int)(la + lb), buf);
            break;
        }
        tok_mergemap_put(&t->merges, ia, ib, rank++, m);
    }
    free(buf);
    return st;
}

static plm_status load_added(tok_tokenizer *t, const cJSON *arr, size_t *max_id,
                             plm_error *err)
{
    size_t n = 0;
    for (const cJSON *e = arr->child; e; e = e->next) n++;
    PLM_TRY(tok_strmap_init(&t->added_map, n, err));
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);
    size_t i = 0;
    int32_t max_added = -1;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        const cJSON *content = member(e, "content");
        int32_t id;
        if (!cJSON_IsObject(e) || !cJSON_IsString(content))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.content is missing or not a string",
                            t->name, path);
        if (!as_id(member(e, "id"), &id))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s.id is missing or not an id from 0 to %d",
                            t->name, path, TOK_MAX_ID);
        int f[5];
        const char *keys[5] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
        for (int k = 0; k < 5; k++) PLM_TRY(check_flag(t, e, path, keys[k], &f[k], err));
        if (!member(e, "normalized")) f[3] = !f[4]; /* the library's default */
        size_t len = strlen(content->valuestring);
        if (len == 0) continue; /* Hugging Face ignores empty added tokens */
        /* tokenizers does not take the file's id: add_tokens() keeps the id the content already
         * has, else gives the next one after the model's entries and the tokens added so far
         * (the file's id only earns a warning when it differs). Files it wrote agree. */
        int32_t known = tok_token_id(t, content->valuestring);
        size_t n_model = t->vocab.n;
        if (known >= 0)
            id = known;
        else if (max_added < 0 || ((size_t)max_added < n_model && n_model > 0))
            id = (int32_t)n_model;
        else
            id = max_added + 1;
        if (id > TOK_MAX_ID)
            return plm_fail(err, PLM_E_LIMIT, "%s: %s: too many tokens", t->name, path);
        if (id > max_added) max_added = id;
        tok_added *a = &t->added[t->n_added];
        PLM_TRY(tok_pool_add(t, content->valuestring, len, &a->off, err));
        a->len = (uint32_t)len;
        a->id = id;
        a->single_word = (unsigned char)f[0];
        a->lstrip = (unsigned char)f[1];
        a->rstrip = (unsigned char)f[2];
        a->normalized = (unsigned char)f[3];
        a->special = (unsigned char)f[4];
        PLM_TRY(tok_strmap_put(&t->added_map, t->pool + a->off, len, (int32_t)t->n_added, err));
        t->n_added++;
        if ((size_t)id + 1 > *max_id) *max_id = (size_t)id + 1;
    }
    return PLM_OK;
}

static plm_status build_id_table(tok_tokenizer *t, plm_error *err)
{
    t->id_off = malloc(t->n_ids * sizeof *t->id_off);
    t->id_len = malloc(t->n_ids * sizeof *t->id_len);
    t->id_special = calloc(t->n_ids, 1);
    if (!t->id_off || !t->id_len || !t->id_special)
        return plm_fail(err, PLM_E_NOMEM, "%s: cannot allocate %zu ids", t->name, t->n_ids);
    for (size_t i = 0; i < t->n_ids; i++) t->id_off[i] = UINT32_MAX;
    for (size_t i = 0; i < t->vocab.n; i++) {
        int32_t id = t->vocab.vals[i];
        if (t->id_off[id] != UINT32_MAX)
            return plm_fail(err, PLM_E_FORMAT, "%s: model.vocab gives id %d to both \"%.60s\" "
                            "and \"%.60s\"", t->name, (int)id, t->pool + t->id_off[id],
                            t->vocab.keys[i]);
        t->id_off[id] = (uint32_t)(t->vocab.keys[i] - t->pool);
        t->id_len[id] = t->vocab.lens[i];
    }
    /* Added tokens win for id -> string, as in AddedVocabulary::id_to_token. */
    for (size_t i = 0; i < t->n_added; i++) {
        t->id_off[t->added[i].id] = t->added[i].off;
        t->id_len[t->added[i].id] = t->added[i].len;
    }
    /* Decoding drops a token when its string is a special added token's content. */
    for (size_t id = 0; id < t->n_ids; id++) {
        if (t->id_off[id] == UINT32_MAX) continue;
        int32_t k = tok_strmap_get(&t->added_map, t->pool + t->id_off[id], t->id_len[id]);
        t->id_special[id] = k >= 0 && t->added[k].special;
    }
    return PLM_OK;
}

static void find_model_ids(tok_tokenizer *t)
{
    char name[8];
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = tok_strmap_get(&t->vocab, name, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_ids[c] = tok_strmap_get(&t->vocab, &ch, 1);
    }
    tok_byte_map_init(t->byte_char, t->char_byte);
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t l = tok_utf8_encode(t->byte_char[b], u);
        t->byte_unit_ids[b] = tok_strmap_get(&t->vocab, u, l);
    }
}

/* BOS/EOS: the template's tokens around the sequence, else the usual names. */
static void find_bos_eos(tok_tokenizer *t)
{
    static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"};
    static const char *eos_names[] = {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"};
    t->bos_id = t->n_tpl_pre ? t->tpl_pre[0] : -1;
    t->eos_id = t->n_tpl_post ? t->tpl_post[t->n_tpl_post - 1] : -1;
    for (size_t i = 0; i < 4 && t->bos_id < 0; i++) t->bos_id = tok_token_id(t, bos_names[i]);
    for (size_t i = 0; i < 4 && t->eos_id < 0; i++) t->eos_id = tok_token_id(t, eos_names[i]);
}

static size_t pool_size(const cJSON *vocab, const cJSON *added)
{
    size_t n = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) n += strlen(e->string) + 1;
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(c)) n += strlen(c->valuestring) + 1;
    }
    return n;
}

static plm_status load_json(tok_tokenizer *t, const cJSON *root, plm_error *err)
{
    if (!cJSON_IsObject(root))
        return plm_fail(err, PLM_E_FORMAT, "%s: the top level is not an object", t->name);
    const cJSON *model = member(root, "model");
    if (!cJSON_IsObject(model))
        return plm_fail(err, PLM_E_MISSING, "%s: model is missing or not an object", t->name);
    PLM_TRY(check_model_options(t, model, err));
    const cJSON *vocab = member(model, "vocab"), *merges = member(model, "merges");
    const cJSON *added = member(root, "added_tokens");
    if (!cJSON_IsObject(vocab))
        return plm_fail(err, PLM_E_FORMAT, "%s: model.vocab is missing or not an object",
                        t->name);
    if (merges && !cJSON_IsArray(merges))
        return plm_fail(err, PLM_E_FORMAT, "%s: model.merges is not an array", t->name);
    if (added && !cJSON_IsArray(added))
        return plm_fail(err, PLM_E_FORMAT, "%s: added_tokens is not an array", t->name);
    t->pool_cap = pool_size(vocab, added) + 1;
    t->pool = malloc(t->pool_cap);
    if (!t->pool) return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", t->name);

    size_t max_id = 0;
    PLM_TRY(load_vocab(t, vocab, &max_id, err));
    PLM_TRY(check_flag(t, model, "model", "fuse_unk", &t->fuse_unk, err));
    PLM_TRY(check_flag(t, model, "model", "byte_fallback", &t->byte_fallback, err));
    PLM_TRY(check_flag(t, model, "model", "ignore_merges", &t->ignore_merges, err));
    const cJSON *unk = member(model, "unk_token");
    t->unk_id = -1;
    if (unk) {
        if (!cJSON_IsString(unk))
            return plm_fail(err, PLM_E_FORMAT, "%s: model.unk_token is not a string", t->name);
        t->unk_id = tok_strmap_get(&t->vocab, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0)
            return plm_fail(err, PLM_E_FORMAT, "%s: model.unk_token \"%.80s\" is not in the "
                            "vocabulary", t->name, unk->valuestring);
    }
    if (merges) PLM_TRY(load_merges(t, merges, err));
    else PLM_TRY(tok_mergemap_init(&t->merges, 0, err));
    if (added) PLM_TRY(load_added(t, added, &max_id, err));
    else PLM_TRY(tok_strmap_init(&t->added_map, 0, err));
    t->n_ids = max_id;
    PLM_TRY(build_id_table(t, err));
    find_model_ids(t);

    PLM_TRY(tok_parse_normalizer(t, member(root, "normalizer"), err));
    PLM_TRY(tok_parse_pre_tokenizer(t, member(root, "pre_tokenizer"), err));
    PLM_TRY(tok_parse_decoder(t, member(root, "decoder"), err));
    PLM_TRY(tok_parse_post_processor(t, member(root, "post_processor"), err));
    /* Both tries need the normalizer (normalized tokens match in their normalized form). */
    PLM_TRY(tok_trie_build(&t->trie_raw, t, 0, err));
    PLM_TRY(tok_trie_build(&t->trie_norm, t, 1, err));
    find_bos_eos(t);
    return PLM_OK;
}

plm_status tok_load_buffer(const char *json, size_t len, const char *name, tok_tokenizer **out,
                           plm_error *err)
{
    *out = NULL;
    if (!name) name = "tokenizer.json";
    if (len > TOK_MAX_FILE_BYTES)
        return plm_fail(err, PLM_E_LIMIT, "%s: %zu bytes is over the %zu-byte limit", name, len,
                        TOK_MAX_FILE_BYTES);
    /* tokenizers reads the file into a Rust String, refusing invalid UTF-8 anywhere in it; the
     * encoder relies on that too: every string the file puts into the text (a normalizer's
     * prepend or replacement, an added token) is decoded without bounds checks. */
    size_t bad = tok_utf8_check(json, len);
    if (bad < len)
        return plm_fail(err, PLM_E_FORMAT, "%s: invalid UTF-8 at byte %zu", name, bad);
    tok_tokenizer *t = calloc(1, sizeof *t);
    size_t nl = strlen(name);
    if (!t || !(t->name = malloc(nl + 1))) {
        free(t);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", name);
    }
    memcpy(t->name, name, nl + 1);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    plm_status st;
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        st = plm_fail(err, PLM_E_FORMAT, "%s: invalid JSON near byte %zu", name, at);
    } else {
        st = load_json(t, root, err);
        cJSON_Delete(root);
    }
    if (st != PLM_OK) {
        tok_free(t);
        return st;
    }
    *out = t;
    return PLM_OK;
}

plm_status tok_load_file(const char *path, tok_tokenizer **out, plm_error *err)
{
    char *buf;
    size_t len;
    *out = NULL;
    PLM_TRY(plm_read_file(path, TOK_MAX_FILE_BYTES, &buf, &len, err));
    plm_status st = tok_load_buffer(buf, len, path, out, err);
    free(buf);
    return st;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    for (size_t i = 0; i < t->n_pre; i++) free(t->pre[i].literal);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->norm);
    free(t->pre);
    free(t->dec);
    free(t->tpl_pre);
    free(t->tpl_post);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    tok_strmap_free(&t->vocab);
    tok_strmap_free(&t->added_map);
    tok_mergemap_free(&t->merges);
    free(t->added);
    free(t->id_off);
    free(t->id_len);
    free(t->id_special);
    free(t->pool);
    free(t->name);
    free(t);
}

size_t tok_vocab_size(const tok_tokenizer *t) { return t->n_ids; }

int32_t tok_token_id(const tok_tokenizer *t, const char *token)
{
    size_t len = strlen(token);
    int32_t k = tok_strmap_get(&t->added_map, token, len);
    return k >= 0 ? t->added[k].id : tok_strmap_get(&t->vocab, token, len);
}

const char *tok_token_str(const tok_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_ids || t->id_off[id] == UINT32_MAX) return NULL;
    return t->pool + t->id_off[id];
}

int tok_is_special(const tok_tokenizer *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids && t->id_special[id];
}

int32_t tok_bos_id(const tok_tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tok_tokenizer *t) { return t->eos_id; }
