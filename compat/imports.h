// Which symbols the process's loaded objects take from a shared library.

#ifndef AIOKIT_COMPAT_IMPORTS_H_
#define AIOKIT_COMPAT_IMPORTS_H_

namespace aiokit::compat {

// True when an object loaded in this process, other than the one this
// function is in, refers to the dynamic symbol `name` without defining it (a
// relocation names it: a call through the PLT, or its address taken). A call
// made with syscall(2), or through a pointer from dlsym, is not a reference.
// Reads the loaded objects' dynamic sections (dl_iterate_phdr); no system
// call. Thread safety: safe to call from any thread.
bool ProcessImports(const char* name) noexcept;

}  // namespace aiokit::compat

#endif  // AIOKIT_COMPAT_IMPORTS_H_
