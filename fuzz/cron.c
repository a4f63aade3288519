/* cron.c - fuzzes the cron parsers (chr_cron_parse_crontab_opts and
 * chr_cron_parse_fields_opts), the description and the next fire time.
 *
 * Input: one byte of options, then the spec. Options: bits 0-1 the
 * dialect, bit 2 the field-table parser (the spec's lines are the fields,
 * year first; an empty line is an unspecified field), bits 3-4 the zone
 * of the search, bit 5 no hash key (H refused).
 * Invariants for a spec that parses: its description fits what it said it
 * needs; every next time is after its start and at most 9999-12-31; and
 * (fire times being a fixed set, but for @every) the next time after
 * "one microsecond before the next time" is that next time again. */
#include <stdint.h>

#include "core/common.h"
#include "core/cron.h"
#include "core/time.h"
#include "core/tz.h"
#include "fuzz.h"

static const char *const zones[4] = {"UTC", "America/New_York", "Australia/Lord_Howe",
                                     "Europe/London"};

static void check_next(const chr_cron_t *c, const chr_tz_t *z, int64_t after) {
  int64_t n = chr_cron_next(c, after, z);
  if (n == CHR_TIME_NONE) return;
  FUZZ_CHECK(n > after, "next %lld after %lld", (long long)n, (long long)after);
  FUZZ_CHECK(n <= CHR_TIME_MAX, "next %lld past year 9999", (long long)n);
  if (chr_cron_every(c) || chr_cron_reboot(c)) return;
  int64_t again = chr_cron_next(c, n - 1, z);
  FUZZ_CHECK(again == n, "next after %lld is %lld, after %lld-1 it is %lld", (long long)after,
             (long long)n, (long long)n, (long long)again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t o = fuzz_byte(&data, &size);
  char err[256];
  chr_cron_opts_t opts = {(chr_cron_dialect_t)(o & 3), (o & 0x20) ? NULL : "fuzz-job-1"};
  char *s = fuzz_str(data, size);
  chr_cron_t *c;
  if (o & 4) {
    const char *fields[CHR_CRON_NFIELDS] = {0};
    char *p = s;
    for (int i = 0; i < CHR_CRON_NFIELDS && p; i++) {
      char *nl = strchr(p, '\n');
      if (nl) *nl = '\0';
      fields[i] = *p ? p : NULL;
      p = nl ? nl + 1 : NULL;
    }
    c = chr_cron_parse_fields_opts(fields, &opts, err, sizeof err);
  } else {
    c = chr_cron_parse_crontab_opts(s, &opts, err, sizeof err);
  }
  if (c == NULL) {
    FUZZ_CHECK(memchr(err, '\0', sizeof err) && err[0], "refused without a message");
    free(s);
    return 0;
  }
  char small[8], big[1024];
  size_t need = chr_cron_describe(c, small, sizeof small);
  FUZZ_CHECK(strlen(small) < sizeof small, "description overflowed");
  size_t got = chr_cron_describe(c, big, sizeof big);
  FUZZ_CHECK(need == got, "description needs %zu then %zu", need, got);
  if (got < sizeof big) FUZZ_CHECK(strlen(big) == got, "description length %zu", got);

  char zerr[128];
  const chr_tz_t *z = chr_tz_get(zones[(o >> 3) & 3], zerr, sizeof zerr);
  FUZZ_CHECK(z != NULL, "%s (is tzdata installed?)", zerr);
  /* Starts: the epoch's neighbourhood, a DST change, a leap day, both ends
   * of the range, and one that depends on the input. */
  static const int64_t starts[] = {0, 1735689600, 1741503599, 1709164800, 1711846800,
                                   253402214400, -62135596800, 4102444799};
  for (size_t i = 0; i < sizeof starts / sizeof *starts; i++)
    check_next(c, z, starts[i] * CHR_USEC);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 1099511628211ULL;
  check_next(c, z, (int64_t)(h % (uint64_t)(CHR_TIME_MAX / 2)) - CHR_TIME_MAX / 4);
  chr_cron_free(c);
  free(s);
  return 0;
}
