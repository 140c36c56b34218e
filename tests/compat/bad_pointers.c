/* Bad pointers handed to every libaio call that takes one: the kernel answers -EFAULT (or, for an event array
 * when nothing is to be written, does not look at it); the drop-in must give the same answers and never crash.
 * Prints one line per call; run against the system's libaio and against the drop-in on each engine, the output
 * must be the same. A bad timeout pointer and io_queue_init's bad ctxp are tried only under the drop-in
 * (AIOKIT_ENGINE set): the system's libaio reads those itself, before the kernel could refuse them, and
 * crashes. Usage: bad_pointers DIR. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      printf("FAILED: " __VA_ARGS__);           \
      printf(" (%s:%d)\n", __FILE__, __LINE__); \
      exit(1);                                  \
    }                                           \
  } while (0)

/* The program's own SIGSEGV handler, installed before io_setup: it must still get the program's faults. */
static sigjmp_buf own_jump;
static volatile sig_atomic_t own_faults;
static void own_handler(int sig) {
  (void)sig;
  ++own_faults;
  siglongjmp(own_jump, 1);
}

static void show(const char* what, long r) {
  if (r < 0) {
    const char* name = strerrorname_np((int)-r);
    printf("%-56s -> -%s\n", what, name ? name : "?");
  } else {
    printf("%-56s -> %ld\n", what, r);
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bad_pointers DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);
  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-badptr.%d", argv[1], (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
  unlink(path);
  static char buf[4096];
  memset(buf, 'x', sizeof(buf));
  CHECK(pwrite(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf), "pwrite");
  /* A page no access reaches, and a read-only page of zeros. */
  void* none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(none != MAP_FAILED && ro != MAP_FAILED, "mmap");

  show("io_setup(8, unmapped ctxp)", io_setup(8, (io_context_t*)none));
  show("io_setup(8, read-only ctxp holding 0)", io_setup(8, (io_context_t*)ro));

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = own_handler;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
  io_context_t ctx = 0;
  int r = io_setup(8, &ctx);
  show("io_setup(8, &ctx)", r);
  if (r != 0) return 1;
  struct iocb good, vec;
  struct iocb* cbs[2];
  struct io_event ev[2];

  show("io_submit(ctx, 1, unmapped array)", io_submit(ctx, 1, (struct iocb**)none));
  cbs[0] = (struct iocb*)none;
  show("io_submit(ctx, 1, {unmapped iocb})", io_submit(ctx, 1, cbs));
  cbs[0] = NULL;
  show("io_submit(ctx, 1, {NULL})", io_submit(ctx, 1, cbs));
  io_prep_preadv(&vec, fd, (const struct iovec*)none, 1, 0);
  cbs[0] = &vec;
  show("io_submit(ctx, 1, {preadv, unmapped iovec array})", io_submit(ctx, 1, cbs));
  io_prep_pread(&good, fd, buf, sizeof(buf), 0);
  cbs[0] = &good;
  cbs[1] = (struct iocb*)none;
  show("io_submit(ctx, 2, {good, unmapped iocb})", io_submit(ctx, 2, cbs));
  /* The one event, first into an array that cannot be written: it stays for the next call. */
  show("io_getevents(ctx, 1, 1, unmapped events, NULL)", io_getevents(ctx, 1, 1, (struct io_event*)none, NULL));
  show("io_getevents(ctx, 1, 1, read-only events, NULL)", io_getevents(ctx, 1, 1, (struct io_event*)ro, NULL));
  long n = io_getevents(ctx, 1, 1, ev, NULL);
  show("io_getevents(ctx, 1, 1, ev, NULL)", n);
  CHECK(n == 1 && ev[0].obj == &good && ev[0].res == (long)sizeof(buf), "the event after the faults");
  struct timespec zero = {0, 0};
  show("io_getevents(ctx, 0, 1, unmapped events, zero), none due",
       io_getevents(ctx, 0, 1, (struct io_event*)none, &zero));
  /* A null event array is the kernel's EFAULT only once there is an event to write. */
  show("io_getevents(ctx, 0, 1, NULL, zero), none due", io_getevents(ctx, 0, 1, NULL, &zero));
  struct timespec ms = {0, 1000000};
  show("io_getevents(ctx, 0, 1, NULL, 1 ms), none due", io_getevents(ctx, 0, 1, NULL, &ms));
  sigset_t* bad_mask = (sigset_t*)none;
  io_prep_pread(&good, fd, buf, sizeof(buf), 0);
  cbs[0] = &good;
  CHECK(io_submit(ctx, 1, cbs) == 1, "io_submit");
  show("io_getevents(ctx, 1, 1, NULL, NULL), one due", io_getevents(ctx, 1, 1, NULL, NULL));
  show("io_pgetevents(ctx, 1, 1, ev, NULL, unmapped sigmask)", io_pgetevents(ctx, 1, 1, ev, NULL, bad_mask));
  CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1, "the event after io_pgetevents");
  show("io_cancel(ctx, unmapped iocb, ev)", io_cancel(ctx, (struct iocb*)none, ev));
  if (getenv("AIOKIT_ENGINE") != NULL) {
    /* The kernel's answers, which the system's libaio does not get to give: it reads these pointers itself. */
    if (strcmp(getenv("AIOKIT_ENGINE"), "linux-aio") != 0) {
      /* On linux-aio the drop-in passes through as libaio does, writing *ctxp itself. */
      long q = io_queue_init(8, (io_context_t*)none);
      CHECK(q == -EFAULT, "io_queue_init with an unmapped ctxp: %ld, not -EFAULT", q);
    }
    long t = io_getevents(ctx, 1, 1, ev, (struct timespec*)none);
    CHECK(t == -EFAULT, "io_getevents with an unmapped timeout: %ld, not -EFAULT", t);
    t = io_getevents(ctx, 0, 1, ev, (struct timespec*)none);
    CHECK(t == -EFAULT, "io_getevents(min_nr 0) with an unmapped timeout: %ld, not -EFAULT", t);
  }
  /* A fault of the program's own, after the drop-in's calls: its handler gets it. */
  if (sigsetjmp(own_jump, 1) == 0) {
    volatile char c = *(volatile char*)none;
    (void)c;
  }
  printf("the program's own SIGSEGV handler got its fault: %s\n", own_faults == 1 ? "yes" : "no");
  show("io_destroy(ctx)", io_destroy(ctx));
  close(fd);
  return 0;
}
