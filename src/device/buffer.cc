#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "aiokit/device.h"
#include "device/buffer_control.h"
#include "util/io_memory.h"

namespace aiokit {
namespace device_internal {

void BufferControl::Unref() noexcept {
  // acq_rel: the last owner sees every write made through other handles
  // before it frees or reuses the memory (the release half pairs with the
  // acquire half of the final decrement).
  if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  switch (kind) {
    case Kind::kPooled:
      pool->Return(this);
      return;
    case Kind::kHeap:
      std::free(heap);
      delete this;
      return;
    case Kind::kWrapped:
      delete this;
      return;
  }
}

Result<BufferPool*> BufferPool::Create(size_t count, size_t size,
                                       size_t alignment) {
  if (count > 32767) {
    return Status::Error(Errc::kInvalidArgument,
                         "buffer pool of " + std::to_string(count) +
                             " buffers: at most 32767 (a registered buffer's "
                             "index is 16 bits)");
  }
  if (count == 0 || size == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "buffer pool of " + std::to_string(count) +
                             " buffers of " + std::to_string(size) +
                             " bytes: both must be at least 1");
  }
  if (alignment == 0) alignment = kDefaultBufferAlignment;
  if ((alignment & (alignment - 1)) != 0) {
    return Status::Error(Errc::kInvalidArgument, "buffer pool alignment " +
                                                     std::to_string(alignment) +
                                                     ": not a power of two");
  }
  const size_t stride = (size + alignment - 1) & ~(alignment - 1);
  if (stride < size || stride > SIZE_MAX / count) {
    return Status::FromErrno(ENOMEM, "buffer pool of " + std::to_string(count) +
                                         " x " + std::to_string(size) +
                                         " bytes");
  }
  Result<AlignedBuffer> region =
      AlignedBuffer::Allocate(stride * count, alignment);
  if (!region.ok()) return region.status();
  auto* pool = new BufferPool();
  pool->region_ = std::move(*region);
  pool->size_ = size;
  pool->stride_ = stride;
  pool->iovecs_.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    pool->iovecs_.push_back(iovec{pool->region_.data() + i * stride, size});
  }
  pool->controls_ = std::make_unique<BufferControl[]>(count);
  pool->free_.reserve(count);
  for (size_t i = count; i-- > 0;) {
    BufferControl& c = pool->controls_[i];
    c.kind = BufferControl::Kind::kPooled;
    c.index = static_cast<int16_t>(i);
    c.pool = pool;
    c.refs.store(0, std::memory_order_relaxed);
    pool->free_.push_back(static_cast<int16_t>(i));
  }
  return pool;
}

BufferControl* BufferPool::Take() noexcept {
  int16_t index = -1;
  {
    std::lock_guard lock(mu_);
    if (free_.empty()) return nullptr;
    index = free_.back();
    free_.pop_back();
  }
  // The slot keeps the pool alive while it is out.
  refs_.fetch_add(1, std::memory_order_relaxed);
  BufferControl* c = &controls_[index];
  c->refs.store(1, std::memory_order_relaxed);
  return c;
}

void BufferPool::Return(BufferControl* c) noexcept {
  {
    std::lock_guard lock(mu_);
    free_.push_back(c->index);
  }
  Unref();
}

void BufferPool::Unref() noexcept {
  // acq_rel pairs the last slot's return with the deleting thread.
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

}  // namespace device_internal

Buffer::Buffer(const Buffer& other) noexcept
    : control_(other.control_), data_(other.data_), size_(other.size_) {
  if (control_ != nullptr) control_->Ref();
}

Buffer& Buffer::operator=(const Buffer& other) noexcept {
  if (this != &other) {
    if (other.control_ != nullptr) other.control_->Ref();
    if (control_ != nullptr) control_->Unref();
    control_ = other.control_;
    data_ = other.data_;
    size_ = other.size_;
  }
  return *this;
}

Buffer::Buffer(Buffer&& other) noexcept
    : control_(std::exchange(other.control_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    if (control_ != nullptr) control_->Unref();
    control_ = std::exchange(other.control_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Buffer::~Buffer() {
  if (control_ != nullptr) control_->Unref();
}

Result<Buffer> Buffer::Allocate(size_t length, size_t alignment) {
  if (alignment == 0) alignment = kDefaultBufferAlignment;
  if ((alignment & (alignment - 1)) != 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "Buffer::Allocate(length " + std::to_string(length) +
                             ", alignment " + std::to_string(alignment) +
                             "): alignment must be a power of two");
  }
  if (length == 0) return Buffer();
  if (alignment < alignof(std::max_align_t)) {
    alignment = alignof(std::max_align_t);
  }
  void* p = internal::AllocateIoMemory(length, alignment);
  if (p == nullptr) {
    return Status::FromErrno(
        ENOMEM, "Buffer::Allocate(length " + std::to_string(length) + ")");
  }
  auto* c = new device_internal::BufferControl();
  c->kind = device_internal::BufferControl::Kind::kHeap;
  c->heap = p;
  return Buffer(c, static_cast<char*>(p), length);
}

Buffer Buffer::Wrap(void* data, size_t length,
                    std::shared_ptr<void> keepalive) {
  auto* c = new device_internal::BufferControl();
  c->kind = device_internal::BufferControl::Kind::kWrapped;
  c->keepalive = std::move(keepalive);
  return Buffer(c, static_cast<char*>(data), length);
}

Buffer Buffer::Slice(size_t offset, size_t length) const noexcept {
  if (control_ != nullptr) control_->Ref();
  return Buffer(control_, data_ + offset, length);
}

int16_t Buffer::registered_index() const noexcept {
  return control_ != nullptr &&
                 control_->kind == device_internal::BufferControl::Kind::kPooled
             ? control_->index
             : int16_t{-1};
}

uint32_t Buffer::use_count() const noexcept {
  return control_ != nullptr ? control_->refs.load(std::memory_order_relaxed)
                             : 0;
}

}  // namespace aiokit
