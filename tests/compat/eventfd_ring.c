/* What a program that learns of completions through an eventfd relies on, as the kernel gives it:
 *  1. Once the eventfd has counted N completions, io_getevents(ctx, N, N, ..., zero timeout) returns N: the
 *     eventfd is signalled after the event can be reaped.
 *  2. A program that never calls io_getevents: it waits on the eventfd and reads the events from the ring at
 *     the context's address (struct aio_ring, without looking at its magic), moving the head itself.
 * Prints one line per behaviour; run against the system's libaio and against the drop-in on each engine, the
 * output must be the same. Usage: eventfd_ring DIR. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The kernel's ring header at the context's address (fs/aio.c). */
struct aio_ring {
  unsigned id;
  unsigned nr;
  unsigned head;
  unsigned tail;
  unsigned magic;
  unsigned compat_features;
  unsigned incompat_features;
  unsigned header_length;
  struct io_event io_events[];
};

enum { kCount = 16, kSize = 4096 };

#define CHECK(cond, ...)                                 \
  do {                                                   \
    if (!(cond)) {                                       \
      printf("FAILED: " __VA_ARGS__);                    \
      printf(" (%s:%d)\n", __FILE__, __LINE__);          \
      exit(1);                                           \
    }                                                    \
  } while (0)

/* Waits up to 30 s for the eventfd and returns its count (0 on timeout). */
static uint64_t wait_eventfd(int efd) {
  struct pollfd p = {.fd = efd, .events = POLLIN};
  int r = poll(&p, 1, 30000);
  CHECK(r >= 0, "poll: %s", strerror(errno));
  if (r == 0) return 0;
  uint64_t n = 0;
  CHECK(read(efd, &n, sizeof(n)) == sizeof(n), "read eventfd: %s", strerror(errno));
  return n;
}

static void prep(struct iocb* cb, int write, int fd, char* buf, int i, int efd) {
  if (write) {
    io_prep_pwrite(cb, fd, buf, kSize, (long long)i * kSize);
  } else {
    io_prep_pread(cb, fd, buf, kSize, (long long)i * kSize);
  }
  io_set_eventfd(cb, efd);
  cb->data = (void*)(uintptr_t)(i + 1);
}

static char bufs[kCount][kSize] __attribute__((aligned(4096)));
static struct iocb cbs[kCount];
static struct iocb* ptrs[kCount];

/* 1. Writes; each count the eventfd gives is reapable at once. */
static void phase1(io_context_t ctx, int fd, int efd, const char* kind) {
  for (int i = 0; i < kCount; ++i) {
    memset(bufs[i], 'a' + i, kSize);
    prep(&cbs[i], 1, fd, bufs[i], i, efd);
    ptrs[i] = &cbs[i];
  }
  CHECK(io_submit(ctx, kCount, ptrs) == kCount, "io_submit of %d writes", kCount);
  int reaped = 0, short_polls = 0;
  while (reaped < kCount) {
    uint64_t n = wait_eventfd(efd);
    CHECK(n != 0, "the eventfd said nothing in 30 s with %d of %d writes reaped", reaped, kCount);
    struct io_event ev[kCount];
    struct timespec zero = {0, 0};
    long got = io_getevents(ctx, (long)n, (long)n, ev, &zero);
    CHECK(got >= 0, "io_getevents: %s", strerror((int)-got));
    if (got != (long)n) ++short_polls;
    for (long k = 0; k < got; ++k) CHECK(ev[k].res == kSize, "write %ld: res %ld", k, (long)ev[k].res);
    reaped += (int)got;
    if (got != (long)n) {
      /* Take the rest so that the run goes on; the answer is already wrong. */
      long more = io_getevents(ctx, (long)n - got, (long)n - got, ev, NULL);
      CHECK(more == (long)n - got, "io_getevents for the rest: %ld", more);
      reaped += (int)more;
    }
  }
  printf("%d %s writes with an eventfd: every count it gave was reapable at once: %s\n", kCount, kind,
         short_polls == 0 ? "yes" : "no");

}

/* 2. Reads, reaped from the ring in user space only, woken by the eventfd. */
static void phase2(io_context_t ctx, int fd, int efd, const char* kind) {
  struct aio_ring* ring = (struct aio_ring*)ctx;
  for (int i = 0; i < kCount; ++i) {
    memset(bufs[i], 0, kSize);
    prep(&cbs[i], 0, fd, bufs[i], i, efd);
  }
  CHECK(io_submit(ctx, kCount, ptrs) == kCount, "io_submit of %d reads", kCount);
  int seen[kCount] = {0};
  int reaped = 0;
  while (reaped < kCount) {
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    unsigned head = ring->head;
    if (head == tail) {
      CHECK(wait_eventfd(efd) != 0, "the eventfd said nothing in 30 s with %d of %d reads in the ring", reaped,
            kCount);
      continue;
    }
    while (head != tail) {
      struct io_event ev = ring->io_events[head];
      head = (head + 1) % ring->nr;
      int i = (int)(uintptr_t)ev.data - 1;
      CHECK(i >= 0 && i < kCount && ev.obj == &cbs[i], "an event for no request of ours");
      CHECK(ev.res == kSize, "read %d: res %ld", i, (long)ev.res);
      ++seen[i];
      ++reaped;
    }
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
  }
  int ok = 1;
  for (int i = 0; i < kCount; ++i) {
    ok &= seen[i] == 1;
    for (int b = 0; b < kSize; ++b) ok &= bufs[i][b] == 'a' + i;
  }
  printf("%d %s reads reaped from the ring in user space, each once, data as written: %s\n", kCount, kind,
         ok ? "yes" : "no");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: eventfd_ring DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);
  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-eventfd.%d", argv[1], (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
  int direct = open(path, O_RDWR | O_DIRECT);
  CHECK(direct >= 0, "open %s with O_DIRECT: %s", path, strerror(errno));
  unlink(path);
  int efd = eventfd(0, EFD_NONBLOCK);
  CHECK(efd >= 0, "eventfd: %s", strerror(errno));
  io_context_t ctx = 0;
  int r = io_setup(64, &ctx);
  if (r != 0) {
    printf("io_setup: %s\n", strerror(-r));
    return 1;
  }

  phase1(ctx, fd, efd, "buffered");
  phase1(ctx, direct, efd, "O_DIRECT");

  struct aio_ring* ring = (struct aio_ring*)ctx;
  printf("the context's ring has slots: %s\n", ring->nr > 0 ? "yes" : "no");
  CHECK(ring->nr > 0, "a ring of no slots cannot be reaped");
  phase2(ctx, fd, efd, "buffered");
  phase2(ctx, direct, efd, "O_DIRECT");
  /* 3. An eventfd closed with its requests in flight, its number taken by a file: the kernel holds the eventfd
   *    from io_submit on, so the file is never written. */
  {
    int efd2 = eventfd(0, 0);
    CHECK(efd2 >= 0, "eventfd: %s", strerror(errno));
    for (int i = 0; i < kCount; ++i) prep(&cbs[i], 0, fd, bufs[i], i, efd2);
    CHECK(io_submit(ctx, kCount, ptrs) == kCount, "io_submit of %d reads", kCount);
    close(efd2);
    char p2[4200];
    snprintf(p2, sizeof(p2), "%s.reused", path);
    int file = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(file >= 0, "open %s: %s", p2, strerror(errno));
    unlink(p2);
    struct io_event evs[kCount];
    int got = 0;
    while (got < kCount) {
      long n = io_getevents(ctx, 1, kCount - got, evs, NULL);
      CHECK(n > 0, "io_getevents: %ld", n);
      got += (int)n;
    }
    struct stat st;
    CHECK(fstat(file, &st) == 0, "fstat");
    printf("an eventfd closed with its requests in flight, its number reused by a file: the file untouched: %s\n",
           st.st_size == 0 ? "yes" : "no");
    close(file);
  }
  /* The ring says it is empty, and io_getevents agrees. */
  struct io_event ev;
  struct timespec zero = {0, 0};
  printf("nothing left to reap: %s\n", io_getevents(ctx, 0, 1, &ev, &zero) == 0 ? "yes" : "no");
  CHECK(io_destroy(ctx) == 0, "io_destroy");
  close(efd);
  close(direct);
  close(fd);
  return 0;
}
