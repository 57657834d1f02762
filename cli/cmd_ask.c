/* prunelm ask: one question about one image (or a text-only prompt). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prunelm.h"
#include "cli.h"

static const char *HELP =
    "usage: prunelm ask [options] \"question\"\n"
    "Answers a question about an image with a LLaVA checkpoint (text-only without --image).\n"
    "  --model DIR           checkpoint directory (llava-hf layout; default: the bundled model)\n"
    "  --image FILE          PNG, JPEG, BMP, GIF, TGA or PNM image (default with the bundled\n"
    "                        model: the bundled image)\n"
    "  --raw                 the argument is a whole prompt (\"USER: <image>\\n... ASSISTANT:\"),\n"
    "                        not a question to wrap in the chat template\n"
    "  --max-tokens N        generate at most N tokens (default: 256, or what the context\n"
    "                        leaves; a larger explicit N is refused)\n"
    "  --temperature T       0 = greedy (default); > 0 samples\n"
    "  --top-k K, --top-p P  sampling filters (default off)\n"
    "  --seed S              random seed for sampling (default 1)\n"
    "  --ctx N               context length (default: the model's max_position_embeddings)\n"
    "  --threads N           CPU threads (default: all cores)\n"
    "  --device cpu|auto     compute device (default auto)\n"
    "  --dtype stored|bf16|f16  float32 weight matrices rounded to 16 bits on load (half the\n"
    "                        memory; the GPU's 16-bit kernels); 16-bit ones stay as stored\n"
    "  --max-pixels N        refuse images with more pixels (default 64000000)\n"
    "  --prune SPEC          visual-token pruning: none, random:tokens=N, uniform-grid:tokens=N,\n"
    "                        fastv:tokens=N,layer=K, pyramiddrop:layers=A/B/C,ratio=R,\n"
    "                        visionzip:tokens=N,contextual=C, vflowopt:tokens=N,alpha=A,\n"
    "                        recycle=R[,layers=..,ratio=..], or @FILE (see the README)\n"
    "  --kv SPEC             KV-cache policy: none, streaming, h2o, snapkv, ... with\n"
    "                        budget=N or ratio=R; several joined by '+' (see the README)\n"
    "  --kv-quant Q          KV storage: none (float32, default) or int4[:group=G,residual=R]\n"
    "                        (KIVI 4-bit keys and values, after any --kv policy)\n"
    "  --json                print {answer, tokens, timings} as JSON instead of streaming text\n"
    "  --dump-logits F.npy   write float32 logits of every prompt position [positions, vocab]\n"
    "  --dump-features F.npy write the projected image features [image tokens, hidden]\n"
    "  --dump-pixels F.npy   write the preprocessed pixel tensor [3, H, W]\n"
    "  --save-mask F.png     draw the image with the patches that did not reach the last\n"
    "                        layer dimmed and the kept ones outlined\n"
    "  -v                    log progress to stderr\n";

typedef struct ask_opts {
    const char *model, *image, *question, *dump_logits, *dump_features, *dump_pixels, *prune, *kv;
    const char *save_mask, *kv_quant;
    int json, raw, verbose;
    char kv_buf[2048];   /* --kv joined with --kv-quant */
    plm_model_params mp;
    plm_session_params sp;
} ask_opts;

static int parse(int argc, char **argv, ask_opts *o)
{
    const char *C = "ask";
    o->mp = plm_model_default_params();
    o->sp = plm_session_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long n;
        double d;
#define VALUE() if (!(v = cli_value(C, argc, argv, &i))) return 0
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            exit(CLI_OK);
        } else if (!strcmp(a, "--model")) { VALUE(); o->model = v;
        } else if (!strcmp(a, "--image")) { VALUE(); o->image = v;
        } else if (!strcmp(a, "--prune")) { VALUE(); o->prune = v;
        } else if (!strcmp(a, "--kv")) { VALUE(); o->kv = v;
        } else if (!strcmp(a, "--kv-quant")) { VALUE(); o->kv_quant = v;
        } else if (!strcmp(a, "--dump-logits")) { VALUE(); o->dump_logits = v;
        } else if (!strcmp(a, "--dump-features")) { VALUE(); o->dump_features = v;
        } else if (!strcmp(a, "--dump-pixels")) { VALUE(); o->dump_pixels = v;
        } else if (!strcmp(a, "--save-mask")) { VALUE(); o->save_mask = v;
        } else if (!strcmp(a, "--json")) { o->json = 1;
        } else if (!strcmp(a, "--raw")) { o->raw = 1;
        } else if (!strcmp(a, "-v")) { o->verbose = 1;
        } else if (!strcmp(a, "--max-tokens")) {
            VALUE(); if (!cli_int(C, a, v, 0, 1 << 24, &n)) return 0; o->sp.max_tokens = (int)n;
        } else if (!strcmp(a, "--ctx")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1 << 24, &n)) return 0; o->sp.n_ctx = (int)n;
        } else if (!strcmp(a, "--threads")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1024, &n)) return 0; o->mp.n_threads = (int)n;
        } else if (!strcmp(a, "--top-k")) {
            VALUE(); if (!cli_int(C, a, v, 0, 1 << 24, &n)) return 0; o->sp.top_k = (int)n;
        } else if (!strcmp(a, "--seed")) {
            VALUE(); if (!cli_int(C, a, v, 0, 1LL << 62, &n)) return 0; o->sp.seed = (uint64_t)n;
        } else if (!strcmp(a, "--max-pixels")) {
            VALUE(); if (!cli_int(C, a, v, 1, 1LL << 40, &n)) return 0;
            o->mp.max_pixels = (uint64_t)n;
        } else if (!strcmp(a, "--temperature")) {
            VALUE(); if (!cli_float(C, a, v, 0, 100, &d)) return 0; o->sp.temperature = (float)d;
        } else if (!strcmp(a, "--top-p")) {
            VALUE(); if (!cli_float(C, a, v, 1e-6, 1, &d)) return 0; o->sp.top_p = (float)d;
        } else if (!strcmp(a, "--dtype")) {
            VALUE(); if (!cli_weights_dtype(C, v, &o->mp.weights)) return 0;
        } else if (!strcmp(a, "--device")) {
            VALUE();
            if (!strcmp(v, "cpu")) o->mp.device = PLM_DEVICE_CPU;
            else if (!strcmp(v, "cuda")) o->mp.device = PLM_DEVICE_CUDA;
            else if (!strcmp(v, "auto")) o->mp.device = PLM_DEVICE_AUTO;
            else {
                fprintf(stderr, "prunelm ask: --device expects cpu, cuda or auto, got '%s'\n", v);
                return 0;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "prunelm ask: unknown option '%s' (see prunelm ask --help)\n", a);
            return 0;
        } else if (o->question) {
            fprintf(stderr, "prunelm ask: one question at a time (quote it)\n");
            return 0;
        } else {
            o->question = a;
        }
#undef VALUE
    }
    if (!o->question) {
        fprintf(stderr, "prunelm ask: no question given (see prunelm ask --help)\n");
        return 0;
    }
    int bad;
    o->kv = cli_kv_quant(C, o->kv, o->kv_quant, o->kv_buf, sizeof o->kv_buf, &bad);
    return !bad;
}

static int stream_piece(const char *piece, int32_t token, void *user)
{
    fputs(piece, stdout);
    fflush(stdout);
    return 0;
}

static int dump(const char *path, const float *data, size_t rows, size_t cols, int ndim,
                const size_t *shape3)
{
    plm_error err;
    size_t shape[3] = {rows, cols, 0};
    if (!data) {
        fprintf(stderr, "prunelm ask: %s: nothing to write (no image?)\n", path);
        return 0;
    }
    if (plm_write_npy(path, data, shape3 ? shape3 : shape, ndim, &err) != PLM_OK) {
        fprintf(stderr, "prunelm ask: %s\n", err.msg);
        return 0;
    }
    return 1;
}

static void print_json(const char *answer, plm_session *s)
{
    const plm_timings *t = plm_session_timings(s);
    size_t n_prompt, n_total;
    const int32_t *ids = plm_session_tokens(s, &n_prompt, &n_total);
    cJSON *o = cJSON_CreateObject(), *tk = cJSON_CreateObject(), *tm = cJSON_CreateObject();
    cJSON *gen = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "answer", answer);
    cJSON_AddNumberToObject(tk, "prompt", t->n_prompt);
    cJSON_AddNumberToObject(tk, "image", t->n_image_tokens);
    cJSON_AddNumberToObject(tk, "image_last_layer", t->n_image_tokens_last);
    cJSON_AddNumberToObject(tk, "image_avg", t->image_tokens_avg);
    cJSON_AddNumberToObject(o, "kv_bytes", (double)t->kv_bytes);
    if (t->peak_bytes) cJSON_AddNumberToObject(o, "peak_bytes", (double)t->peak_bytes);
    cJSON_AddNumberToObject(tk, "generated", t->n_generated);
    for (size_t i = n_prompt; i < n_total; i++) cJSON_AddItemToArray(gen, cJSON_CreateNumber(ids[i]));
    cJSON_AddItemToObject(tk, "generated_ids", gen);
    cJSON_AddItemToObject(o, "tokens", tk);
    cJSON_AddNumberToObject(tm, "load_image_ms", t->load_image_ms);
    cJSON_AddNumberToObject(tm, "vision_ms", t->vision_ms);
    cJSON_AddNumberToObject(tm, "prefill_ms", t->prefill_ms);
    cJSON_AddNumberToObject(tm, "decode_ms", t->decode_ms);
    cJSON_AddNumberToObject(tm, "decode_tokens_per_s",
                            t->decode_ms > 0 ? t->n_generated * 1000.0 / t->decode_ms : 0);
    cJSON_AddItemToObject(o, "timings", tm);
    char *txt = cJSON_PrintUnformatted(o);
    if (txt) puts(txt);
    free(txt);
    cJSON_Delete(o);
}

int cmd_ask(int argc, char **argv)
{
    ask_opts o = {0};
    if (!parse(argc, argv, &o)) return CLI_USAGE;
    char dmodel[4096], dimage[4096];
    if (!o.model) {
        cli_default_model(dmodel, sizeof dmodel);
        o.model = dmodel;
        if (!o.image && !o.raw) {
            cli_default_image(dimage, sizeof dimage);
            o.image = dimage;
        }
    }
    if (o.verbose) o.mp.log = cli_log_stderr;
    plm_model *m = NULL;
    plm_session *s = NULL;
    plm_error err;
    char *answer = NULL;
    int rc = CLI_FAIL;
    if (plm_model_load(o.model, &o.mp, &m, &err) != PLM_OK ||
        plm_session_new(m, &o.sp, &s, &err) != PLM_OK) {
        fprintf(stderr, "prunelm ask: %s\n", err.msg);
        goto out;
    }
    plm_session_keep_prompt_logits(s, o.dump_logits != NULL);
    if ((o.prune && plm_session_set_prune(s, o.prune) != PLM_OK) ||
        (o.kv && plm_session_set_kv(s, o.kv) != PLM_OK)) {
        fprintf(stderr, "prunelm ask: %s\n", plm_last_error(s));
        rc = CLI_USAGE;
        goto out;
    }
    if (o.image && plm_session_set_image_file(s, o.image) != PLM_OK) {
        fprintf(stderr, "prunelm ask: %s\n", plm_last_error(s));
        goto out;
    }
    plm_token_fn cb = o.json ? NULL : stream_piece;
    plm_status st = o.raw ? plm_session_generate(s, o.question, cb, NULL, &answer)
                          : plm_session_ask(s, o.question, cb, NULL, &answer);
    if (!o.json) putchar('\n');
    if (st != PLM_OK) {
        fprintf(stderr, "prunelm ask: %s\n", plm_last_error(s));
        goto out;
    }
    if (o.json) print_json(answer, s);
    rc = CLI_OK;
    size_t r, c;
    const float *p;
    if (o.dump_logits) {
        p = plm_session_prompt_logits(s, &r, &c);
        if (!dump(o.dump_logits, p, r, c, 2, NULL)) rc = CLI_FAIL;
    }
    if (o.dump_features) {
        p = plm_session_image_features(s, &r, &c);
        if (!dump(o.dump_features, p, r, c, 2, NULL)) rc = CLI_FAIL;
    }
    if (o.dump_pixels) {
        int h, w;
        p = plm_session_pixels(s, &h, &w);
        size_t shape[3] = {3, (size_t)h, (size_t)w};
        if (!dump(o.dump_pixels, p, 0, 0, 3, shape)) rc = CLI_FAIL;
    }
    if (o.save_mask && plm_session_save_mask(s, o.save_mask) != PLM_OK) {
        fprintf(stderr, "prunelm ask: %s\n", plm_last_error(s));
        rc = CLI_FAIL;
    }
    if (o.verbose) {
        const plm_timings *t = plm_session_timings(s);
        fprintf(stderr, "prunelm: %d prompt tokens (%d image), %d generated; vision %.1f ms, "
                "prefill %.1f ms, decode %.1f ms\n", t->n_prompt, t->n_image_tokens,
                t->n_generated, t->vision_ms, t->prefill_ms, t->decode_ms);
    }
out:
    free(answer);
    plm_session_free(s);
    plm_model_free(m);
    return rc;
}
