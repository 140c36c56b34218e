// A batch of mixed reads and writes through BlueStore's interface (aio_t /
// aio_queue_t), written the way Ceph's KernelDevice uses it: only the namespace
// differs from code written against BlueStore's aio.h.
//
//   bluestore_batch [directory]      (default /var/tmp)

#include <fcntl.h>

#include <cstdio>
#include <list>
#include <string>

#include "aiokit/bluestore.h"
#include "aiokit/file.h"

using aiokit::bluestore::aio_queue_t;
using aiokit::bluestore::aio_t;
using aiokit::bluestore::bufferlist;

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/var/tmp";
  auto file = aiokit::File::CreateTemporary(dir, 0);
  if (!file.ok()) {
    std::fprintf(stderr, "bluestore_batch: %s\n",
                 file.status().ToString().c_str());
    return 1;
  }
  const int fd = file->fd();

  aio_queue_t queue(64);
  if (int r = queue.init(); r < 0) {
    std::fprintf(stderr, "bluestore_batch: init: %s\n",
                 queue.last_error().ToString().c_str());
    return 1;
  }

  // Eight 4 KiB writes, block i filled with the letter 'a' + i.
  std::list<aio_t> writes;
  for (int i = 0; i < 8; ++i) {
    bufferlist bl;
    const std::string block(4096, static_cast<char>('a' + i));
    bl.append(block.data(), block.size());
    writes.emplace_back(nullptr, fd);
    aio_t& aio = writes.back();
    bl.prepare_iov(&aio.iov);
    aio.bl.claim_append(bl);
    aio.pwritev(static_cast<uint64_t>(i) * 4096, 4096);
  }
  int retries = 0;
  int ioc = 0;  // stands in for BlueStore's IOContext
  int r = queue.submit_batch(writes.begin(), writes.end(), 8, &ioc, &retries);
  if (r != 8) {
    std::fprintf(stderr, "bluestore_batch: submit_batch: %d: %s\n", r,
                 queue.last_error().ToString().c_str());
    return 1;
  }
  aio_t* done[16];
  for (int got = 0; got < 8;) {
    const int n = queue.get_next_completed(5000, done, 16);
    if (n <= 0) {
      std::fprintf(stderr, "bluestore_batch: get_next_completed: %d\n", n);
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      if (done[i]->get_return_value() != 4096) {
        std::fprintf(stderr, "bluestore_batch: write: %s\n",
                     aiokit::Describe(*done[i]).c_str());
        return 1;
      }
    }
    got += n;
  }

  // Then a mixed batch: reads of the even blocks, rewrites of the odd ones with
  // upper case.
  std::list<aio_t> mixed;
  for (int i = 0; i < 8; ++i) {
    mixed.emplace_back(nullptr, fd);
    aio_t& aio = mixed.back();
    if (i % 2 == 0) {
      aio.pread(static_cast<uint64_t>(i) * 4096, 4096);
    } else {
      const std::string block(4096, static_cast<char>('A' + i));
      aio.bl.append(block.data(), block.size());
      aio.bl.prepare_iov(&aio.iov);
      aio.pwritev(static_cast<uint64_t>(i) * 4096, 4096);
    }
  }
  r = queue.submit_batch(mixed.begin(), mixed.end(), 8, &ioc, &retries);
  if (r != 8) {
    std::fprintf(stderr, "bluestore_batch: submit_batch: %d: %s\n", r,
                 queue.last_error().ToString().c_str());
    return 1;
  }
  for (int got = 0; got < 8;) {
    const int n = queue.get_next_completed(5000, done, 16);
    if (n <= 0) return 1;
    got += n;
  }
  int i = 0;
  for (aio_t& aio : mixed) {
    if (aio.get_return_value() != 4096 || aio.priv != &ioc) {
      std::fprintf(stderr, "bluestore_batch: %s\n",
                   aiokit::Describe(aio).c_str());
      return 1;
    }
    if (i % 2 == 0) {
      char c = 0;
      aio.bl.copy_out(4095, 1, &c);
      if (c != static_cast<char>('a' + i)) {
        std::fprintf(stderr, "bluestore_batch: block %d read back '%c'\n", i,
                     c);
        return 1;
      }
    }
    ++i;
  }
  queue.shutdown();
  std::printf(
      "bluestore_batch: 8 writes, then 4 reads + 4 writes in one batch, all "
      "checked (%d retries) on %s\n",
      retries, queue.engine()->Name());
  return 0;
}
