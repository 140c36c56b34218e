// `aiokit bench`'s targets: the file or block device a job (or one clone)
// runs on. Opened or created, its region settled and checked against the
// file's size and O_DIRECT alignment, laid out for what the job reads, and
// removed again, if the run created it, when the run does not start.

#ifndef AIOKIT_TOOLS_AIOKIT_TARGET_H_
#define AIOKIT_TOOLS_AIOKIT_TARGET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/file.h"
#include "aiokit/status.h"
#include "job.h"

namespace aiokit::tool {

// The file a job (or one clone) runs on, or (nrfiles) the files.
struct Target {
  File file;
  std::string shown;        // the path as printed
  std::string remove_path;  // non-empty: we created this named file
  std::string unlink_path;  // non-empty: removed after the run (unlink)
  bool block_device = false;
  bool verify_layout = false;  // the region was laid out as verify blocks of
                               // generation 0 by this run
  uint64_t offset = 0;         // the job's region: [offset, offset + size)
  uint64_t size = 0;           // a multiple of the smallest block size
  // nrfiles > 1: the clone's other files, each with a region of file_size
  // bytes at `offset`; `size` is then the sum over every file, and Map
  // spreads it over them: `turn` bytes of one file, then the next (0: each
  // file whole, in order).
  struct Extra {
    File file;
    std::string remove_path, unlink_path;
  };
  std::vector<Extra> extra;
  uint64_t file_size = 0;
  uint64_t turn = 0;

  // Where byte `off` of the region lives: a file and its offset there.
  // REQUIRES: off < size.
  struct Spot {
    const File* file;
    uint64_t at;
  };
  [[nodiscard]] Spot Map(uint64_t off) const {
    if (extra.empty()) return {&file, offset + off};
    const uint64_t files = extra.size() + 1;
    uint64_t f = 0, in = 0;
    if (turn == 0) {
      f = off / file_size;
      in = off % file_size;
    } else {
      const uint64_t c = off / turn;
      f = c % files;
      in = c / files * turn + off % turn;
    }
    return {f == 0 ? &file : &extra[f - 1].file, offset + in};
  }
};

// Closes and removes the file if this run created it; a no-op otherwise.
void RemoveCreated(Target& t);

// Owns every target of a run, so that a refused run removes what it created.
struct Targets {
  std::vector<std::unique_ptr<Target>> all;
  ~Targets();
  // Files a finished run created stay, as fio leaves them, except those of
  // jobs with unlink.
  void Keep();
};

// The path of clone `clone`'s file of a job with NamedFiles(): its
// directory (round robin over directory's list) and filename_format's name;
// creates the directories a format's path names.
// On failure: a UsageError naming the directory that could not be made.
[[nodiscard]] Result<std::string> JobFilePath(const JobOptions& o,
                                              unsigned clone,
                                              unsigned filenum = 0);

// Opens (or creates) a job's target, settles its region, checks alignment,
// lays out what the job will read and drops cached pages. `job` follows the
// option in messages (" (job NAME)", or empty).
// REQUIRES: `o` passed ValidateJob.
// On failure: a UsageError; a file it created is named in t.remove_path, for
// RemoveCreated.
[[nodiscard]] Status OpenTarget(const JobOptions& o, const std::string& job,
                                Target& t);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_TARGET_H_
