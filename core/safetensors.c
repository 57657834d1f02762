#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"

/* A header longer than this is refused: real checkpoints of ~1000 tensors need well under 1 MB,
 * and cJSON needs several times the text in memory. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_INDEX ((size_t)64 << 20)

/* ---- name -> index hash map (open addressing; keys are owned elsewhere) ------------------ */

typedef struct st_slot {
    const char *key;
    size_t val;
} st_slot;

typedef struct st_map {
    st_slot *slots;
    size_t mask;
} st_map;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int map_init(st_map *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    return m->slots != NULL;
}

/* The slot holding key, or the empty slot where it would go. */
static st_slot *map_slot(const st_map *m, const char *key)
{
    size_t i = (size_t)hash_str(key) & m->mask;
    while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0) i = (i + 1) & m->mask;
    return &m->slots[i];
}

/* ---- dtypes ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
    plm_dtype dtype;
} st_dtypes[] = {
    {"F32", 4, PLM_F32},         {"F16", 2, PLM_F16},          {"BF16", 2, PLM_BF16},
    {"F64", 8, PLM_DTYPE_OTHER}, {"I64", 8, PLM_DTYPE_OTHER},  {"U64", 8, PLM_DTYPE_OTHER},
    {"I32", 4, PLM_DTYPE_OTHER}, {"U32", 4, PLM_DTYPE_OTHER},  {"I16", 2, PLM_DTYPE_OTHER},
    {"U16", 2, PLM_DTYPE_OTHER}, {"I8", 1, PLM_DTYPE_OTHER},   {"U8", 1, PLM_DTYPE_OTHER},
    {"BOOL", 1, PLM_DTYPE_OTHER}, {"F8_E4M3", 1, PLM_DTYPE_OTHER},
    {"F8_E5M2", 1, PLM_DTYPE_OTHER}, {"F8_E8M0", 1, PLM_DTYPE_OTHER},
};

/* ---- one file ---------------------------------------------------------------------------- */

struct st_file {
    char *path;
    void *map;
    size_t map_len;
    st_tensor *tensors;
    size_t n;
    char *names; /* every tensor name, NUL-separated */
    st_map index;
};

typedef struct st_span {
    uint64_t begin, end;
    size_t idx;
} st_span;

static int span_cmp(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static void fmt_shape(char *buf, size_t size, const st_tensor *t)
{
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && k < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

static plm_status check_metadata(const st_file *f, const cJSON *meta, plm_error *err)
{
    if (!cJSON_IsObject(meta))
        return plm_fail(err, PLM_E_FORMAT, "%s: __metadata__ is not an object", f->path);
    for (const cJSON *e = meta->child; e; e = e->next)
        if (!cJSON_IsString(e))
            return plm_fail(err, PLM_E_FORMAT, "%s: __metadata__ value '%s' is not a string",
                            f->path, e->string);
    return PLM_OK;
}

/* Reads one header entry into t and its data span [*begin, *end). */
static plm_status parse_entry(const st_file *f, const cJSON *e, st_tensor *t, uint64_t *begin,
                              uint64_t *end, size_t data_len, plm_error *err)
{
    const char *p = f->path, *nm = t->name;
    char where[1400];
    if (!cJSON_IsObject(e))
        return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' is not an object", p, nm);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!dt) return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' has no dtype", p, nm);
    if (!cJSON_IsString(dt))
        return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' dtype is not a string", p, nm);
    size_t elsize = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) {
            elsize = st_dtypes[i].size;
            t->dtype = st_dtypes[i].dtype;
        }
    }
    if (!elsize)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: tensor '%s' has unknown dtype '%s'", p, nm,
                        dt->valuestring);

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!sh) return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' has no shape", p, nm);
    if (!cJSON_IsArray(sh))
        return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' shape is not an array", p, nm);
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ST_MAX_DIMS)
        return plm_fail(err, PLM_E_UNSUPPORTED,
                        "%s: tensor '%s' has %d dimensions, more than the %d supported", p, nm,
                        ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    size_t numel = 1;
    int overflow = 0, d = 0;
    for (const cJSON *v = sh->child; v; v = v->next, d++) {
        snprintf(where, sizeof where, "%s: tensor '%s' shape[%d]", p, nm, d);
        PLM_TRY(json_value_int(v, where, &t->shape[d], err));
        if (t->shape[d] < 0)
            return plm_fail(err, PLM_E_FORMAT, "%s is %" PRId64 ", expected a non-negative size",
                            where, t->shape[d]);
        if ((uint64_t)t->shape[d] > SIZE_MAX || !plm_mul_ok(numel, (size_t)t->shape[d], &numel))
            overflow = 1;
    }
    char shape[200];
    fmt_shape(shape, sizeof shape, t);
    /* A zero dimension makes the count 0 even when other dimensions overflow together. */
    for (d = 0; d < ndim; d++) {
        if (t->shape[d] == 0) {
            overflow = 0;
            numel = 0;
        }
    }
    if (overflow || !plm_mul_ok(numel, elsize, &t->nbytes))
        return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' shape %s is too large (size overflows)",
                        p, nm, shape);

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!off) return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' has no data_offsets", p, nm);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' data_offsets is not 2 integers", p,
                        nm);
    int64_t o[2];
    for (int i = 0; i < 2; i++) {
        snprintf(where, sizeof where, "%s: tensor '%s' data_offsets[%d]", p, nm, i);
        PLM_TRY(json_value_int(cJSON_GetArrayItem(off, i), where, &o[i], err));
        if (o[i] < 0)
            return plm_fail(err, PLM_E_FORMAT, "%s is %" PRId64 ", expected a non-negative offset",
                            where, o[i]);
    }
    *begin = (uint64_t)o[0];
    *end = (uint64_t)o[1];
    if (*begin > *end)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
                        p, nm, *begin, *end);
    if (*end > data_len)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: tensor '%s' ends at byte %" PRIu64
                        ", past the data section's %zu bytes",
                        p, nm, *end, data_len);
    if (*end - *begin != t->nbytes)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: tensor '%s' spans %" PRIu64 " bytes but shape %s of %s needs %zu",
                        p, nm, *end - *begin, shape, dt->valuestring, t->nbytes);
    return PLM_OK;
}

/* Validates the parsed header and fills f->tensors, f->names and f->index. */
static plm_status load_header(st_file *f, const cJSON *root, size_t data_off, plm_error *err)
{
    const char *p = f->path;
    if (!cJSON_IsObject(root))
        return plm_fail(err, PLM_E_FORMAT, "%s: header is not a JSON object", p);
    size_t n = 0, names_len = 0;
    int n_meta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (n_meta++)
                return plm_fail(err, PLM_E_FORMAT, "%s: __metadata__ appears twice", p);
            PLM_TRY(check_metadata(f, e, err));
            continue;
        }
        n++;
        names_len += strlen(e->string) + 1;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->names = malloc(names_len ? names_len : 1);
    st_span *spans = calloc(n ? n : 1, sizeof *spans);
    if (!f->tensors || !f->names || !spans || !map_init(&f->index, n)) {
        free(spans);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory for %zu tensors", p, n);
    }
    const unsigned char *data = (const unsigned char *)f->map + data_off;
    size_t data_len = f->map_len - data_off;
    char *name = f->names;
    plm_status st = PLM_OK;
    for (const cJSON *e = root->child; e && st == PLM_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        size_t len = strlen(e->string) + 1;
        memcpy(name, e->string, len);
        st_tensor *t = &f->tensors[f->n];
        t->name = name;
        t->file = f->path;
        name += len;
        st_slot *slot = map_slot(&f->index, t->name);
        if (slot->key) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: tensor '%s' appears twice in the header", p,
                          t->name);
            break;
        }
        st_span *sp = &spans[f->n];
        st = parse_entry(f, e, t, &sp->begin, &sp->end, data_len, err);
        if (st != PLM_OK) break;
        t->data = data + sp->begin;
        sp->idx = f->n;
        slot->key = t->name;
        slot->val = f->n++;
    }
    if (st == PLM_OK) {
        /* Zero-byte tensors occupy nothing and may sit anywhere. */
        qsort(spans, f->n, sizeof *spans, span_cmp);
        const st_span *prev = NULL;
        for (size_t i = 0; i < f->n && st == PLM_OK; i++) {
            const st_span *s = &spans[i];
            if (s->begin == s->end) continue;
            if (prev && s->begin < prev->end)
                st = plm_fail(err, PLM_E_FORMAT,
                              "%s: tensors '%s' (bytes %" PRIu64 "..%" PRIu64 ") and '%s' (bytes %"
                              PRIu64 "..%" PRIu64 ") overlap",
                              p, f->tensors[prev->idx].name, prev->begin, prev->end,
                              f->tensors[s->idx].name, s->begin, s->end);
            prev = s;
        }
    }
    free(spans);
    return st;
}

static plm_status open_checked(const char *path, st_file *f, plm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return plm_fail(err, errno == ENOENT ? PLM_E_MISSING : PLM_E_IO, "%s: cannot open: %s",
                        path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        plm_fail(err, PLM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return PLM_E_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return plm_fail(err, PLM_E_IO, "%s: is not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return plm_fail(err, PLM_E_FORMAT, "%s: file is empty", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: file is %lld bytes, too short for the 8-byte header length", path,
                        (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return plm_fail(err, PLM_E_LIMIT, "%s: file is too large to map", path);
    }
    f->map_len = (size_t)sb.st_size;
    void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return plm_fail(err, PLM_E_IO, "%s: cannot map %zu bytes: %s", path, f->map_len,
                        strerror(e));
    f->map = m;

    const unsigned char *b = m;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    size_t avail = f->map_len - 8;
    if (hlen > avail)
        return plm_fail(err, PLM_E_FORMAT,
                        "%s: header length %" PRIu64 " is past the end of the file (%zu bytes)",
                        path, hlen, f->map_len);
    if (hlen > ST_MAX_HEADER)
        return plm_fail(err, PLM_E_LIMIT,
                        "%s: header length %" PRIu64 " is over the %" PRIu64 "-byte limit", path,
                        hlen, ST_MAX_HEADER);
    char what[1100];
    snprintf(what, sizeof what, "%s: header", path);
    cJSON *root;
    PLM_TRY(json_parse_buffer((const char *)b + 8, (size_t)hlen, what, &root, err));
    plm_status st = load_header(f, root, 8 + (size_t)hlen, err);
    cJSON_Delete(root);
    return st;
}

plm_status st_open(const char *path, st_file **out, plm_error *err)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory", path);
    }
    plm_status st = open_checked(path, f, err);
    if (st != PLM_OK) {
        st_close(f);
        return st;
    }
    *out = f;
    return PLM_OK;
}

void st_close(st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    free(f->index.slots);
    free(f->tensors);
    free(f->names);
    free(f->path);
    free(f);
}

size_t st_count(const st_file *f)
{
    return f->n;
}

const st_tensor *st_at(const st_file *f, size_t i)
{
    return i < f->n ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    const st_slot *s = map_slot(&f->index, name);
    return s->key ? &f->tensors[s->val] : NULL;
}

/* ---- sets -------------------------------------------------------------------------------- */

struct st_set {
    st_file **files;
    size_t n_files;
    const st_tensor **all;
    size_t n;
    st_map index;
};

void st_set_close(st_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) st_close(s->files[i]);
    free(s->files);
    free(s->all);
    free(s->index.slots);
    free(s);
}

const st_tensor *st_set_find(const st_set *s, const char *name)
{
    const st_slot *sl = map_slot(&s->index, name);
    return sl->key ? s->all[sl->val] : NULL;
}

size_t st_set_count(const st_set *s)
{
    return s->n;
}

const st_tensor *st_set_at(const st_set *s, size_t i)
{
    return i < s->n ? s->all[i] : NULL;
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) snprintf(p, a + b + 2, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 || errno != ENOENT;
}

/* Indexes every tensor of every file in s; a name in two files is refused. */
static plm_status index_set(st_set *s, plm_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++) n += st_count(s->files[i]);
    s->all = calloc(n ? n : 1, sizeof *s->all);
    if (!s->all || !map_init(&s->index, n))
        return plm_fail(err, PLM_E_NOMEM, "out of memory indexing %zu tensors", n);
    for (size_t i = 0; i < s->n_files; i++) {
        for (size_t j = 0; j < st_count(s->files[i]); j++) {
            const st_tensor *t = st_at(s->files[i], j);
            st_slot *sl = map_slot(&s->index, t->name);
            if (sl->key)
                return plm_fail(err, PLM_E_FORMAT, "tensor '%s' appears in both %s and %s",
                                t->name, s->all[sl->val]->file, t->file);
            sl->key = t->name;
            sl->val = s->n;
            s->all[s->n++] = t;
        }
    }
    return PLM_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static plm_status open_sharded(st_set *s, const char *dir, const char *ipath, plm_error *err)
{
    cJSON *root;
    PLM_TRY(json_load_file(ipath, ST_MAX_INDEX, &root, err));
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map")
                                           : NULL;
    plm_status st = PLM_OK;
    const char **shards = NULL;
    st_map smap = {0};
    size_t n_entries = 0, n_shards = 0;
    if (!cJSON_IsObject(root)) {
        st = plm_fail(err, PLM_E_FORMAT, "%s: not a JSON object", ipath);
        goto done;
    }
    if (!wm) {
        st = plm_fail(err, PLM_E_MISSING, "%s: weight_map is missing", ipath);
        goto done;
    }
    if (!cJSON_IsObject(wm)) {
        st = plm_fail(err, PLM_E_FORMAT, "%s: weight_map is not an object", ipath);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) n_entries++;
    if (n_entries == 0) {
        st = plm_fail(err, PLM_E_FORMAT, "%s: weight_map is empty", ipath);
        goto done;
    }
    shards = calloc(n_entries, sizeof *shards);
    if (!shards || !map_init(&smap, n_entries)) {
        st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", ipath);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            st = plm_fail(err, PLM_E_FORMAT, "%s: weight_map entry for tensor '%s' is not a string",
                          ipath, e->string);
            goto done;
        }
        const char *sh = e->valuestring;
        if (!*sh || strchr(sh, '/') || strstr(sh, "..")) {
            st = plm_fail(err, PLM_E_FORMAT,
                          "%s: weight_map puts tensor '%s' in shard '%s', which is not a plain "
                          "file name in the same directory",
                          ipath, e->string, sh);
            goto done;
        }
        st_slot *sl = map_slot(&smap, sh);
        if (!sl->key) {
            sl->key = sh;
            shards[n_shards++] = sh;
        }
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    for (size_t i = 0; i < n_shards; i++) map_slot(&smap, shards[i])->val = i;

    s->files = calloc(n_shards, sizeof *s->files);
    if (!s->files) {
        st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", ipath);
        goto done;
    }
    for (size_t i = 0; i < n_shards; i++) {
        char *path = join_path(dir, shards[i]);
        if (!path) {
            st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", ipath);
            goto done;
        }
        if (!exists(path))
            st = plm_fail(err, PLM_E_MISSING, "%s: shard '%s' named in weight_map does not exist",
                          ipath, path);
        else
            st = st_open(path, &s->files[s->n_files], err);
        free(path);
        if (st != PLM_OK) goto done;
        s->n_files++;
    }
    st = index_set(s, err);
    if (st != PLM_OK) goto done;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const st_file *want = s->files[map_slot(&smap, e->valuestring)->val];
        const st_tensor *t = st_set_find(s, e->string);
        if (!t || t->file != want->path) {
            st = plm_fail(err, PLM_E_MISSING,
                          "%s: weight_map puts tensor '%s' in %s, which does not contain it",
                          ipath, e->string, want->path);
            goto done;
        }
    }
done:
    free(smap.slots);
    free(shards);
    cJSON_Delete(root);
    return st;
}

plm_status st_set_open_dir(const char *dir, st_set **out, plm_error *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return plm_fail(err, errno == ENOENT ? PLM_E_MISSING : PLM_E_IO, "%s: %s", dir,
                        strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return plm_fail(err, PLM_E_ARG, "%s: is not a directory", dir);
    st_set *s = calloc(1, sizeof *s);
    char *ipath = join_path(dir, "model.safetensors.index.json");
    char *spath = join_path(dir, "model.safetensors");
    plm_status st;
    if (!s || !ipath || !spath) {
        st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", dir);
    } else if (exists(ipath)) {
        st = open_sharded(s, dir, ipath, err);
    } else if (exists(spath)) {
        s->files = calloc(1, sizeof *s->files);
        if (!s->files)
            st = plm_fail(err, PLM_E_NOMEM, "%s: out of memory", dir);
        else if ((st = st_open(spath, &s->files[0], err)) == PLM_OK) {
            s->n_files = 1;
            st = index_set(s, err);
        }
    } else {
        st = plm_fail(err, PLM_E_MISSING,
                      "%s: no weights found (looked for model.safetensors.index.json and "
                      "model.safetensors)",
                      dir);
    }
    free(ipath);
    free(spath);
    if (st != PLM_OK) {
        st_set_close(s);
        return st;
    }
    *out = s;
    return PLM_OK;
}
