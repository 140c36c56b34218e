// The conformance suite on every engine and variant: a new engine joins by
// being added to testing::AllEngines() (engines.h).

#include "conformance/conformance.h"

#include <gtest/gtest.h>

#include "engines.h"

namespace aiokit::conformance {
namespace {

INSTANTIATE_TEST_SUITE_P(Engines, ConformanceTest,
                         ::testing::ValuesIn(testing::AllEngines()),
                         testing::EngineParamName);
// Every test again with completions delivered to callbacks, by the thread in
// Reap or by the engine's completion thread (delivery.h).
INSTANTIATE_TEST_SUITE_P(Delivery, ConformanceTest,
                         ::testing::ValuesIn(testing::DeliveryEngines()),
                         testing::EngineParamName);

}  // namespace
}  // namespace aiokit::conformance
