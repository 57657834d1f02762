/* Reading JSON files (cJSON underneath) with errors that name the file and the field. */
#ifndef PLM_CORE_JSON_H
#define PLM_CORE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct cJSON cJSON;

/* Reads and parses a whole file (size-limited to max_bytes). *out is freed with cJSON_Delete. */
plm_status json_load_file(const char *path, size_t max_bytes, cJSON **out, plm_error *err);
/* Reads a whole file into a malloc'd, NUL-terminated buffer (size-limited). */
plm_status plm_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                         plm_error *err);

/* Parses len bytes of buf (which need not be NUL-terminated) as one JSON value; only whitespace
 * may follow it. `what` names the input in messages, which give the line, column and byte
 * offset of the problem. *out is freed with cJSON_Delete. */
plm_status json_parse_buffer(const char *buf, size_t len, const char *what, cJSON **out,
                             plm_error *err);
/* Converts a JSON value to an integer: a number that is exactly integral and within int64
 * range. `name` is the full field name for messages ("model.safetensors: tensor 'x' shape[1]"). */
plm_status json_value_int(const cJSON *v, const char *name, int64_t *out, plm_error *err);

/* Getters: `where` names the file/object for messages ("config.json: text_config").
 * The *_req variants fail with PLM_E_MISSING when absent and PLM_E_FORMAT on a wrong type;
 * the *_opt variants leave *out unchanged when absent (or null) and fail only on a wrong type.
 * Messages read "config.json: text_config.hidden_size is missing" for where "config.json:
 * text_config", and "config.json: hidden_size is 3.5, expected an integer" for where
 * "config.json" (a `where` without ": " is taken as a bare file name). */
plm_status json_int_req(const cJSON *obj, const char *key, const char *where, int64_t *out,
                        plm_error *err);
plm_status json_int_opt(const cJSON *obj, const char *key, const char *where, int64_t *out,
                        plm_error *err);
plm_status json_num_req(const cJSON *obj, const char *key, const char *where, double *out,
                        plm_error *err);
plm_status json_num_opt(const cJSON *obj, const char *key, const char *where, double *out,
                        plm_error *err);
plm_status json_bool_opt(const cJSON *obj, const char *key, const char *where, int *out,
                         plm_error *err);
/* *out points into the cJSON tree. */
plm_status json_str_req(const cJSON *obj, const char *key, const char *where, const char **out,
                        plm_error *err);
plm_status json_str_opt(const cJSON *obj, const char *key, const char *where, const char **out,
                        plm_error *err);
/* Object-valued member; *out NULL when absent (opt) */
plm_status json_obj_opt(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                        plm_error *err);
/* Array of numbers of length n exactly (e.g. image_mean). */
plm_status json_num_array(const cJSON *obj, const char *key, const char *where, double *out,
                          int n, plm_error *err);

#endif
