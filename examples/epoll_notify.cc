// An epoll loop woken by the engine's eventfd: submit reads, sleep in
// epoll_wait, and reap only when the kernel says completions are ready. The
// shape of an event-driven server that does file I/O.
//
//   epoll_notify [directory]      (default /var/tmp)

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "aiokit/aiokit.h"

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/var/tmp";
  auto file = aiokit::File::CreateTemporary(dir, 0);
  if (!file.ok()) {
    std::fprintf(stderr, "epoll_notify: %s\n",
                 file.status().ToString().c_str());
    return 1;
  }
  constexpr size_t kReqs = 64, kLen = 4096;
  std::vector<char> data(kReqs * kLen);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>(i * 31 + 7);
  if (::pwrite(file->fd(), data.data(), data.size(), 0) !=
      static_cast<ssize_t>(data.size())) {
    std::perror("epoll_notify: pwrite");
    return 1;
  }

  aiokit::EngineOptions options;
  options.queue_depth = kReqs;
  auto engine = aiokit::MakeEngine(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "epoll_notify: %s\n",
                 engine.status().ToString().c_str());
    return 1;
  }
  aiokit::Result<int> efd = (*engine)->NotifyFd();
  if (!efd.ok()) {
    std::fprintf(stderr, "epoll_notify: %s\n", efd.status().ToString().c_str());
    return 1;
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = *efd;
  if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, *efd, &ev) != 0) {
    std::perror("epoll_notify: epoll");
    return 1;
  }

  std::vector<char> back(data.size());
  std::vector<aiokit::Request> reqs(kReqs);
  std::vector<aiokit::Request*> batch;
  for (size_t i = 0; i < kReqs; ++i) {
    reqs[i].PrepRead(*file, back.data() + i * kLen, kLen, i * kLen);
    batch.push_back(&reqs[i]);
  }
  aiokit::SubmitResult sr = (*engine)->Submit(batch);
  if (sr.accepted != kReqs) {
    std::fprintf(stderr, "epoll_notify: %s\n", sr.status.ToString().c_str());
    return 1;
  }

  size_t done = 0, wakeups = 0;
  std::vector<aiokit::Request*> out(kReqs);
  while (done < kReqs) {
    epoll_event got[1];
    const int n = ::epoll_wait(ep, got, 1, 10000);
    if (n <= 0) {
      std::fprintf(stderr,
                   "epoll_notify: no wake-up in 10 s (%zu of %zu done)\n", done,
                   kReqs);
      return 1;
    }
    ++wakeups;
    uint64_t count = 0;
    if (::read(*efd, &count, sizeof(count)) != sizeof(count))
      continue;  // another reader took it
    // The counter says how many completed since the last read; collect them
    // without waiting.
    auto reaped = (*engine)->Poll(out);
    if (!reaped.ok()) {
      std::fprintf(stderr, "epoll_notify: %s\n",
                   reaped.status().ToString().c_str());
      return 1;
    }
    for (size_t i = 0; i < *reaped; ++i) {
      if (out[i]->rval != static_cast<int64_t>(kLen)) {
        std::fprintf(stderr, "epoll_notify: %s\n",
                     aiokit::Describe(*out[i]).c_str());
        return 1;
      }
    }
    done += *reaped;
  }
  ::close(ep);
  if (back != data) {
    std::fprintf(stderr, "epoll_notify: data read back differs\n");
    return 1;
  }
  std::printf("epoll_notify: %zu reads completed in %zu epoll wake-ups on %s\n",
              done, wakeups, (*engine)->Name());
  return 0;
}
