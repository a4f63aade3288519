/* time_iso.c - fuzzes the ISO-8601 parser (chr_time_parse,
 * chr_time_parse_wall) and the formatting it must read back.
 *
 * Input: one byte choosing the zone naive strings are read in (bits 0-1),
 * then the text (not NUL-terminated: the parser takes a length).
 * Invariants for a string that parses: the instant is in the range chronis
 * reads back; its UTC form and its form at the zone's offset parse to the
 * same instant; the wall time survives civil conversion; a naive string in
 * a zone resolves as chr_tz_resolve says (the wall time of the instant is
 * the string's, unless the string fell in a gap). */
#include <stdint.h>

#include "core/common.h"
#include "core/time.h"
#include "core/tz.h"
#include "fuzz.h"

static const char *const zones[4] = {"UTC", "America/New_York", "Australia/Lord_Howe",
                                     "Pacific/Apia"};

static void reparse(const char *text, int64_t want) {
  int64_t back = 0;
  char err[256];
  int rc = chr_time_parse(text, strlen(text), NULL, &back, err, sizeof err);
  FUZZ_CHECK(rc == 0, "'%s' does not read back: %s", text, err);
  FUZZ_CHECK(back == want, "'%s' reads back as %lld, not %lld", text, (long long)back,
             (long long)want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t o = fuzz_byte(&data, &size);
  char err[256], buf[CHR_TIME_BUFSZ];
  const chr_tz_t *z = chr_tz_get(zones[o & 3], err, sizeof err);
  FUZZ_CHECK(z != NULL, "%s (is tzdata installed?)", err);
  char *s = fuzz_copy(data, size);

  int64_t wall = 0;
  int32_t off = 0;
  int wrc = chr_time_parse_wall(s, size, &wall, &off, err, sizeof err);
  if (wrc != 0) FUZZ_CHECK(err[0] != '\0', "refused without a message");
  int64_t us = 0;
  int rc = chr_time_parse(s, size, z, &us, err, sizeof err);
  if (wrc != 0) FUZZ_CHECK(rc != 0, "parse accepts what parse_wall refused");
  if (rc != 0) {
    FUZZ_CHECK(err[0] != '\0', "refused without a message");
    free(s);
    return 0;
  }
  FUZZ_CHECK(us >= CHR_TIME_MIN && us <= CHR_TIME_MAX, "%lld is out of range", (long long)us);

  /* The wall time as a civil time and back. */
  chr_civil_t c;
  chr_us_to_civil(wall, &c);
  FUZZ_CHECK(chr_civil_to_us(&c) == wall, "civil round trip of %lld", (long long)wall);
  FUZZ_CHECK(chr_days_from_civil(c.year, c.month, c.day) * 86400 * CHR_USEC +
                     ((c.hour * 60 + c.minute) * 60 + c.second) * CHR_USEC + c.usec == wall,
             "days of %04d-%02d-%02d", c.year, c.month, c.day);

  if (off != CHR_TIME_NOOFFSET) {
    FUZZ_CHECK(us == wall - (int64_t)off * CHR_USEC, "offset %d not applied", (int)off);
  } else {
    int64_t out[2];
    int n = chr_tz_resolve(z, wall, out);
    FUZZ_CHECK(out[0] == us, "resolve gives %lld, parse %lld", (long long)out[0],
               (long long)us);
    for (int i = 0; i < n; i++)
      FUZZ_CHECK(out[i] + (int64_t)chr_tz_offset(z, out[i]) * CHR_USEC == wall,
                 "pass %d of %lld is at another wall time", i, (long long)wall);
    if (n == 0) FUZZ_CHECK(out[0] > wall - 26 * 3600 * CHR_USEC, "gap shift");
  }

  int n = chr_time_format(us, buf);
  FUZZ_CHECK(n > 0 && (size_t)n == strlen(buf) && n < CHR_TIME_BUFSZ, "format length %d", n);
  reparse(buf, us);
  int32_t zoff = chr_tz_offset(z, us);
  n = chr_time_format_offset(us, zoff, buf);
  FUZZ_CHECK(n > 0 && (size_t)n == strlen(buf) && n < CHR_TIME_BUFSZ, "format length %d", n);
  /* Offsets with seconds print as ±HH:MM:SS, which ISO strings here do
   * not carry; and an instant near an end may print past year 9999. */
  chr_us_to_civil(us + (int64_t)zoff * CHR_USEC, &c);
  if (zoff % 60 == 0 && c.year >= 1 && c.year <= 9999) reparse(buf, us);
  free(s);
  return 0;
}
