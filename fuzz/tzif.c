/* tzif.c - fuzzes the TZif reader of tz.c (RFC 8536: header, v1 and v2+
 * data blocks, the POSIX-TZ footer) through chr_tz_get, which reads zones
 * from $TZDIR: each input is written as the zone file "Fuzz/Zone".
 *
 * Invariants for a zone that loads: offsets stay within ±26 h; the next
 * transition after an instant is later than it, and the offset only
 * changes at transitions; an instant's own wall time resolves back to
 * wall-consistent instants, among them that instant. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/time.h"
#include "core/tz.h"
#include "fuzz.h"

#define MAXOFF (26 * 3600LL * CHR_USEC)

static char dir[64], sub[96], path[128];

static void cleanup(void) {
  unlink(path);
  rmdir(sub);
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* In memory where the machine has /dev/shm: a file is written per input. */
  snprintf(dir, sizeof dir, "%s/chronis-fuzz-tzif.XXXXXX",
           access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  if (mkdtemp(dir) == NULL) abort();
  snprintf(sub, sizeof sub, "%s/Fuzz", dir);
  snprintf(path, sizeof path, "%s/Zone", sub);
  if (mkdir(sub, 0700) != 0) abort();
  atexit(cleanup);
  setenv("TZDIR", dir, 1);
  return 0;
}

/* The instants whose wall times resolve to more passes than resolve's
 * window holds (more than 8 changes in 4 days) are not checked: no zone
 * of the IANA database comes near. */
static int crowded(const chr_tz_t *z, int64_t t) {
  int64_t at = t - 3 * 86400 * CHR_USEC;
  for (int k = 0; k < 8; k++) {
    at = chr_tz_next_transition(z, at);
    if (at == CHR_TIME_NONE || at > t + 3 * 86400 * CHR_USEC) return 0;
  }
  return 1;
}

static void check_at(const chr_tz_t *z, int64_t t) {
  chr_tz_info_t info;
  chr_tz_info(z, t, &info);
  int32_t off = chr_tz_offset(z, t);
  FUZZ_CHECK(off == info.offset, "info and offset disagree");
  FUZZ_CHECK(off * CHR_USEC > -MAXOFF && off * CHR_USEC < MAXOFF, "offset %d", (int)off);
  FUZZ_CHECK(strlen(info.abbr) < sizeof info.abbr, "abbreviation");
  int64_t next = chr_tz_next_transition(z, t);
  if (next != CHR_TIME_NONE) {
    FUZZ_CHECK(next > t, "next transition %lld is not after %lld", (long long)next,
               (long long)t);
    /* No change of offset before it (at whole seconds, as the table). */
    if (next - t > CHR_USEC)
      FUZZ_CHECK(chr_tz_offset(z, next - CHR_USEC) == off, "offset changed before %lld",
                 (long long)next);
    FUZZ_CHECK(chr_tz_offset(z, next) != off, "no change at transition %lld",
               (long long)next);
  }
  if (t < CHR_TIME_MIN || t > CHR_TIME_MAX || crowded(z, t)) return;
  int64_t wall = t + off * CHR_USEC, out[2];
  int n = chr_tz_resolve(z, wall, out);
  FUZZ_CHECK(n >= 1, "wall time of %lld resolves to none", (long long)t);
  int found = 0;
  for (int i = 0; i < n; i++) {
    FUZZ_CHECK(out[i] + chr_tz_offset(z, out[i]) * CHR_USEC == wall,
               "pass %d of the wall time of %lld is at another wall time", i, (long long)t);
    found |= out[i] == t;
  }
  if (n == 1) FUZZ_CHECK(found, "wall time of %lld resolves to %lld", (long long)t,
                         (long long)out[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
  char err[128];
  const chr_tz_t *z = chr_tz_get("Fuzz/Zone", err, sizeof err);
  if (z == NULL) {
    FUZZ_CHECK(strcmp(err, "invalid timezone 'Fuzz/Zone'") == 0, "message '%s'", err);
    return 0;
  }
  static const int64_t at[] = {0, 1735689600, 1741503600, 1762063200, 4102444800,
                               -2208988800, 253402300799, -62135596800};
  for (size_t i = 0; i < sizeof at / sizeof *at; i++) check_at(z, at[i] * CHR_USEC);
  /* Walk the first transitions from the start of the range. */
  int64_t t = CHR_TIME_MIN;
  for (int k = 0; k < 16 && t != CHR_TIME_NONE && t <= CHR_TIME_MAX; k++) {
    check_at(z, t);
    check_at(z, t - CHR_USEC);
    t = chr_tz_next_transition(z, t);
  }
  chr_tz_cache_clear();
  return 0;
}
