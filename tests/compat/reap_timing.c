/* The completion timing libaio programs rely on, as the kernel gives it, and the min_nr rules others rely on:
 *  1. Submit one buffered request, then io_getevents(ctx, 0, 1, ev, 30 s) (libaio's own test harness does so
 *     and treats 0 as a failure): the kernel has completed it inside io_submit, so the event is there.
 *  2. The same after submitting several: at least one event.
 *  3. min_nr 0 with nothing in flight: 0 at once, not after the timeout.
 *  4. min_nr 1 with nothing in flight: 0 after the timeout.
 * Prints one line per behaviour; run against the system's libaio and against the drop-in on each engine, the
 * output must be the same. Usage: reap_timing DIR. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { kSize = 4096, kMany = 4, kRounds = 20 };

#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      printf("FAILED: " __VA_ARGS__);           \
      printf(" (%s:%d)\n", __FILE__, __LINE__); \
      exit(1);                                  \
    }                                           \
  } while (0)

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: reap_timing DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);
  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-timing.%d", argv[1], (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
  unlink(path);
  io_context_t ctx = 0;
  int r = io_setup(16, &ctx);
  if (r != 0) {
    printf("io_setup: %s\n", strerror(-r));
    return 1;
  }
  static char buf[kMany][kSize];
  struct iocb cbs[kMany];
  struct iocb* ptrs[kMany];
  for (int i = 0; i < kMany; ++i) ptrs[i] = &cbs[i];
  struct io_event ev[kMany];

  /* 1. libaio's harness: submit one, reap with min_nr 0 and a timeout. */
  int got_event = 0;
  for (int round = 0; round < kRounds; ++round) {
    memset(buf[0], 'a' + round % 26, kSize);
    if (round % 2 == 0) {
      io_prep_pwrite(&cbs[0], fd, buf[0], kSize, (long long)round * kSize);
    } else {
      io_prep_pread(&cbs[0], fd, buf[0], kSize, (long long)(round - 1) * kSize);
    }
    CHECK(io_submit(ctx, 1, ptrs) == 1, "io_submit");
    struct timespec ts = {30, 0};
    long n = io_getevents(ctx, 0, 1, ev, &ts);
    if (n == 1 && ev[0].res == kSize && ev[0].obj == &cbs[0]) {
      ++got_event;
    } else {
      CHECK(n >= 0, "io_getevents: %s", strerror((int)-n));
      if (n == 0) CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1, "the request never completed");
    }
  }
  printf("%d buffered requests, each reaped with io_getevents(min_nr 0, 30 s) after io_submit: %d found it\n",
         kRounds, got_event);

  /* 2. Several in flight: at least one. */
  for (int i = 0; i < kMany; ++i) io_prep_pread(&cbs[i], fd, buf[i], kSize, (long long)i * kSize);
  CHECK(io_submit(ctx, kMany, ptrs) == kMany, "io_submit of %d", kMany);
  struct timespec ts = {30, 0};
  long n = io_getevents(ctx, 0, kMany, ev, &ts);
  CHECK(n >= 0, "io_getevents: %s", strerror((int)-n));
  printf("%d in flight, io_getevents(min_nr 0, nr %d, 30 s): at least one: %s\n", kMany, kMany,
         n >= 1 ? "yes" : "no");
  if (n < kMany) CHECK(io_getevents(ctx, kMany - n, kMany - n, ev, NULL) == kMany - n, "the rest");

  /* 3. Nothing in flight, min_nr 0: at once. */
  struct timespec wait20 = {20, 0};
  double t0 = now_s();
  n = io_getevents(ctx, 0, 1, ev, &wait20);
  double took = now_s() - t0;
  printf("nothing in flight, io_getevents(min_nr 0, 20 s): %ld, at once: %s\n", n, took < 10 ? "yes" : "no");

  /* 4. Nothing in flight, min_nr 1: the timeout. */
  struct timespec short_wait = {0, 50 * 1000 * 1000};
  t0 = now_s();
  n = io_getevents(ctx, 1, 1, ev, &short_wait);
  took = now_s() - t0;
  printf("nothing in flight, io_getevents(min_nr 1, 50 ms): %ld, after the timeout: %s\n", n,
         took >= 0.045 ? "yes" : "no");

  CHECK(io_destroy(ctx) == 0, "io_destroy");
  close(fd);
  return 0;
}
