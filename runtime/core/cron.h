/* cron.h - cron expressions: parsing of field tables and crontab strings,
 * and the next fire time in a zone, field by field (never minute by
 * minute), with the DST rules of docs/time.md. */
#ifndef CHR_CRON_H
#define CHR_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "tz.h"

/* Field order, most significant first. */
enum {
  CHR_CRON_YEAR,
  CHR_CRON_MONTH,
  CHR_CRON_DAY,
  CHR_CRON_WEEK,
  CHR_CRON_DAY_OF_WEEK,
  CHR_CRON_HOUR,
  CHR_CRON_MINUTE,
  CHR_CRON_SECOND,
  CHR_CRON_NFIELDS
};

extern const char *const chr_cron_field_names[CHR_CRON_NFIELDS];

typedef struct chr_cron chr_cron_t;

/* How a crontab string's fields are read (docs/time.md):
 * STANDARD  5 fields, 6 with seconds first, 7 with seconds first and the
 *           year last; weekdays 0-7, 0 and 7 = Sunday;
 * VIXIE     5 fields only;
 * QUARTZ    6 or 7 fields, seconds first, year last; weekdays 1-7 from
 *           Sunday; day and weekday both restricted combine with AND;
 * YEAR_LAST 5 fields, or 6 with the year last. */
typedef enum {
  CHR_CRON_STANDARD,
  CHR_CRON_VIXIE,
  CHR_CRON_QUARTZ,
  CHR_CRON_YEAR_LAST,
  CHR_CRON_NDIALECTS
} chr_cron_dialect_t;

extern const char *const chr_cron_dialect_names[CHR_CRON_NDIALECTS];

typedef struct {
  chr_cron_dialect_t dialect;
  /* The seed of 'H' (the job id); NULL refuses 'H' with a message. */
  const char *hash_key;
} chr_cron_opts_t;

/* fields[i] is the expression of field i, or NULL when unspecified.
 * Returns NULL with a message naming the field in err:
 * "invalid cron field 'hour': 25 is out of range 0-23". A spec no date can
 * match is refused too, naming its date fields: "invalid cron spec: day
 * '30' and month '2' never match a date" (both parsers). */
chr_cron_t *chr_cron_parse_fields(const char *const fields[CHR_CRON_NFIELDS],
                                  char *err, size_t errlen);
/* As chr_cron_parse_fields, with 'H' seeded by o->hash_key (o may be
 * NULL). */
chr_cron_t *chr_cron_parse_fields_opts(const char *const fields[CHR_CRON_NFIELDS],
                                       const chr_cron_opts_t *o, char *err, size_t errlen);
/* "*\/5 * * * *" in the standard dialect, @hourly ... @yearly. */
chr_cron_t *chr_cron_parse_crontab(const char *s, char *err, size_t errlen);
/* A crontab string in a dialect, with an optional TZ= or CRON_TZ= prefix,
 * the macros, @every <duration> and @reboot. o may be NULL. */
chr_cron_t *chr_cron_parse_crontab_opts(const char *s, const chr_cron_opts_t *o, char *err,
                                        size_t errlen);
/* Index of a dialect name ("vixie"), or -1. */
int chr_cron_dialect_of(const char *name);
void chr_cron_free(chr_cron_t *c);

/* The zone of a TZ= or CRON_TZ= prefix, or NULL. */
const chr_tz_t *chr_cron_zone(const chr_cron_t *c);
/* 1 for @reboot: no fire time of its own; a scheduler runs it when it
 * starts (engine.c). */
int chr_cron_reboot(const chr_cron_t *c);
/* @every's period in seconds, else 0. */
int64_t chr_cron_every(const chr_cron_t *c);
/* 1 when the spec uses H, so that it depends on the job id. */
int chr_cron_hashed(const chr_cron_t *c);
/* An English description: "at 09:00 on Monday through Friday". Returns
 * the length it needed, as snprintf does. */
size_t chr_cron_describe(const chr_cron_t *c, char *buf, size_t len);

/* 1 when the hour field starts with '*' ('*', '*\/n', or hour left to
 * default to '*'): such a spec fires in both passes of a fall-back fold. */
int chr_cron_hour_star(const chr_cron_t *c);

/* First fire time strictly after `after` (µs UTC) in zone z (the
 * expression's own zone instead, when it has one), or CHR_TIME_NONE when
 * nothing matches up to year 9999. @every adds its period to `after`. */
int64_t chr_cron_next(const chr_cron_t *c, int64_t after, const chr_tz_t *z);

#endif
