/* Preloaded by spec/run.sh, after the ASan and UBSan runtimes, into every
 * process of a sanitizer run: sends UBSan's reports to files named
 * $CHRONIS_UBSAN_LOG.<executable>.<pid>, where run.sh reads them.
 *
 * Why: with GCC, ASan and UBSan are two runtimes, each with its own report
 * file, set by the interface function __sanitizer_set_report_path. Both
 * export it, and the one loaded first (ASan, which must come first) takes
 * every call: UBSan's log_path sets ASan's file, and UBSan's own reports
 * go to stderr, where those of a worker or a host process a spec started
 * may never be seen. So this asks UBSan's runtime for its own copy of the
 * function, by handle, and calls it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

__attribute__((constructor)) static void chr_ubsan_log_init(void) {
  const char *path = getenv("CHRONIS_UBSAN_LOG");
  void *handler = dlsym(RTLD_DEFAULT, "__ubsan_handle_add_overflow");
  Dl_info info;
  if (!path || !handler || !dladdr(handler, &info) || !info.dli_fname)
    return;
  void *ubsan = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!ubsan)
    return;
  void (*set_path)(const char *) = (void (*)(const char *))dlsym(ubsan, "__sanitizer_set_report_path");
  if (set_path)
    set_path(path);
  dlclose(ubsan);
}
