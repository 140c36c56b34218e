/* Every libaio call and every invalid argument, one line each: what was asked and what came back. Run against
 * the system's libaio (the kernel's answers) and against aiokit's drop-in on each engine; the transcripts must
 * be the same. Usage: transcript DIR (a directory on a file system with O_DIRECT). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* In libaio.so.1 but not in every libaio.h. */
int io_queue_wait(io_context_t ctx, struct timespec* timeout);

static int failed;

static void show(const char* what, long r) {
  if (r < 0) {
    const char* name = strerrorname_np((int)-r);
    printf("%-48s -> -%s\n", what, name ? name : "?");
  } else {
    printf("%-48s -> %ld\n", what, r);
  }
}

static void expect(int cond, const char* what) {
  if (!cond) {
    printf("%-48s -> WRONG\n", what);
    failed = 1;
  }
}

/* Submits one iocb and shows the answer; if accepted, reaps it and shows its result. */
static void one(io_context_t ctx, const char* what, struct iocb* cb) {
  struct iocb* cbs[1] = {cb};
  long r = io_submit(ctx, 1, cbs);
  show(what, r);
  if (r == 1) {
    struct io_event ev;
    long n = io_getevents(ctx, 1, 1, &ev, NULL);
    char line[96];
    snprintf(line, sizeof(line), "  %s: event", what);
    show(line, n == 1 ? (long)ev.res : n);
    expect(n != 1 || ev.obj == cb, "  event.obj is the iocb");
  }
}

static int called;
static long called_res;
static void callback(io_context_t ctx, struct iocb* iocb, long res, long res2) {
  (void)ctx;
  (void)iocb;
  (void)res2;
  ++called;
  called_res = res;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: transcript DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);

  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-transcript.%d", argv[1], (int)getpid());
  int rw = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  int rd = open(path, O_RDONLY);
  int wr = open(path, O_WRONLY);
  int direct = open(path, O_RDWR | O_DIRECT);
  int efd = eventfd(0, 0);
  if (rw < 0 || rd < 0 || wr < 0 || direct < 0 || efd < 0) {
    perror("open");
    return 2;
  }
  unlink(path);
  char* buf = NULL;
  if (posix_memalign((void**)&buf, 4096, 3 * 4096) != 0) return 2;
  memset(buf, '@', 3 * 4096);
  if (pwrite(rw, buf, 8192, 0) != 8192) return 2;

  io_context_t ctx = 0;
  show("io_setup(0)", io_setup(0, &ctx));
  show("io_setup(-1)", io_setup(-1, &ctx));
  show("io_setup(8, NULL)", io_setup(8, NULL));
  ctx = (io_context_t)1;
  show("io_setup(8) with *ctxp != 0", io_setup(8, &ctx));
  ctx = 0;
  show("io_setup(8)", io_setup(8, &ctx));

  io_context_t bogus = (io_context_t)(uintptr_t)0x12345000;
  struct iocb cb;
  struct iocb* cbs[2] = {&cb, NULL};
  struct io_event ev[4];
  struct timespec zero = {0, 0};
  io_prep_pread(&cb, rw, buf, 4096, 0);
  show("io_submit(unknown ctx)", io_submit(bogus, 1, cbs));
  /* libaio itself reads the ring of any non-null handle here, so only NULL is safe to ask about. */
  show("io_getevents(NULL ctx)", io_getevents(NULL, 0, 1, ev, &zero));
  show("io_cancel(unknown ctx)", io_cancel(bogus, &cb, ev));
  show("io_destroy(unknown ctx)", io_destroy(bogus));

  show("io_submit(nr -1)", io_submit(ctx, -1, cbs));
  show("io_submit(nr 0)", io_submit(ctx, 0, cbs));
  show("io_submit(iocbpp NULL)", io_submit(ctx, 1, NULL));
  cbs[0] = NULL;
  show("io_submit(iocb NULL)", io_submit(ctx, 1, cbs));
  cbs[0] = &cb;

  io_prep_pread(&cb, 9999, buf, 4096, 0);
  one(ctx, "pread on a closed fd", &cb);
  io_prep_pread(&cb, -1, buf, 4096, 0);
  one(ctx, "pread on fd -1", &cb);
  io_prep_pread(&cb, wr, buf, 4096, 0);
  one(ctx, "pread on an O_WRONLY fd", &cb);
  io_prep_pwrite(&cb, rd, buf, 4096, 0);
  one(ctx, "pwrite on an O_RDONLY fd", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  cb.u.c.__pad3 = 1;
  one(ctx, "pread with aio_reserved2 set", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  cb.aio_lio_opcode = 99;
  one(ctx, "opcode 99", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  cb.aio_lio_opcode = IO_CMD_NOOP;
  one(ctx, "IO_CMD_NOOP", &cb);
  io_prep_fsync(&cb, rw);
  cb.u.c.buf = buf;
  one(ctx, "fsync with a buffer", &cb);
  io_prep_fsync(&cb, rw);
  cb.aio_rw_flags = 2; /* RWF_DSYNC */
  one(ctx, "fsync with rw_flags", &cb);
  int pfd[2];
  if (pipe(pfd) == 0) {
    /* A pipe has no fsync: the kernel refuses at io_submit. */
    io_prep_fsync(&cb, pfd[0]);
    one(ctx, "fsync on a pipe", &cb);
    io_prep_fdsync(&cb, pfd[1]);
    one(ctx, "fdatasync on a pipe", &cb);
    close(pfd[0]);
    close(pfd[1]);
  } else {
    expect(0, "pipe()");
  }
  io_prep_pread(&cb, rw, buf, 4096, -4096);
  one(ctx, "pread at offset -4096", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  cb.aio_rw_flags = 1 << 20;
  one(ctx, "pread with unknown rw_flags", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  io_set_eventfd(&cb, rd);
  one(ctx, "RESFD that is not an eventfd", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  io_set_eventfd(&cb, 9999);
  one(ctx, "RESFD that is not open", &cb);

  /* The first of two is good, the second bad: one is submitted. */
  struct iocb good, bad;
  io_prep_pread(&good, rw, buf, 4096, 0);
  io_prep_pread(&bad, 9999, buf, 4096, 0);
  struct iocb* pair[2] = {&good, &bad};
  show("io_submit(good, bad)", io_submit(ctx, 2, pair));
  show("  io_getevents(1, 4)", io_getevents(ctx, 1, 4, ev, NULL));
  /* A NULL iocb after a good one: the good one is submitted, the count says so. */
  pair[1] = NULL;
  show("io_submit(good, NULL)", io_submit(ctx, 2, pair));
  show("  io_getevents(1, 4)", io_getevents(ctx, 1, 4, ev, NULL));

  show("io_getevents(min 2 > nr 1)", io_getevents(ctx, 2, 1, ev, &zero));
  show("io_getevents(min -1)", io_getevents(ctx, -1, 1, ev, &zero));
  show("io_getevents(nr -1)", io_getevents(ctx, 0, -1, ev, &zero));
  /* With a zero timeout libaio answers an empty ring itself (0, above); with a timeout the kernel checks. */
  struct timespec ten_ms = {0, 10 * 1000 * 1000};
  show("io_getevents(min 2 > nr 1, 10 ms)", io_getevents(ctx, 2, 1, ev, &ten_ms));
  show("io_getevents(min -1, 10 ms)", io_getevents(ctx, -1, 1, ev, &ten_ms));
  show("io_getevents(nr -1, 10 ms)", io_getevents(ctx, 0, -1, ev, &ten_ms));
  show("io_getevents(nothing, zero timeout)", io_getevents(ctx, 1, 4, ev, &zero));
  show("io_getevents(nothing, 10 ms)", io_getevents(ctx, 1, 4, ev, &ten_ms));

  io_prep_pread(&cb, rw, buf, 0, 0);
  one(ctx, "pread of 0 bytes", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 1 << 20);
  one(ctx, "pread past the end of the file", &cb);
  io_prep_pread(&cb, rw, buf, 4096, 6144);
  one(ctx, "pread across the end of the file", &cb);
  memset(buf, 0, 4096);
  io_prep_pread(&cb, rw, buf, 4096, 4096);
  cb.data = (void*)(uintptr_t)0xC0FFEE;
  {
    struct iocb* c1[1] = {&cb};
    show("pread 4096 with a cookie", io_submit(ctx, 1, c1));
    long n = io_getevents(ctx, 1, 1, ev, NULL);
    show("  event", n == 1 ? (long)ev[0].res : n);
    expect(n == 1 && ev[0].data == (void*)(uintptr_t)0xC0FFEE && ev[0].obj == &cb, "  event.data and obj");
    expect(buf[0] == '@' && buf[4095] == '@', "  the data read");
  }
  struct iovec iov[3] = {{buf, 100}, {buf + 4096, 200}, {buf + 8192, 300}};
  io_prep_preadv(&cb, rw, iov, 3, 0);
  one(ctx, "preadv of 3 iovecs (600 bytes)", &cb);
  io_prep_pwritev(&cb, rw, iov, 3, 16384);
  one(ctx, "pwritev of 3 iovecs (600 bytes)", &cb);
  io_prep_fsync(&cb, rw);
  one(ctx, "fsync", &cb);
  io_prep_fdsync(&cb, rw);
  one(ctx, "fdatasync", &cb);
  io_prep_pread(&cb, direct, buf + 1, 4096, 0);
  one(ctx, "O_DIRECT pread from a misaligned buffer", &cb);
  io_prep_pread(&cb, direct, buf, 4096, 0);
  one(ctx, "O_DIRECT pread, aligned", &cb);
  io_prep_pwrite(&cb, rw, buf, 4096, 0);
  cb.aio_rw_flags = 2; /* RWF_DSYNC */
  one(ctx, "pwrite with RWF_DSYNC", &cb);

  /* A completion signals the iocb's eventfd. */
  io_prep_pread(&cb, rw, buf, 4096, 0);
  io_set_eventfd(&cb, efd);
  one(ctx, "pread with an eventfd", &cb);
  uint64_t count = 0;
  show("  eventfd count", read(efd, &count, 8) == 8 ? (long)count : -errno);

  io_prep_pread(&cb, rw, buf, 4096, 0);
  show("io_cancel(an iocb never submitted)", io_cancel(ctx, &cb, ev));
  cb.key = 7;
  show("io_cancel(an iocb with aio_key set)", io_cancel(ctx, &cb, ev));

  /* io_pgetevents with a signal mask. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  io_prep_pread(&cb, rw, buf, 4096, 0);
  show("io_submit for io_pgetevents", io_submit(ctx, 1, cbs));
  show("  io_pgetevents(1, 1, mask)", io_pgetevents(ctx, 1, 1, ev, NULL, &mask));

  /* io_queue_run calls each iocb's callback. */
  io_prep_pread(&cb, rw, buf, 4096, 0);
  io_set_callback(&cb, callback);
  show("io_submit for io_queue_run", io_submit(ctx, 1, cbs));
  struct timespec ts = {1, 0};
  long waited = 0;
  while (called == 0 && waited++ < 1000) {
    long r = io_queue_run(ctx);
    if (r < 0) {
      show("  io_queue_run", r);
      break;
    }
    if (called == 0) usleep(1000);
  }
  show("  callbacks called", called);
  show("  callback's res", called_res);
  show("io_queue_wait(nothing)", io_queue_wait(ctx, &zero));
  (void)ts;

  /* libaio 0.1's calls, as old binaries bind them. */
  int (*getevents01)(io_context_t, long, struct io_event*, const struct timespec*) =
      (int (*)(io_context_t, long, struct io_event*, const struct timespec*))dlvsym(RTLD_DEFAULT, "io_getevents",
                                                                                  "LIBAIO_0.1");
  int (*cancel01)(io_context_t, struct iocb*) =
      (int (*)(io_context_t, struct iocb*))dlvsym(RTLD_DEFAULT, "io_cancel", "LIBAIO_0.1");
  int (*wait01)(io_context_t, const struct timespec*) =
      (int (*)(io_context_t, const struct timespec*))dlvsym(RTLD_DEFAULT, "io_queue_wait", "LIBAIO_0.1");
  expect(getevents01 != NULL && cancel01 != NULL && wait01 != NULL, "LIBAIO_0.1 symbols");
  if (getevents01 && cancel01 && wait01) {
    io_prep_pread(&cb, rw, buf, 4096, 0);
    show("io_submit for io_getevents@LIBAIO_0.1", io_submit(ctx, 1, cbs));
    show("  io_getevents@LIBAIO_0.1(nr 4)", getevents01(ctx, 4, ev, NULL));
    show("io_cancel@LIBAIO_0.1(never submitted)", cancel01(ctx, &cb));
    show("io_queue_wait@LIBAIO_0.1(nothing)", wait01(ctx, &zero));
  }

  show("io_destroy", io_destroy(ctx));
  /* A context destroyed is a bad context (not io_getevents: libaio reads its ring). */
  show("io_destroy(a destroyed ctx)", io_destroy(ctx));
  show("io_submit(a destroyed ctx)", io_submit(ctx, 1, cbs));
  show("io_cancel(a destroyed ctx)", io_cancel(ctx, &cb, ev));
  io_context_t q = 0;
  show("io_queue_init(16)", io_queue_init(16, &q));
  io_prep_pwrite(&cb, rw, buf, 4096, 0);
  one(q, "pwrite on an io_queue_init context", &cb);
  show("io_queue_release", io_queue_release(q));

  close(rw);
  close(rd);
  close(wr);
  close(direct);
  close(efd);
  free(buf);
  return failed;
}
