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

/* fields[i] is the expression of field i, or NULL when unspecified.
 * Returns NULL with a message naming the field in err:
 * "invalid cron field 'hour': 25 is out of range 0-23". A spec no date can
 * match is refused too, naming its date fields: "invalid cron spec: day
 * '30' and month '2' never match a date" (both parsers). */
chr_cron_t *chr_cron_parse_fields(const char *const fields[CHR_CRON_NFIELDS],
                                  char *err, size_t errlen);
/* "*\/5 * * * *", 6 fields with leading seconds, or @hourly ... @yearly. */
chr_cron_t *chr_cron_parse_crontab(const char *s, char *err, size_t errlen);
void chr_cron_free(chr_cron_t *c);

/* 1 when the hour field starts with '*' ('*', '*\/n', or hour left to
 * default to '*'): such a spec fires in both passes of a fall-back fold. */
int chr_cron_hour_star(const chr_cron_t *c);

/* First fire time strictly after `after` (µs UTC) in zone z, or
 * CHR_TIME_NONE when nothing matches up to year 9999. */
int64_t chr_cron_next(const chr_cron_t *c, int64_t after, const chr_tz_t *z);

#endif
