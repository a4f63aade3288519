/* tz.h - IANA time zones read from TZif files (v2+/v3, with the POSIX-TZ
 * footer for instants past the table). Zones are loaded once and cached for
 * the life of the process; never touches TZ or localtime(). */
#ifndef CHR_TZ_H
#define CHR_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct chr_tz chr_tz_t;

typedef struct chr_tz_info {
  int32_t offset;  /* seconds east of UTC */
  int dst;         /* 1 while daylight saving time is in effect */
  char abbr[16];   /* "EDT" */
} chr_tz_info_t;

/* Returns the cached zone for an IANA name ("UTC", "America/New_York"), or
 * NULL with "invalid timezone '<name>'" in err. Names that could escape the
 * zoneinfo folder ("..", leading "/", odd characters) are refused. The
 * returned pointer stays valid until chr_tz_cache_clear(). */
const chr_tz_t *chr_tz_get(const char *name, char *err, size_t errlen);
const chr_tz_t *chr_tz_utc(void);
const char *chr_tz_name(const chr_tz_t *z);
void chr_tz_cache_clear(void);

void chr_tz_info(const chr_tz_t *z, int64_t utc_us, chr_tz_info_t *out);
int32_t chr_tz_offset(const chr_tz_t *z, int64_t utc_us);

/* Resolves a wall-clock time (µs, counted as if it were UTC) to instants.
 * Returns 1 for a normal time (out[0]); 2 inside a fall-back overlap (out[0]
 * the first pass, out[1] the second); 0 inside a spring-forward gap, with
 * out[0] the wall time shifted forward by the length of the gap (02:30 in a
 * 02:00-03:00 gap -> the instant of 03:30 new time). */
int chr_tz_resolve(const chr_tz_t *z, int64_t local_us, int64_t out[2]);

/* resolve() reduced to the rule of docs/time.md: gap shifted forward, fold
 * first pass. */
int64_t chr_tz_to_utc(const chr_tz_t *z, int64_t local_us);

/* The instant of the next offset change strictly after utc_us, or
 * CHR_TIME_NONE if the zone has no further transitions. */
int64_t chr_tz_next_transition(const chr_tz_t *z, int64_t utc_us);

#endif
