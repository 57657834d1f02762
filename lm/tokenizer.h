/* Hugging Face tokenizer.json in C: BPE (SentencePiece-style with byte fallback, and ByteLevel),
 * added tokens, normalizer, pre-tokenizer, post-processor and decoder as the file configures them.
 * The public plm_tokenizer_* / plm_tokenize / plm_detokenize calls are thin wrappers over this. */
#ifndef PLM_LM_TOKENIZER_H
#define PLM_LM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct plm_tokenizer tok_tokenizer;

plm_status tok_load_file(const char *path, tok_tokenizer **out, plm_error *err);
/* Parses a tokenizer.json already in memory; `name` is used in messages. */
plm_status tok_load_buffer(const char *json, size_t len, const char *name, tok_tokenizer **out,
                           plm_error *err);
void tok_free(tok_tokenizer *t);

size_t tok_vocab_size(const tok_tokenizer *t);
/* -1 when the token string is not in the vocabulary (added tokens included). */
int32_t tok_token_id(const tok_tokenizer *t, const char *token);
/* The token's string as stored in the vocabulary, or NULL when id is out of range. */
const char *tok_token_str(const tok_tokenizer *t, int32_t id);
int tok_is_special(const tok_tokenizer *t, int32_t id);
int32_t tok_bos_id(const tok_tokenizer *t); /* -1 when none */
int32_t tok_eos_id(const tok_tokenizer *t); /* -1 when none */

/* Encodes UTF-8 text; invalid UTF-8 is refused with PLM_E_FORMAT naming the byte offset.
 * add_special applies the post_processor template. *ids is malloc'd. */
plm_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int add_special,
                      int32_t **ids, size_t *n_ids, plm_error *err);
/* Decodes following the file's decoder chain. *text malloc'd and NUL-terminated. */
plm_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                      char **text, plm_error *err);

/* Streaming detokenization for generation: feed one id at a time and receive only complete
 * UTF-8 text, never half a character. Handles the decoder's context rules (e.g. the leading
 * space Strip removes only at the very start). */
typedef struct tok_stream tok_stream;
plm_status tok_stream_new(const tok_tokenizer *t, int skip_special, tok_stream **out,
                          plm_error *err);
void tok_stream_free(tok_stream *s);
/* Appends the newly completed text to a NUL-terminated buffer owned by the stream (valid until
 * the next call); *piece may be "" when the token ended mid-character. */
plm_status tok_stream_push(tok_stream *s, int32_t id, const char **piece, plm_error *err);
/* Flushes what is left (an incomplete sequence becomes U+FFFD). */
plm_status tok_stream_finish(tok_stream *s, const char **piece, plm_error *err);

#endif
