/* prunelm: inference for LLaVA-style multimodal models that drops what does not matter.
 *
 * The only header an application includes. Every handle is opaque. Every call that can fail
 * returns a plm_status; the message of the last failure is read with plm_last_error() on the
 * handle (or from the plm_error out-parameter where no handle exists yet). The library never
 * prints, exits or aborts. A plm_model is read-only once loaded and may be shared by sessions in
 * several threads; a plm_session belongs to one thread at a time. */
#ifndef PRUNELM_H
#define PRUNELM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum plm_status {
    PLM_OK = 0,
    PLM_E_IO,        /* a file could not be opened, read or written */
    PLM_E_FORMAT,    /* a file or buffer is malformed (header, JSON, image, UTF-8) */
    PLM_E_MISSING,   /* a required tensor, field or file is absent */
    PLM_E_SHAPE,     /* a tensor or config value has the wrong shape or size */
    PLM_E_UNSUPPORTED, /* well-formed but not something prunelm handles (dtype, model type) */
    PLM_E_LIMIT,     /* over a configured limit: pixels, context length, tokens */
    PLM_E_NOMEM,     /* an allocation failed */
    PLM_E_ARG,       /* a caller passed an invalid argument */
    PLM_E_DEVICE,    /* the compute device failed or is absent */
    PLM_E_CANCELLED  /* a callback asked to stop */
} plm_status;

/* A short stable name for a status, e.g. "format error". */
const char *plm_status_str(plm_status s);

/* Error out-parameter for calls that have no handle yet. */
typedef struct plm_error {
    char msg[1024];
} plm_error;

/* ---- logging ------------------------------------------------------------------------------ */
typedef enum plm_log_level { PLM_LOG_ERROR, PLM_LOG_WARN, PLM_LOG_INFO, PLM_LOG_DEBUG } plm_log_level;
typedef void (*plm_log_fn)(plm_log_level level, const char *msg, void *user);

/* ---- tokenizer (standalone use; a model owns its own) ----------------------------------- */
typedef struct plm_tokenizer plm_tokenizer;

/* Loads a Hugging Face tokenizer.json. On failure *out is NULL and err names the field. */
plm_status plm_tokenizer_load(const char *path, plm_tokenizer **out, plm_error *err);
void plm_tokenizer_free(plm_tokenizer *tok);
/* Encodes UTF-8 text. add_special: apply the post_processor template (BOS). Invalid UTF-8 is
 * refused with PLM_E_FORMAT. *ids is malloc'd; the caller frees it. */
plm_status plm_tokenize(const plm_tokenizer *tok, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n_ids, plm_error *err);
/* Decodes ids to UTF-8 (malloc'd, NUL-terminated). skip_special drops special added tokens. */
plm_status plm_detokenize(const plm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                          int skip_special, char **text, plm_error *err);
size_t plm_tokenizer_vocab_size(const plm_tokenizer *tok);

/* ---- model -------------------------------------------------------------------------------- */
typedef struct plm_model plm_model;
typedef struct plm_session plm_session;

typedef enum plm_device { PLM_DEVICE_AUTO, PLM_DEVICE_CPU, PLM_DEVICE_CUDA } plm_device;

/* What float32 weight matrices become on load (--dtype): 16-bit ones are always kept as
 * stored. Converting halves their memory and lets the CUDA backend use its 16-bit kernels. */
typedef enum plm_weights_dtype {
    PLM_WEIGHTS_STORED, /* as in the checkpoint */
    PLM_WEIGHTS_BF16,   /* float32 matrices rounded to bf16 (to nearest even) */
    PLM_WEIGHTS_F16     /* float32 matrices rounded to IEEE half */
} plm_weights_dtype;

typedef struct plm_model_params {
    plm_device device;
    int n_threads;          /* 0: all cores */
    uint64_t max_pixels;    /* refuse larger images; default 64 megapixels */
    plm_log_fn log;         /* NULL: silent */
    void *log_user;
    plm_weights_dtype weights; /* default PLM_WEIGHTS_STORED */
} plm_model_params;

plm_model_params plm_model_default_params(void);

/* Loads a checkpoint directory in the llava-hf layout (config.json, safetensors, tokenizer.json,
 * preprocessor_config.json). A directory with a Llama config alone loads as a text-only model. */
plm_status plm_model_load(const char *dir, const plm_model_params *params, plm_model **out,
                          plm_error *err);
void plm_model_free(plm_model *model);

/* A human-readable description: architecture, parameter counts and dtype per component.
 * Returns a malloc'd string. */
char *plm_model_describe(const plm_model *model);
const plm_tokenizer *plm_model_tokenizer(const plm_model *model);
int plm_model_has_vision(const plm_model *model);
/* The decoder's layer count (where pruning stages and KV policies can act). */
int plm_model_text_layers(const plm_model *model);

typedef struct plm_session_params {
    int n_ctx;              /* 0: the model's max_position_embeddings */
    int max_tokens;         /* tokens to generate at most; -1: up to 256 within the context */
    float temperature;      /* 0: greedy */
    int top_k;              /* 0: off */
    float top_p;            /* 1: off */
    uint64_t seed;
    int ignore_eos;         /* keep generating through EOS (benchmarks: a fixed token count) */
    int cache_vision;       /* reuse the vision tower's output while the image (by content) and
                               the pruning policy stay the same (batch evaluation asks several
                               questions per image); off by default so timings stay honest */
} plm_session_params;

plm_session_params plm_session_default_params(void);

plm_status plm_session_new(plm_model *model, const plm_session_params *params, plm_session **out,
                           plm_error *err);
void plm_session_free(plm_session *s);
const char *plm_last_error(const plm_session *s);

/* Attaches an image to the prompts that follow, from a file or from packed RGB8 rows. It stays
 * attached (a conversation about one image) until another replaces it or
 * plm_session_clear_image detaches it. */
plm_status plm_session_set_image_file(plm_session *s, const char *path);
plm_status plm_session_set_image_rgb(plm_session *s, const uint8_t *rgb, int width, int height);
/* Detaches the image: the prompts that follow are text only. */
void plm_session_clear_image(plm_session *s);

/* Called for every generated piece of text (complete UTF-8 only). Return non-zero to stop. */
typedef int (*plm_token_fn)(const char *piece, int32_t token, void *user);

typedef struct plm_timings {
    double load_image_ms, vision_ms, prefill_ms, decode_ms;
    double ttft_ms; /* wall time from the call to the first answer token: the vision tower,
                       tokenizing, the prefill and the host work between them */
    int n_prompt, n_generated;
    int n_image_tokens;      /* image tokens in the prompt (after any vision-stage pruning) */
    int n_image_tokens_last; /* image tokens that reach the last decoder layer */
    double image_tokens_avg; /* image tokens per decoder layer, averaged over the layers (the
                                budget pruning papers quote) */
    uint64_t kv_bytes;      /* bytes of keys and values held in the cache at the end */
    uint64_t peak_bytes;    /* most bytes the engine held in backend buffers during the call
                               (the KV cache, activations, scratch; weights too where they
                               were copied in, e.g. on a GPU); 0 where the backend does not
                               count them */
    int vision_graph;       /* how the vision tower ran for this prompt: 0 op by op (or not at
                               all), 1 replayed from its CUDA graph, 2 recorded, then replayed */
} plm_timings;

/* Visual-token pruning for the next prompts: a spec such as "vflowopt:tokens=64",
 * "fastv:tokens=288,layer=2" or "@file.spec"; NULL or "none" turns it off. Refused (with the
 * reason) when the spec is malformed or does not fit the model. */
plm_status plm_session_set_prune(plm_session *s, const char *spec);
/* A KV-cache policy for the next prompts: "h2o:budget=256", "snapkv:ratio=0.2",
 * "snapkv:ratio=0.2+think:keep=0.5" (policies joined by '+' run in turn) or "@file.spec"; NULL
 * or "none" turns it off. See README "KV-cache policies" for every policy and parameter. */
plm_status plm_session_set_kv(plm_session *s, const char *spec);
/* The patches (row-major indices over the vision tower's grid, ascending) whose tokens reached
 * the last decoder layer in the last prompt — kept by every pruning stage, or the slot a
 * recycled token was written into — and the grid size. Valid until the next call; NULL when
 * the last prompt had no image. */
const int32_t *plm_session_kept_patches(plm_session *s, size_t *n, int *grid);
/* Writes the last prompt's preprocessed image as a PNG with the patches that did not reach the
 * last layer dimmed and the kept ones outlined (atomically: temporary name, then rename). */
plm_status plm_session_save_mask(plm_session *s, const char *png_path);

/* Runs the chat template around question (with the image if one is set), prefills and generates.
 * If answer is non-NULL it receives the whole answer (malloc'd). */
plm_status plm_session_ask(plm_session *s, const char *question, plm_token_fn on_token, void *user,
                           char **answer);
/* A question about a long context (a document, an earlier conversation), with the image if one
 * is set: the prompt is "USER: <image>\n" context "\n" question " ASSISTANT:" (context may be
 * NULL). With late = 0 that is plm_session_ask of context "\n" question. With late = 1 the
 * question comes after the context was cached: the prefill reads the context alone, the KV
 * policy compresses its cache without seeing the question, and the question's tokens follow a
 * decode step each, as a later turn of a conversation would (the question-agnostic setting of
 * KV-compression benchmarks). Without a KV policy both give the same answer. The context must
 * end at a word boundary; prompt logits, when kept, cover the context's rows. */
plm_status plm_session_ask_context(plm_session *s, const char *context, const char *question,
                                   int late, plm_token_fn on_token, void *user, char **answer);
/* The same with a prompt already in template form ("USER: <image>\n... ASSISTANT:"). */
plm_status plm_session_generate(plm_session *s, const char *prompt, plm_token_fn on_token,
                                void *user, char **answer);
const plm_timings *plm_session_timings(const plm_session *s);
/* Token ids of the last prompt (after <image> expansion) and generated tokens. */
const int32_t *plm_session_tokens(const plm_session *s, size_t *n_prompt, size_t *n_total);
/* Keeps the float32 logits of every prompt position of the next prefill (for comparisons).
 * After generation, plm_session_prompt_logits returns [n_prompt x vocab] row-major. */
void plm_session_keep_prompt_logits(plm_session *s, int keep);
const float *plm_session_prompt_logits(const plm_session *s, size_t *n_rows, size_t *n_vocab);
/* The last prompt token's hidden state after the final norm (the lm_head's input) in the last
 * prefill — the representation VFlowOpt's search compares with and without pruning. */
const float *plm_session_last_hidden(const plm_session *s, size_t *dim);
/* The projected image features of the last image: [n_image_tokens x hidden]. */
const float *plm_session_image_features(const plm_session *s, size_t *n_rows, size_t *n_cols);
/* The preprocessed pixel tensor of the last image: [3 x H x W]. */
const float *plm_session_pixels(const plm_session *s, int *height, int *width);

/* Device memory in use and in all (bytes) on the session's GPU, as the driver reports it (its
 * context and every other user of the GPU included); PLM_E_UNSUPPORTED on the CPU. */
plm_status plm_session_device_memory(plm_session *s, uint64_t *used, uint64_t *total);

/* Writes a float32 .npy file atomically (temporary name, then rename). */
plm_status plm_write_npy(const char *path, const float *data, const size_t *shape, int ndim,
                         plm_error *err);

#ifdef __cplusplus
}
#endif
#endif
