/* A program that takes io_setup, io_submit and io_destroy from libaio but reaps with the raw system call
 * (syscall(SYS_io_getevents)), which no library can intercept: the kernel answers it only for its own
 * contexts. It must work under the drop-in whatever AIOKIT_ENGINE says. This file must not refer to libaio's
 * io_getevents (nor io_pgetevents, io_queue_run, io_queue_wait): that is what makes it such a program.
 * Prints one line per step; the output must be the kernel's. Usage: raw_getevents DIR. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kCount = 8, kSize = 4096 };

#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      printf("FAILED: " __VA_ARGS__);           \
      printf(" (%s:%d)\n", __FILE__, __LINE__); \
      exit(1);                                  \
    }                                           \
  } while (0)

static long raw_getevents(io_context_t ctx, long min_nr, long nr, struct io_event* ev) {
  long r = syscall(SYS_io_getevents, ctx, min_nr, nr, ev, NULL);
  return r < 0 ? -errno : r;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: raw_getevents DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);
  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-raw.%d", argv[1], (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
  unlink(path);
  io_context_t ctx = 0;
  int r = io_setup(kCount, &ctx);
  printf("io_setup: %d\n", r);
  if (r != 0) return 1;
  static char bufs[kCount][kSize];
  struct iocb cbs[kCount];
  struct iocb* ptrs[kCount];
  struct io_event ev[kCount];
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < kCount; ++i) {
      if (pass == 0) {
        memset(bufs[i], 'a' + i, kSize);
        io_prep_pwrite(&cbs[i], fd, bufs[i], kSize, (long long)i * kSize);
      } else {
        memset(bufs[i], 0, kSize);
        io_prep_pread(&cbs[i], fd, bufs[i], kSize, (long long)i * kSize);
      }
      ptrs[i] = &cbs[i];
    }
    printf("io_submit of %d %s: %d\n", kCount, pass == 0 ? "writes" : "reads", io_submit(ctx, kCount, ptrs));
    int reaped = 0;
    while (reaped < kCount) {
      long n = raw_getevents(ctx, 1, kCount - reaped, ev);
      if (n < 0) {
        printf("syscall(SYS_io_getevents): -%s\n", strerrorname_np((int)-n));
        return 1;
      }
      for (long k = 0; k < n; ++k) CHECK(ev[k].res == kSize, "res %ld", (long)ev[k].res);
      reaped += (int)n;
    }
    printf("syscall(SYS_io_getevents) reaped %d\n", reaped);
  }
  int ok = 1;
  for (int i = 0; i < kCount; ++i) {
    for (int b = 0; b < kSize; ++b) ok &= bufs[i][b] == 'a' + i;
  }
  printf("data as written: %s\n", ok ? "yes" : "no");
  printf("io_destroy: %d\n", io_destroy(ctx));
  close(fd);
  return 0;
}
