#include "info.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "aiokit/aiokit.h"

namespace aiokit::tool {
namespace {

using Json = nlohmann::ordered_json;

std::string Bytes(uint64_t v) {
  if (v == UINT64_MAX) return "unlimited";
  return std::to_string(v / 1024) + " KiB";
}

const char* SourceName(AlignmentSource s) {
  switch (s) {
    case AlignmentSource::kStatx:
      return "statx STATX_DIOALIGN";
    case AlignmentSource::kBlockDevice:
      return "the device's logical block size";
    case AlignmentSource::kDefault:
      return "default (nothing reported)";
  }
  return "unknown";
}

Json FeaturesJson(const std::vector<Feature>& fs) {
  Json j = Json::object();
  for (const Feature& f : fs) {
    Json one;
    one["available"] = f.available;
    if (!f.detail.empty()) one["detail"] = f.detail;
    j[f.name] = one;
  }
  return j;
}

std::string FeaturesText(const std::vector<Feature>& fs) {
  std::string out;
  for (const Feature& f : fs) {
    if (!out.empty()) out += ", ";
    out += f.name + (f.available ? " yes" : " no (" + f.detail + ")");
  }
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += ' ';
    out += s;
  }
  return out;
}

}  // namespace

int RunInfo(const InfoOptions& o, std::ostream& out, std::ostream& err) {
  if (o.output_format != "normal" && o.output_format != "json") {
    err << "aiokit info: --output-format=" << o.output_format
        << ": expected normal or json\n";
    return 2;
  }
  PathInfo path;
  if (!o.filename.empty()) {
    path = ProbePath(o.filename);
    if (!path.error.ok()) {
      err << "aiokit info: --filename=" << o.filename << ": "
          << path.error.ToString() << "\n";
      return 2;
    }
  }
  const SystemInfo s = ProbeSystem();

  if (o.output_format == "json") {
    Json j;
    j["aiokit"] = AIOKIT_VERSION_STRING;
    j["kernel"] = s.kernel;
    j["machine"] = s.machine;
    j["auto_choice"] = s.auto_choice == EngineKind::kDefault
                           ? "none"
                           : EngineKindName(s.auto_choice);
    Json engines = Json::array();
    for (const EngineProbe& e : s.engines) {
      Json one;
      one["engine"] = EngineKindName(e.kind);
      one["built"] = e.built;
      one["allowed"] = e.allowed;
      if (!e.allowed) one["reason"] = e.reason.ToString();
      if (e.allowed && !e.caps.fallbacks.empty()) {
        one["fallbacks"] = e.caps.fallbacks;
      }
      engines.push_back(one);
    }
    j["engines"] = engines;
    Json u;
    u["available"] = s.io_uring.available;
    if (!s.io_uring.available) u["reason"] = s.io_uring.reason.ToString();
    u["features"] = s.io_uring.features;
    u["setup_flags"] = FeaturesJson(s.io_uring.setup);
    u["registration"] = FeaturesJson(s.io_uring.registration);
    u["opcodes"] = s.io_uring.opcodes;
    u["kernel.io_uring_disabled"] = s.io_uring_disabled;
    j["io_uring"] = u;
    Json aio;
    aio["fs.aio-max-nr"] = s.aio_max_nr;
    aio["fs.aio-nr"] = s.aio_nr;
    j["linux_aio"] = aio;
    Json lim;
    lim["memlock_soft_bytes"] =
        s.memlock_soft == UINT64_MAX ? Json("unlimited") : Json(s.memlock_soft);
    lim["memlock_hard_bytes"] =
        s.memlock_hard == UINT64_MAX ? Json("unlimited") : Json(s.memlock_hard);
    j["limits"] = lim;
    if (!o.filename.empty()) {
      Json p;
      p["path"] = path.path;
      p["block_device"] = path.is_block_device;
      p["o_direct"] = path.direct_ok;
      if (!path.direct_ok) {
        p["o_direct_error"] = path.direct_error.ToString();
      } else {
        p["dio_mem_align"] = path.direct.alignment.memory;
        p["dio_offset_align"] = path.direct.alignment.offset;
        p["alignment_source"] = SourceName(path.direct.source);
        p["iopoll"] = path.iopoll.available;
        if (!path.iopoll.available) p["iopoll_detail"] = path.iopoll.detail;
      }
      j["path"] = p;
    }
    out << j.dump(2) << "\n";
    return 0;
  }

  out << "aiokit " << AIOKIT_VERSION_STRING << " on Linux " << s.kernel << " ("
      << s.machine << ")\n";
  out << "engines (auto picks "
      << (s.auto_choice == EngineKind::kDefault ? "none"
                                                : EngineKindName(s.auto_choice))
      << "):\n";
  for (const EngineProbe& e : s.engines) {
    out << "  " << EngineKindName(e.kind) << ": "
        << (e.built ? "built" : "not built") << ", "
        << (e.allowed ? "allowed" : "refused: " + e.reason.ToString()) << "\n";
    if (e.allowed) {
      for (const std::string& f : e.caps.fallbacks) {
        out << "      (" << f << ")\n";
      }
    }
  }
  out << "io_uring:\n";
  if (!s.io_uring.available) {
    out << "  unavailable: " << s.io_uring.reason.ToString() << "\n";
  } else {
    out << "  features: " << Join(s.io_uring.features) << "\n";
    out << "  setup flags: " << FeaturesText(s.io_uring.setup) << "\n";
    out << "  registration: " << FeaturesText(s.io_uring.registration) << "\n";
    out << "  opcodes (" << s.io_uring.opcodes.size()
        << "): " << Join(s.io_uring.opcodes) << "\n";
  }
  out << "  kernel.io_uring_disabled: "
      << (s.io_uring_disabled.empty() ? "(not present)" : s.io_uring_disabled)
      << "\n";
  out << "linux-aio:\n  fs.aio-max-nr: " << s.aio_max_nr
      << ", fs.aio-nr (in use): " << s.aio_nr << "\n";
  out << "limits:\n  RLIMIT_MEMLOCK: " << Bytes(s.memlock_soft) << " (hard "
      << Bytes(s.memlock_hard) << ")\n";
  if (!o.filename.empty()) {
    out << "path " << path.path
        << (path.is_block_device ? " (block device)" : "") << ":\n";
    if (!path.direct_ok) {
      out << "  O_DIRECT: no: " << path.direct_error.ToString() << "\n";
    } else {
      out << "  O_DIRECT: yes; alignment: memory "
          << path.direct.alignment.memory << ", offset and length "
          << path.direct.alignment.offset << " (from "
          << SourceName(path.direct.source) << ")\n";
      out << "  polled I/O (io_uring IOPOLL, fio --hipri): "
          << (path.iopoll.available ? "yes" : "no: " + path.iopoll.detail)
          << "\n";
    }
  }
  return 0;
}

}  // namespace aiokit::tool
