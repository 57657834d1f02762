/* Internals shared by the lm/tok_*.c files. Nothing here is visible outside the tokenizer.
 *
 * The pipeline mirrors Hugging Face `tokenizers` step by step, because exact ids are the goal:
 *   added tokens (raw) -> normalizer -> added tokens (normalized) -> pre-tokenizer -> BPE
 *   -> post-processor template;   ids -> decoder chain -> text.
 * A loaded tok_tokenizer is immutable; every encode/decode call brings its own scratch. */
#ifndef PLM_LM_TOK_INTERNAL_H
#define PLM_LM_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "lm/tokenizer.h"

/* Sizes from the file are checked against these before anything is allocated. */
#define TOK_MAX_FILE_BYTES ((size_t)512 << 20)
#define TOK_MAX_ID 0x3FFFFFFF
#define TOK_MAX_TEXT_BYTES ((size_t)1 << 28)

/* ---- Unicode (tok_unicode.c, tables in tok_unicode_tables.c) ----------------------------- */
typedef struct tok_uc_range { uint32_t lo, hi, val; } tok_uc_range;
typedef struct tok_uc_decomp { uint32_t cp, off, len; } tok_uc_decomp;
typedef struct tok_uc_comp { uint32_t a, b, c; } tok_uc_comp;
extern const tok_uc_range tok_uc_class_ranges[];
extern const size_t tok_uc_class_count;
extern const tok_uc_range tok_uc_ccc_ranges[];
extern const size_t tok_uc_ccc_count;
extern const tok_uc_decomp tok_uc_decomps[];
extern const size_t tok_uc_decomp_count;
extern const uint32_t tok_uc_decomp_cps[];
extern const tok_uc_comp tok_uc_comps[];
extern const size_t tok_uc_comp_count;

enum { TOK_UC_L = 1, TOK_UC_N = 2, TOK_UC_S = 4, TOK_UC_W = 8 };
unsigned tok_uc_flags(uint32_t cp);
unsigned tok_uc_ccc(uint32_t cp);

/* UTF-8. tok_utf8_valid_len: length of the valid sequence starting at s, 0 if the bytes there
 * are not a complete valid sequence. tok_utf8_decode assumes valid input. */
size_t tok_utf8_valid_len(const unsigned char *s, size_t n);
size_t tok_utf8_decode(const char *s, uint32_t *cp);
size_t tok_utf8_encode(uint32_t cp, char out[4]);
/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
size_t tok_utf8_check(const char *s, size_t n);
/* Length of the maximal prefix of an invalid sequence (Unicode "maximal subpart"), >= 1; or 0
 * when the bytes at s are a truncated but so far valid sequence that ends at n. */
size_t tok_utf8_bad_len(const unsigned char *s, size_t n);

/* ---- growable buffers (tok_util.c) ---------------------------------------------------------- */
typedef struct tok_buf { char *p; size_t n, cap; } tok_buf;
plm_status tok_buf_reserve(tok_buf *b, size_t extra, plm_error *err);
plm_status tok_buf_put(tok_buf *b, const void *data, size_t len, plm_error *err);
void tok_buf_free(tok_buf *b);
/* Appends s with every non-overlapping occurrence of pat (left to right) replaced by rep. */
plm_status tok_replace_all(const char *s, size_t n, const char *pat, size_t pl,
                           const char *rep, size_t rl, tok_buf *out, plm_error *err);

typedef struct tok_ids { int32_t *p; size_t n, cap; } tok_ids;
plm_status tok_ids_push(tok_ids *v, int32_t id, plm_error *err);
void tok_ids_free(tok_ids *v);

/* String -> id hash map over strings that live elsewhere (the tokenizer's pool). */
typedef struct tok_strmap {
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t mask;
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
    size_t n, cap;
} tok_strmap;
plm_status tok_strmap_init(tok_strmap *m, size_t expected, plm_error *err);
/* Inserts or overwrites (the later entry wins, as in a Rust HashMap built by collect()). */
plm_status tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val,
                          plm_error *err);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len); /* -1 when absent */
void tok_strmap_free(tok_strmap *m);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_mergemap {
    uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
    uint32_t *rank;
    int32_t *merged;
    size_t mask, n;
} tok_mergemap;
plm_status tok_mergemap_init(tok_mergemap *m, size_t expected, plm_error *err);
void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
int tok_mergemap_get(const tok_mergemap *m, int32_t a, int32_t b, uint32_t *rank,
                     int32_t *merged);
void tok_mergemap_free(tok_mergemap *m);

/* ---- configuration read from tokenizer.json ------------------------------------------------ */
typedef enum tok_norm_kind {
    TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_NFC, TOK_NORM_STRIP
} tok_norm_kind;
typedef struct tok_norm {
    tok_norm_kind kind;
    char *a, *b; /* prepend text / replace pattern and content */
    size_t a_len, b_len;
    int left, right; /* Strip */
} tok_norm;

/* The pre-tokenizer regexes prunelm recognises (matched by hand in tok_regex.c). */
typedef enum tok_regex_kind { TOK_RE_GPT2, TOK_RE_LLAMA3, TOK_RE_QWEN2 } tok_regex_kind;
typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED, TOK_SPLIT_MERGED_PREV, TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS
} tok_split_behavior;
typedef enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend;
typedef enum tok_pre_kind { TOK_PRE_METASPACE, TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL } tok_pre_kind;
typedef struct tok_pre {
    tok_pre_kind kind;
    /* Metaspace */
    char repl[5];
    size_t repl_len;
    tok_prepend prepend;
    int split;
    /* Split: a known regex, or a literal string when literal != NULL */
    tok_regex_kind regex;
    char *literal;
    size_t literal_len;
    tok_split_behavior behavior;
    int invert;
    /* ByteLevel */
    int add_prefix_space, use_regex;
} tok_pre;

typedef enum tok_dec_kind {
    TOK_DEC_REPLACE, TOK_DEC_BYTE_FALLBACK, TOK_DEC_FUSE, TOK_DEC_STRIP, TOK_DEC_BYTE_LEVEL,
    TOK_DEC_METASPACE
} tok_dec_kind;
typedef struct tok_dec {
    tok_dec_kind kind;
    char *a, *b; /* Replace pattern/content; Strip and Metaspace keep their char in a */
    size_t a_len, b_len;
    size_t start, stop; /* Strip */
    int prepend_first; /* Metaspace: drop the replacement char in the first token */
} tok_dec;

typedef struct tok_added {
    int32_t id;
    uint32_t off, len; /* content in the pool */
    unsigned char single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* Byte trie over added-token contents; matching is leftmost-longest like aho-corasick's. */
typedef struct tok_trie_node {
    int32_t child, sibling; /* first child, next sibling; -1 none */
    int32_t token;          /* index into tok_tokenizer.added, -1 none */
    unsigned char byte;
} tok_trie_node;
typedef struct tok_trie {
    tok_trie_node *nodes;
    size_t n, cap;
    int32_t root[256]; /* root's children by first byte */
    int empty;
} tok_trie;

struct plm_tokenizer {
    char *name;
    /* every string (vocabulary, added contents) lives in pool */
    char *pool;
    size_t pool_len, pool_cap;
    /* id -> string: added token content when the id is an added token, else the vocab entry */
    uint32_t *id_off, *id_len; /* id_off UINT32_MAX: no token has this id */
    unsigned char *id_special;
    size_t n_ids;

    /* BPE model */
    tok_strmap vocab;
    tok_mergemap merges;
    int32_t unk_id, byte_ids[256], ascii_ids[128];
    int fuse_unk, byte_fallback, ignore_merges;

    tok_strmap added_map; /* added content -> id */
    tok_added *added;
    size_t n_added;
    tok_trie trie_raw, trie_norm;

    tok_norm *norm;
    size_t n_norm;
    tok_pre *pre;
    size_t n_pre;
    int byte_level;            /* a ByteLevel pre-tokenizer runs: BPE units are bytes */
    int32_t byte_unit_ids[256]; /* byte-level: id of each byte's mapped character, or -1 */
    uint16_t byte_char[256];    /* GPT-2 bytes_to_unicode and its inverse (-1: no byte) */
    int16_t char_byte[324];

    tok_dec *dec;
    size_t n_dec;
    int has_decoder; /* without a decoder, tokens are joined with spaces */

    int32_t *tpl_pre, *tpl_post; /* post_processor ids around the sequence */
    size_t n_tpl_pre, n_tpl_post;
    int32_t bos_id, eos_id;
};

/* tok_load.c / tok_config.c */
struct cJSON;
plm_status tok_pool_add(tok_tokenizer *t, const char *s, size_t len, uint32_t *off,
                        plm_error *err);
plm_status tok_parse_normalizer(tok_tokenizer *t, const struct cJSON *json, plm_error *err);
plm_status tok_parse_pre_tokenizer(tok_tokenizer *t, const struct cJSON *json, plm_error *err);
plm_status tok_parse_decoder(tok_tokenizer *t, const struct cJSON *json, plm_error *err);
plm_status tok_parse_post_processor(tok_tokenizer *t, const struct cJSON *json, plm_error *err);

/* GPT-2's bytes_to_unicode: the character standing for each byte in ByteLevel vocabularies. */
void tok_byte_map_init(uint16_t byte_char[256], int16_t char_byte[324]);

/* ---- encoding pieces (tok_added.c, tok_pretok.c, tok_regex.c) ------------------------------ */
/* A piece of text in a work arena, with the offset in the original text it starts at (Metaspace's
 * prepend_scheme "first" needs it), and the added-token id when it is one (-1 otherwise). */
typedef struct tok_piece { size_t off, len, orig; int32_t id; } tok_piece;
typedef struct tok_pieces { tok_piece *p; size_t n, cap; } tok_pieces;
plm_status tok_pieces_push(tok_pieces *v, tok_piece pc, plm_error *err);

typedef struct tok_work {
    tok_buf arena;
    tok_pieces cur, next, spans;
    tok_buf tmp, tmp2;
    /* BPE scratch */
    struct tok_sym { int32_t id, prev, next, alive; } *sym;
    size_t sym_cap;
    struct tok_merge { uint32_t rank; int32_t pos, merged; } *heap;
    size_t heap_cap;
    uint32_t *cps; /* NFC scratch */
    size_t cps_cap;
} tok_work;
void tok_work_free(tok_work *w);

plm_status tok_trie_build(tok_trie *tr, const tok_tokenizer *t, int normalized, plm_error *err);
void tok_trie_free(tok_trie *tr);
/* Splits every text piece of w->cur around matches of the trie (into w->next, then swaps). */
plm_status tok_split_added(const tok_tokenizer *t, const tok_trie *tr, tok_work *w,
                           plm_error *err);
/* Runs the normalizer on s into out (appended). */
plm_status tok_normalize(const tok_tokenizer *t, const char *s, size_t len, tok_buf *out,
                         tok_work *w, plm_error *err);
plm_status tok_normalize_pieces(const tok_tokenizer *t, tok_work *w, plm_error *err);
plm_status tok_pre_tokenize(const tok_tokenizer *t, tok_work *w, plm_error *err);
/* End of the match of the regex starting exactly at pos, or 0 when none starts there. */
size_t tok_regex_match_at(tok_regex_kind kind, const char *s, size_t n, size_t pos);
plm_status tok_nfc(const char *s, size_t len, tok_buf *out, tok_work *w, plm_error *err);

/* tok_bpe.c: appends the ids of one pre-tokenized word. */
plm_status tok_bpe_word(const tok_tokenizer *t, const char *s, size_t len, tok_work *w,
                        tok_ids *out, plm_error *err);

/* tok_decode.c: raw mode leaves bytes as they are (for streaming, which completes characters
 * itself); otherwise broken UTF-8 becomes U+FFFD as Hugging Face does. */
typedef struct tok_dec_work { tok_buf buf[2], bytes; tok_pieces toks[2]; } tok_dec_work;
void tok_dec_work_free(tok_dec_work *dw);
/* Appends the text of ids to out; dw is reusable scratch (NULL: a temporary one). */
plm_status tok_decode_into(const tok_tokenizer *t, const int32_t *ids, size_t n,
                           int skip_special, int raw, tok_buf *out, tok_dec_work *dw,
                           plm_error *err);
/* Appends s[0..n) to out with each maximal invalid subpart replaced by U+FFFD; when
 * keep_tail, a truncated sequence at the end is not replaced but its length returned. */
plm_status tok_utf8_lossy(const char *s, size_t n, int keep_tail, tok_buf *out,
                          size_t *tail, plm_error *err);

#endif
