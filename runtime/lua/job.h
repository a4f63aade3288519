/* job.h - a job record to and from a Lua table, and the rule for the
 * values a job may hold, checked at the Lua boundary for every store. */
#ifndef CHR_LUA_JOB_H
#define CHR_LUA_JOB_H

#include <lua.h>

#include "core/job.h"

/* Lua conversion. chr_job_from_lua reads the table at idx into j (fields
 * typed when they have their type; a value of another type for a typed
 * field is an error naming the field, except that integer fields that do
 * not fit 32 bits go to extra). `partial` allows a record without job_id /
 * status (updates, CAS expectations). Returns 0 or CHR_EINVAL + err. */
int chr_job_from_lua(lua_State *L, int idx, chr_job_t *j, int partial, char *err,
                     size_t errlen);
/* Reads only the typed fields in `fields` (CHR_BIT mask) of the record at
 * idx, and, with `member`, that member of its free-form part into extra:
 * what a filter, an order or an ownership test reads of a record, without
 * converting the whole of it. Types and errors as chr_job_from_lua; the
 * value rule is not checked (the record was, when it was stored). */
int chr_job_from_lua_fields(lua_State *L, int idx, chr_job_t *j, uint32_t fields,
                            const char *member, char *err, size_t errlen);
/* The rule for every value a job holds, the same on every store: numbers
 * finite, strings and table keys valid UTF-8 without NUL bytes (and only
 * the types JSON has). chr_job_check_fields checks every field of the job
 * table at idx (chr_job_from_lua does first): 0, or CHR_EINVAL and "invalid
 * field 'kwargs.amount': <what is wrong>" in err. chr_job_check_value
 * checks one value, appending the path of the culprit below it (".key",
 * "[i]") to path, and writes only what is wrong to err. */
int chr_job_check_fields(lua_State *L, int idx, char *err, size_t errlen);
int chr_job_check_value(lua_State *L, int idx, chr_buf_t *path, char *err, size_t errlen);
/* stack: +1 table with every present field (times as ISO strings). */
void chr_job_push(lua_State *L, const chr_job_t *j);

/* Lazy members for the job table on top of the stack: the object text
 * extra (may be NULL) is decoded into it only on first use (reading or
 * writing a key it lacks, pairs, chronis.json.encode), without replacing
 * what the table holds by then; args, kwargs and metadata default to empty
 * tables. stack: unchanged */
void chr_lua_job_lazy(lua_State *L, const char *extra);
/* Decodes the pending members of the job table at idx now (a no-op for
 * any other table). stack: unchanged */
void chr_lua_job_materialize(lua_State *L, int idx);

#endif
