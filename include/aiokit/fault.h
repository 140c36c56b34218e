// aiokit: a fault-injecting engine (like LevelDB's fault-injection Env).
//
// MakeFaultInjectingEngine wraps any engine. Every call goes through to it,
// and on the way the wrapper injects, at random with the probabilities in a
// FaultSpec, what a storage engine must survive:
//   - submission: a Submit call that takes nothing (EAGAIN beyond the retry
//     policy: kQueueFull, accepted 0) or only a prefix of the batch (a partial
//     submission: kQueueFull, accepted < size);
//   - completion: a read or write that completes short, -EIO, -ENOSPC (writes
//     and fsyncs), a completion held back for a while (delayed), one handed
//     out after completions that came later (reordered), and an engine that
//     delivers nothing for a while (stalled).
// The I/O itself is done by the wrapped engine; an injected result replaces
// the real one (a write reported as failed may have reached the file). The
// contract of engine.h still holds: every accepted request completes exactly
// once, through Reap. FaultStats counts what was injected, so that a test can
// check that every fault it saw was injected and every injected fault seen.
//
// Completion callbacks: the wrapper delivers them itself (CompletionDelivery,
// given to MakeFaultInjectingEngine), from its Reap or from a completion thread
// of its own, after the faults; the inner engine must have none of its own
// (its callbacks would bypass the faults). NotifyFd is refused when
// completions may be held back (delay, reorder, stall): the eventfd would
// announce completions Reap does not return yet, and say nothing when they are
// released.
//
// From the command line: `aiokit bench --inject=SPEC` (see ParseFaultSpec).

#ifndef AIOKIT_FAULT_H_
#define AIOKIT_FAULT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "aiokit/engine.h"
#include "aiokit/engine_wrapper.h"
#include "aiokit/status.h"

namespace aiokit {

// Probabilities are per Submit call (eagain, partial), per completion (short,
// eio, enospc, delay, reorder) and per Reap call (stall), each in [0, 1); 0
// turns the fault off.
struct FaultSpec {
  double eagain = 0;
  double partial = 0;
  double short_io = 0;  // reads and writes that transferred bytes
  double eio = 0;       // any request the engine ran
  double enospc = 0;    // writes and fsyncs
  double delay = 0;
  std::chrono::microseconds delay_for{200};
  // Handed out behind a later completion, or after reorder_for at most.
  double reorder = 0;
  std::chrono::microseconds reorder_for{1000};
  double stall = 0;
  std::chrono::microseconds stall_for{2000};
  // Seed of the random choices; 0 picks one (FaultSpecString shows it). One
  // generator serves every fault: the same seed and the same calls from one
  // thread replay the same submission faults as long as nothing is drawn for
  // completions (whose number depends on how the engine batches them).
  uint64_t seed = 0;

  [[nodiscard]] bool HoldsCompletions() const noexcept {
    return delay > 0 || reorder > 0 || stall > 0;
  }
};

// "eagain=0.01,partial=0.05,short=0.01,eio=0.001,enospc=0.001,
//  delay=0.01:200us,reorder=0.01,stall=0.001:2ms,seed=42" (any subset, any
// order; durations in ns, us, ms or s). Errors name the item and the rule.
Result<FaultSpec> ParseFaultSpec(std::string_view text);
// The spec in the same syntax, with its seed.
std::string FaultSpecString(const FaultSpec& spec);

// What was injected, counted as it happened.
struct FaultStats {
  uint64_t submit_calls = 0;  // Submit calls seen
  uint64_t accepted = 0;      // requests accepted (the inner engine's count)
  uint64_t completed = 0;     // requests returned by Reap
  uint64_t eagain = 0;        // Submit calls refused whole
  uint64_t partial = 0;       // Submit calls cut short
  uint64_t short_io = 0;
  uint64_t eio = 0;
  uint64_t enospc = 0;
  uint64_t delayed = 0;
  uint64_t reordered = 0;
  uint64_t stalls = 0;
};

class FaultInjectingEngine : public EngineWrapper {
 public:
  using EngineWrapper::EngineWrapper;
  [[nodiscard]] virtual FaultStats fault_stats() const noexcept = 0;
  [[nodiscard]] virtual const FaultSpec& spec() const noexcept = 0;
  // The wrapped engine.
  Engine& inner() noexcept { return target(); }
};

// Wraps `inner`, which must not be null nor deliver completions to callbacks
// of its own (kInvalidArgument). With delivery.on_complete, completions are
// handed to it instead of being returned by Reap, as EngineOptions::on_complete
// says (by the thread in Reap, or by a completion thread of the wrapper's).
Result<std::unique_ptr<FaultInjectingEngine>> MakeFaultInjectingEngine(
    std::unique_ptr<Engine> inner, const FaultSpec& spec,
    const CompletionDelivery& delivery = {});

}  // namespace aiokit

#endif  // AIOKIT_FAULT_H_
