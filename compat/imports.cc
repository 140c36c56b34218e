#include "imports.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace aiokit::compat {
namespace {

struct Search {
  const char* name;
  uintptr_t self;  // this library's load address: its own symbols do not count
  bool found;
};

// A dynamic-section address: glibc has relocated most of them by the time the
// program runs, but not on every architecture (nor the vDSO's).
uintptr_t Address(const dl_phdr_info* info, ElfW(Addr) value) {
  return value < info->dlpi_addr ? value + info->dlpi_addr : value;
}

// True when one of `count` relocations at `relocs` names `s->name`, undefined.
template <typename Rel>
bool Names(const Rel* relocs, size_t count, const ElfW(Sym) * symtab,
           const char* strtab, const Search* s) {
  for (size_t i = 0; i < count; ++i) {
#if __SIZEOF_POINTER__ == 8
    const size_t sym = ELF64_R_SYM(relocs[i].r_info);
#else
    const size_t sym = ELF32_R_SYM(relocs[i].r_info);
#endif
    if (sym == 0) continue;
    const ElfW(Sym)& entry = symtab[sym];
    if (entry.st_shndx == SHN_UNDEF &&
        std::strcmp(strtab + entry.st_name, s->name) == 0) {
      return true;
    }
  }
  return false;
}

int Visit(dl_phdr_info* info, size_t /*size*/, void* arg) {
  auto* s = static_cast<Search*>(arg);
  if (info->dlpi_addr == s->self) return 0;
  const ElfW(Dyn)* dyn = nullptr;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
      dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr +
                                               info->dlpi_phdr[i].p_vaddr);
    }
  }
  if (dyn == nullptr) return 0;
  uintptr_t strtab = 0, symtab = 0, rela = 0, rel = 0, jmprel = 0;
  size_t relasz = 0, relsz = 0, pltrelsz = 0;
  ElfW(Sxword) pltrel = DT_RELA;
  for (; dyn->d_tag != DT_NULL; ++dyn) {
    switch (dyn->d_tag) {
      case DT_STRTAB:
        strtab = Address(info, dyn->d_un.d_ptr);
        break;
      case DT_SYMTAB:
        symtab = Address(info, dyn->d_un.d_ptr);
        break;
      case DT_RELA:
        rela = Address(info, dyn->d_un.d_ptr);
        break;
      case DT_RELASZ:
        relasz = dyn->d_un.d_val;
        break;
      case DT_REL:
        rel = Address(info, dyn->d_un.d_ptr);
        break;
      case DT_RELSZ:
        relsz = dyn->d_un.d_val;
        break;
      case DT_JMPREL:
        jmprel = Address(info, dyn->d_un.d_ptr);
        break;
      case DT_PLTRELSZ:
        pltrelsz = dyn->d_un.d_val;
        break;
      case DT_PLTREL:
        pltrel = static_cast<ElfW(Sxword)>(dyn->d_un.d_val);
        break;
      default:
        break;
    }
  }
  if (strtab == 0 || symtab == 0) return 0;
  const auto* syms = reinterpret_cast<const ElfW(Sym)*>(symtab);
  const auto* strs = reinterpret_cast<const char*>(strtab);
  bool found = false;
  if (rela != 0) {
    found |= Names(reinterpret_cast<const ElfW(Rela)*>(rela),
                   relasz / sizeof(ElfW(Rela)), syms, strs, s);
  }
  if (rel != 0) {
    found |= Names(reinterpret_cast<const ElfW(Rel)*>(rel),
                   relsz / sizeof(ElfW(Rel)), syms, strs, s);
  }
  if (jmprel != 0) {
    if (pltrel == DT_RELA) {
      found |= Names(reinterpret_cast<const ElfW(Rela)*>(jmprel),
                     pltrelsz / sizeof(ElfW(Rela)), syms, strs, s);
    } else {
      found |= Names(reinterpret_cast<const ElfW(Rel)*>(jmprel),
                     pltrelsz / sizeof(ElfW(Rel)), syms, strs, s);
    }
  }
  s->found = found;
  return found ? 1 : 0;  // non-zero ends the walk
}

}  // namespace

bool ProcessImports(const char* name) noexcept {
  Dl_info self{};
  Search s{name, 0, false};
  if (dladdr(reinterpret_cast<void*>(&ProcessImports), &self) != 0) {
    s.self = reinterpret_cast<uintptr_t>(self.dli_fbase);
  }
  dl_iterate_phdr(&Visit, &s);
  return s.found;
}

}  // namespace aiokit::compat
