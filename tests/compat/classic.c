/* The classic libaio programs, written against <libaio.h> and linked with the system's libaio; run against
 * aiokit's drop-in on each engine by run.sh. Each part prints what it checked; any failure exits 1.
 * Usage: classic DIR (a directory on a file system with O_DIRECT). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int failed;
#define CHECK(cond, ...)                                    \
  do {                                                      \
    if (!(cond)) {                                          \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                                  \
      printf("\n");                                         \
      failed = 1;                                           \
    }                                                       \
  } while (0)

/* The kernel's ring header, for programs that reap in user space. */
struct aio_ring {
  unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
  struct io_event io_events[];
};
#define AIO_RING_MAGIC 0xa10a10a1

/* Reaps like fio's userspace_reap: from the ring when it is the kernel's, else through io_getevents. */
static int user_reap(io_context_t ctx, struct io_event* out, int max, int* used_ring) {
  struct aio_ring* ring = (struct aio_ring*)ctx;
  if (ring->magic != AIO_RING_MAGIC) {
    *used_ring = 0;
    struct timespec zero = {0, 0};
    return io_getevents(ctx, 0, max, out, &zero);
  }
  *used_ring = 1;
  int n = 0;
  unsigned head = ring->head;
  unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
  while (head != tail && n < max) {
    out[n++] = ring->io_events[head];
    head = (head + 1) % ring->nr;
  }
  __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
  return n;
}

static void* wait_forever(void* arg) {
  struct io_event ev;
  long r = io_getevents(*(io_context_t*)arg, 1, 1, &ev, NULL);
  return (void*)r;
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  if (dladdr((void*)io_submit, &info) != 0) fprintf(stderr, "libaio: %s\n", info.dli_fname);
  char path[4096];
  snprintf(path, sizeof(path), "%s/compat-classic.%d", argv[1], (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
  if (fd < 0) {
    perror(path);
    return 2;
  }
  unlink(path);
  char* buf;
  if (posix_memalign((void**)&buf, 4096, 1 << 20) != 0) return 2;

  /* 1. Write a buffer of '@' with O_DIRECT and read it back. */
  io_context_t ctx = 0;
  CHECK(io_setup(32, &ctx) == 0, "io_setup");
  memset(buf, '@', 4096);
  struct iocb cb;
  struct iocb* cbs[1] = {&cb};
  struct io_event ev[64];
  io_prep_pwrite(&cb, fd, buf, 4096, 0);
  CHECK(io_submit(ctx, 1, cbs) == 1, "submit write");
  CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1 && ev[0].res == 4096, "write event res %ld", (long)ev[0].res);
  memset(buf, 0, 4096);
  io_prep_pread(&cb, fd, buf, 4096, 0);
  CHECK(io_submit(ctx, 1, cbs) == 1, "submit read");
  CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1 && ev[0].res == 4096, "read event");
  int same = 1;
  for (int i = 0; i < 4096; ++i) same &= buf[i] == '@';
  CHECK(same, "the data read back is the data written");
  printf("write and read back with O_DIRECT: ok\n");

  /* 2. Poll io_getevents with a timeout until the event comes. */
  io_prep_pread(&cb, fd, buf, 4096, 0);
  CHECK(io_submit(ctx, 1, cbs) == 1, "submit");
  int got = 0, polls = 0;
  while (got == 0 && polls < 5000) {
    struct timespec ts = {0, 1000 * 1000};
    int r = io_getevents(ctx, 1, 1, ev, &ts);
    CHECK(r >= 0, "poll: %d", r);
    if (r < 0) break;
    got += r;
    ++polls;
  }
  CHECK(got == 1, "the polled event came (%d polls)", polls);
  printf("poll with a timeout: ok\n");

  /* 3. An eventfd (IOCB_FLAG_RESFD) woken in epoll for each completion. */
  int efd = eventfd(0, EFD_NONBLOCK);
  int ep = epoll_create1(0);
  struct epoll_event want = {.events = EPOLLIN, .data.fd = efd};
  CHECK(efd >= 0 && ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, efd, &want) == 0, "epoll set-up");
  struct iocb many[16];
  struct iocb* ptrs[16];
  for (int i = 0; i < 16; ++i) {
    io_prep_pread(&many[i], fd, buf + 4096 * i, 4096, 0);
    io_set_eventfd(&many[i], efd);
    ptrs[i] = &many[i];
  }
  CHECK(io_submit(ctx, 16, ptrs) == 16, "submit 16");
  uint64_t signalled = 0;
  int reaped = 0;
  /* The kernel writes the event, then signals the eventfd: wait for both. */
  while (reaped < 16 || signalled < 16) {
    struct epoll_event ready;
    int n = epoll_wait(ep, &ready, 1, 5000);
    if (n < 0 && errno == EINTR) continue;
    CHECK(n == 1, "epoll_wait: %d (%s)", n, strerror(errno));
    if (n != 1) break;
    uint64_t v;
    if (read(efd, &v, 8) == 8) signalled += v;
    struct timespec zero = {0, 0};
    int r = io_getevents(ctx, 0, 16, ev, &zero);
    CHECK(r >= 0, "getevents %d", r);
    if (r > 0) reaped += r;
  }
  CHECK(reaped == 16 && signalled == 16, "16 completions, eventfd counted %llu", (unsigned long long)signalled);
  printf("eventfd with epoll: ok\n");

  /* 4. Many requests through a small context, reaped in user space the way fio's userspace_reap does:
   *    every one completes exactly once. */
  enum { kTotal = 2000, kDepth = 32 };
  static struct iocb reqs[kDepth];
  static unsigned char seen[kTotal];
  int next = 0, done = 0, in_flight = 0, ring_used = 0;
  while (done < kTotal) {
    while (in_flight < kDepth && next < kTotal) {
      int slot = -1;
      for (int i = 0; i < kDepth; ++i)
        if (reqs[i].data == NULL) {
          slot = i;
          break;
        }
      if (slot < 0) break;
      io_prep_pread(&reqs[slot], fd, buf + 4096 * slot, 4096, 0);
      reqs[slot].data = (void*)(uintptr_t)(next + 1);
      struct iocb* p = &reqs[slot];
      int r = io_submit(ctx, 1, &p);
      if (r == -EAGAIN) {
        reqs[slot].data = NULL;
        break;
      }
      CHECK(r == 1, "submit %d", r);
      if (r != 1) return 1;
      ++next;
      ++in_flight;
    }
    int n = user_reap(ctx, ev, 64, &ring_used);
    if (n == 0) {
      struct timespec ms = {0, 1000 * 1000};
      n = io_getevents(ctx, 1, 64, ev, &ms);
    }
    CHECK(n >= 0, "reap %d", n);
    if (n < 0) return 1;
    for (int i = 0; i < n; ++i) {
      struct iocb* c = (struct iocb*)ev[i].obj;
      uintptr_t id = (uintptr_t)ev[i].data;
      CHECK(id >= 1 && id <= kTotal && c->data == ev[i].data, "event names its iocb");
      CHECK(ev[i].res == 4096, "res %ld", (long)ev[i].res);
      seen[id - 1]++;
      c->data = NULL;
      --in_flight;
      ++done;
    }
  }
  int once = 1;
  for (int i = 0; i < kTotal; ++i) once &= seen[i] == 1;
  CHECK(once, "every request completed exactly once");
  printf("%d requests through a context of %d, reaped %s: each once\n", kTotal, kDepth,
         ring_used ? "from the kernel's ring in user space" : "through io_getevents (not a kernel ring)");

  /* 5. A descriptor closed after use: the request fails with EBADF, at io_submit (the kernel) or in its
   *    completion (the drop-in's engines, which remember descriptors), never reads another file. */
  {
    char p2[4200];
    snprintf(p2, sizeof(p2), "%s.closed", path);
    int tmp = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    unlink(p2);
    CHECK(tmp >= 0 && pwrite(tmp, buf, 4096, 0) == 4096, "scratch file");
    io_prep_pread(&cb, tmp, buf, 4096, 0);
    CHECK(io_submit(ctx, 1, cbs) == 1 && io_getevents(ctx, 1, 1, ev, NULL) == 1 && ev[0].res == 4096,
          "read before close");
    close(tmp);
    io_prep_pread(&cb, tmp, buf, 4096, 0);
    int r = io_submit(ctx, 1, cbs);
    if (r == 1) {
      CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1 && (long)ev[0].res == -EBADF, "completion %ld", (long)ev[0].res);
      r = io_submit(ctx, 1, cbs); /* asked about again: now refused at submission */
      CHECK(r == -EBADF, "second submit on the closed fd: %d", r);
    } else {
      CHECK(r == -EBADF, "submit on a closed fd: %d", r);
    }
    printf("a closed descriptor: EBADF\n");
    /* The number taken by another file with another access mode: a write on it is accepted. */
    int ro = open(p2, O_RDONLY | O_CREAT, 0644);
    io_prep_pread(&cb, ro, buf, 16, 0);
    CHECK(io_submit(ctx, 1, cbs) == 1 && io_getevents(ctx, 1, 1, ev, NULL) == 1, "read on the read-only fd");
    close(ro);
    int wo = open(p2, O_WRONLY);
    unlink(p2);
    CHECK(wo == ro, "the number is reused (%d, %d)", ro, wo);
    io_prep_pwrite(&cb, wo, buf, 16, 0);
    r = io_submit(ctx, 1, cbs);
    CHECK(r == 1, "write on the reused number: %d", r);
    if (r == 1) CHECK(io_getevents(ctx, 1, 1, ev, NULL) == 1 && ev[0].res == 16, "write res %ld", (long)ev[0].res);
    close(wo);
    printf("a reused descriptor number: taken for the file it is now\n");
  }

  /* 6. Submit without reaping until the context is full: io_submit says EAGAIN (the kernel's ring holds
   *    more than maxevents; ours at least that many), every accepted request completes once, and after
   *    reaping there is room again. */
  {
    io_context_t small = 0;
    CHECK(io_setup(4, &small) == 0, "io_setup(4)");
    static struct iocb fill[4096];
    int accepted = 0, r = 0;
    while (accepted < 4096) {
      io_prep_pread(&fill[accepted], fd, buf, 4096, 0);
      fill[accepted].data = (void*)(uintptr_t)(accepted + 1);
      struct iocb* p = &fill[accepted];
      r = io_submit(small, 1, &p);
      if (r != 1) break;
      ++accepted;
    }
    CHECK(r == -EAGAIN && accepted >= 4, "full after %d: %d", accepted, r);
    int back = 0;
    while (back < accepted) {
      int n = io_getevents(small, 1, 64, ev, NULL);
      CHECK(n > 0, "reap %d", n);
      if (n <= 0) break;
      for (int i = 0; i < n; ++i) CHECK((long)ev[i].res == 4096, "res %ld", (long)ev[i].res);
      back += n;
    }
    CHECK(back == accepted, "%d accepted, %d completed", accepted, back);
    struct iocb* p = &fill[0];
    io_prep_pread(p, fd, buf, 4096, 0);
    CHECK(io_submit(small, 1, &p) == 1 && io_getevents(small, 1, 1, ev, NULL) == 1, "room again");
    CHECK(io_destroy(small) == 0, "destroy");
    printf("a full context says EAGAIN; %d accepted, each completed once\n", accepted);
  }

  /* 7. io_destroy with requests in flight: it waits for them; nothing crashes. */
  for (int i = 0; i < 16; ++i) {
    io_prep_pread(&many[i], fd, buf + 4096 * i, 4096, 4096 * i);
    ptrs[i] = &many[i];
  }
  CHECK(io_submit(ctx, 16, ptrs) == 16, "submit before destroy");
  CHECK(io_destroy(ctx) == 0, "io_destroy with 16 in flight");
  printf("io_destroy with requests in flight: ok\n");

  /* 8. io_destroy while another thread waits in io_getevents with no timeout: the waiter returns. */
  {
    io_context_t idle = 0;
    CHECK(io_setup(4, &idle) == 0, "io_setup");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_forever, &idle) == 0, "thread");
    usleep(50 * 1000);
    CHECK(io_destroy(idle) == 0, "io_destroy with a waiter");
    void* ret = NULL;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    int j = pthread_timedjoin_np(t, &ret, &until);
    CHECK(j == 0, "the waiter returned after io_destroy (join: %d)", j);
    if (j == 0) printf("io_destroy wakes a waiting io_getevents: it returned %ld\n", (long)ret);
  }

  close(fd);
  close(efd);
  close(ep);
  free(buf);
  return failed;
}
