// A block server written with aiokit's coroutines (aiokit/coro.h): it listens
// on 127.0.0.1, and for each line "OFFSET LENGTH" a client sends it answers
// with LENGTH bytes of its data file read through the engine. The same loop
// runs a handful of clients that ask for random blocks and check what comes
// back, then the program ends: exit 0 when every answer was right.
//
// Usage: coro_block_server [DIR] [--engine=E] [--clients=N] [--requests=M]
// The data file is a temporary file in DIR (default /var/tmp), removed at
// the end. Exit 77 when the engine is refused here.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aiokit/aiokit.h"
#include "aiokit/coro.h"

namespace {

using aiokit::Buffer;
using aiokit::Result;
using aiokit::coro::EngineIo;
using aiokit::coro::Loop;
using aiokit::coro::Task;

constexpr size_t kFileSize = 4 << 20;

char Expected(uint64_t at) { return static_cast<char>((at * 7) ^ (at >> 12)); }

// Writes all of `data` to a non-blocking socket, waiting for room.
Task<bool> SendAll(Loop& loop, int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w > 0) {
      data += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno != EAGAIN) co_return false;
    if (!(co_await loop.Writable(fd)).ok()) co_return false;
  }
  co_return true;
}

// Reads exactly n bytes (false at the end of the stream or on an error).
Task<bool> RecvAll(Loop& loop, int fd, char* data, size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, data, n, 0);
    if (r > 0) {
      data += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0 || errno != EAGAIN) co_return false;
    if (!(co_await loop.Readable(fd)).ok()) co_return false;
  }
  co_return true;
}

// Reads one line ending in '\n' (at most 64 bytes).
Task<std::string> RecvLine(Loop& loop, int fd) {
  std::string line;
  char c = 0;
  while (line.size() < 64) {
    if (!co_await RecvAll(loop, fd, &c, 1)) co_return "";
    if (c == '\n') co_return line;
    line.push_back(c);
  }
  co_return "";
}

// One connection: requests until the client closes it.
Task<void> Serve(Loop& loop, EngineIo& io, int data_fd, int conn) {
  for (;;) {
    const std::string line = co_await RecvLine(loop, conn);
    char* end = nullptr;
    const uint64_t off = std::strtoull(line.c_str(), &end, 10);
    const uint64_t len = std::strtoull(end, &end, 10);
    if (line.empty() || *end != '\0' || len == 0 || len > (1 << 20)) break;
    Buffer b = *Buffer::Allocate(len);
    Result<size_t> got = co_await io.Read(data_fd, off, b);
    const std::string head = got.ok() ? "OK " + std::to_string(*got) + "\n"
                                      : "ERR " + got.status().ToString() + "\n";
    if (!co_await SendAll(loop, conn, head.data(), head.size())) break;
    if (got.ok() && !co_await SendAll(loop, conn, b.data(), *got)) break;
  }
  ::close(conn);
}

Task<void> Accept(Loop& loop, EngineIo& io, int data_fd, int listener,
                  int connections) {
  for (int i = 0; i < connections; ++i) {
    int conn = -1;
    while ((conn = ::accept4(listener, nullptr, nullptr,
                             SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
      if (errno != EAGAIN || !(co_await loop.Readable(listener)).ok()) {
        co_return;
      }
    }
    loop.Spawn(Serve(loop, io, data_fd, conn));
  }
}

// A client: `requests` random blocks, each checked.
Task<std::string> Client(Loop& loop, uint16_t port, int requests,
                         unsigned seed) {
  const int fd =
      ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    const int err = errno;
    ::close(fd);
    co_return aiokit::Status::FromErrno(err, "connect to 127.0.0.1").ToString();
  }
  (void)co_await loop.Writable(fd);
  std::mt19937_64 rng(seed);
  std::string error;
  std::vector<char> data;
  for (int i = 0; i < requests && error.empty(); ++i) {
    const uint64_t len = 512 + rng() % 8192;
    const uint64_t off = rng() % (kFileSize - len);
    const std::string ask =
        std::to_string(off) + " " + std::to_string(len) + "\n";
    if (!co_await SendAll(loop, fd, ask.data(), ask.size())) {
      error = "send failed";
      break;
    }
    const std::string head = co_await RecvLine(loop, fd);
    if (head != "OK " + std::to_string(len)) {
      error = "answer \"";
      error += head;
      error += "\" to ";
      error += ask;
      break;
    }
    data.resize(len);
    if (!co_await RecvAll(loop, fd, data.data(), len)) {
      error = "short answer";
      break;
    }
    for (uint64_t k = 0; k < len; ++k) {
      if (data[k] != Expected(off + k)) {
        error = "wrong byte at " + std::to_string(off + k);
        break;
      }
    }
  }
  ::close(fd);
  co_return error;
}

Task<std::vector<std::string>> Main(Loop& loop, EngineIo& io, int data_fd,
                                    int listener, uint16_t port, int clients,
                                    int requests) {
  loop.Spawn(Accept(loop, io, data_fd, listener, clients));
  std::vector<Task<std::string>> tasks;
  tasks.reserve(static_cast<size_t>(clients));
  for (int c = 0; c < clients; ++c) {
    tasks.push_back(Client(loop, port, requests, static_cast<unsigned>(c)));
  }
  co_return co_await aiokit::coro::WhenAll(std::move(tasks));
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/var/tmp";
  aiokit::EngineOptions eo;
  int clients = 8;
  int requests = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = a.substr(a.find('=') + 1);
    if (a.rfind("--engine=", 0) == 0) {
      Result<aiokit::EngineKind> k = aiokit::ParseEngineKind(v);
      if (!k.ok()) {
        std::fprintf(stderr, "%s\n", k.status().ToString().c_str());
        return 2;
      }
      eo.kind = *k;
    } else if (a.rfind("--clients=", 0) == 0) {
      clients = static_cast<int>(std::strtol(v.c_str(), nullptr, 10));
    } else if (a.rfind("--requests=", 0) == 0) {
      requests = static_cast<int>(std::strtol(v.c_str(), nullptr, 10));
    } else {
      dir = a;
    }
  }
  if (clients <= 0 || requests <= 0) {
    std::fprintf(stderr, "--clients and --requests must be positive\n");
    return 2;
  }
  Result<aiokit::File> file = aiokit::File::CreateTemporary(dir, 0);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().ToString().c_str());
    return 1;
  }
  std::vector<char> content(kFileSize);
  for (size_t i = 0; i < kFileSize; ++i) content[i] = Expected(i);
  if (::pwrite(file->fd(), content.data(), kFileSize, 0) !=
      static_cast<ssize_t>(kFileSize)) {
    std::perror("pwrite");
    return 1;
  }
  Result<std::unique_ptr<aiokit::Engine>> engine = aiokit::MakeEngine(eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "skipped: %s\n", engine.status().ToString().c_str());
    return 77;
  }
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  if (!loop.ok()) {
    std::fprintf(stderr, "%s\n", loop.status().ToString().c_str());
    return 1;
  }
  Result<std::unique_ptr<EngineIo>> io = EngineIo::Create(**loop, **engine);
  if (!io.ok()) {
    std::fprintf(stderr, "%s\n", io.status().ToString().c_str());
    return 1;
  }
  const int listener =
      ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(addr);
  if (listener < 0 ||
      ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 64) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    std::perror("listen on 127.0.0.1");
    return 1;
  }
  const std::vector<std::string> errors =
      (*loop)->Run(Main(**loop, **io, file->fd(), listener,
                        ntohs(addr.sin_port), clients, requests));
  int rc = 0;
  for (size_t c = 0; c < errors.size(); ++c) {
    if (!errors[c].empty()) {
      std::fprintf(stderr, "client %zu: %s\n", c, errors[c].c_str());
      rc = 1;
    }
  }
  // The connections' handlers end as the clients close; let them finish.
  for (int i = 0; i < 100 && (*io)->in_flight() != 0; ++i) {
    (void)(*loop)->RunOnce(std::chrono::milliseconds(10));
  }
  (void)(*loop)->RunOnce(std::chrono::milliseconds(10));
  std::printf(
      "coro_block_server engine=%s: %d clients x %d requests %s, %llu "
      "submissions\n",
      (*engine)->Name(), clients, requests, rc == 0 ? "ok" : "FAILED",
      static_cast<unsigned long long>((*io)->submit_calls()));
  io->reset();
  loop->reset();
  ::close(listener);
  return rc;
}
