// Tests of the options structs, OracleScope printing and the version macros.
// Golden defaults come from the documented "Default:" lines in include/cac/options.hpp and
// include/cac/functional.hpp (which follow the released code: tau 15, ignore 255, d/2 bottleneck,
// smoothness 0.5, unit loss weights; see shared/spec/official-implementation.md).

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cac/cac.hpp>

#include "support/test_support.hpp"

#include <sstream>
#include <string>
#include <type_traits>

namespace {

std::string printed(cac::OracleScope scope) {
  std::ostringstream stream;
  stream << scope;
  return stream.str();
}

void require_default_kl(const cac::EntropyAwareKLOptions& o) {
  REQUIRE(o.teacher_weight() == 0.5);
  REQUIRE(o.entropy_weighted());
  REQUIRE(o.class_wise());
  REQUIRE(o.ignore_index() == 255);
}

void require_default_head(const cac::ContextAwareHeadOptions& o, int64_t channels, int64_t classes) {
  REQUIRE(o.channels() == channels);
  REQUIRE(o.num_classes() == classes);
  REQUIRE(o.hidden_channels() == channels / 2);
  REQUIRE(o.tau() == 15.0);
  REQUIRE(o.oracle_scope() == cac::OracleScope::Batch);
  REQUIRE(o.ignore_index() == 255);
}

}  // namespace

TEST_CASE("options have the documented defaults", "[options]") {
  SECTION("ContextAwareHeadOptions(512, 150)") {
    const cac::ContextAwareHeadOptions o(512, 150);
    require_default_head(o, 512, 150);
    REQUIRE(o.hidden_channels() == 256);
    // The bottleneck is channels / 2 rounded down.
    REQUIRE(cac::ContextAwareHeadOptions(7, 3).hidden_channels() == 3);
  }
  SECTION("EntropyAwareKLOptions") { require_default_kl(cac::EntropyAwareKLOptions()); }
  SECTION("ContextAwareLossOptions") {
    const cac::ContextAwareLossOptions o;
    REQUIRE(o.kl_weight() == 1.0);
    REQUIRE(o.logits_weight() == 1.0);
    REQUIRE(o.context_weight() == 1.0);
    REQUIRE(o.oracle_weight() == 1.0);
    REQUIRE(!o.align_corners());
    REQUIRE(o.ignore_index() == 255);
    REQUIRE(!o.check_finite());
    require_default_kl(o.kl());
  }
  SECTION("ContextAwareClassifierOptions(512, 150)") {
    const cac::ContextAwareClassifierOptions o(512, 150);
    require_default_head(o.head(), 512, 150);
    REQUIRE(o.dropout() == 0.0);
  }
  SECTION("GroundTruthPrototypesFuncOptions") {
    const cac::GroundTruthPrototypesFuncOptions o;
    REQUIRE(o.scope() == cac::OracleScope::Batch);
    REQUIRE(o.ignore_index() == 255);
  }
  SECTION("the functional option aliases are the module options") {
    STATIC_REQUIRE(std::is_same<cac::ContextAwareHeadFuncOptions, cac::ContextAwareHeadOptions>::value);
    STATIC_REQUIRE(std::is_same<cac::EntropyAwareKLFuncOptions, cac::EntropyAwareKLOptions>::value);
    STATIC_REQUIRE(std::is_same<cac::ContextAwareLossFuncOptions, cac::ContextAwareLossOptions>::value);
  }
}

TEST_CASE("option setters chain and return the same object", "[options]") {
  SECTION("ContextAwareHeadOptions") {
    cac::ContextAwareHeadOptions o(64, 5);
    auto& same = o.channels(32)
                     .num_classes(7)
                     .hidden_channels(9)
                     .tau(2.5)
                     .oracle_scope(cac::OracleScope::Image)
                     .ignore_index(-1);
    REQUIRE(&same == &o);
    REQUIRE(o.channels() == 32);
    REQUIRE(o.num_classes() == 7);
    REQUIRE(o.hidden_channels() == 9);  // set explicitly, not recomputed from channels
    REQUIRE(o.tau() == 2.5);
    REQUIRE(o.oracle_scope() == cac::OracleScope::Image);
    REQUIRE(o.ignore_index() == -1);
  }
  SECTION("EntropyAwareKLOptions") {
    cac::EntropyAwareKLOptions o;
    auto& same = o.teacher_weight(1.0).entropy_weighted(false).class_wise(false).ignore_index(0);
    REQUIRE(&same == &o);
    REQUIRE(o.teacher_weight() == 1.0);
    REQUIRE(!o.entropy_weighted());
    REQUIRE(!o.class_wise());
    REQUIRE(o.ignore_index() == 0);
  }
  SECTION("ContextAwareLossOptions") {
    cac::ContextAwareLossOptions o;
    auto& same = o.kl_weight(0.0)
                     .logits_weight(0.4)
                     .context_weight(2.0)
                     .oracle_weight(0.5)
                     .align_corners(true)
                     .ignore_index(100)
                     .kl(cac::EntropyAwareKLOptions().teacher_weight(0.2))
                     .check_finite(true);
    REQUIRE(&same == &o);
    REQUIRE(o.check_finite());
    REQUIRE(o.kl_weight() == 0.0);
    REQUIRE(o.logits_weight() == 0.4);
    REQUIRE(o.context_weight() == 2.0);
    REQUIRE(o.oracle_weight() == 0.5);
    REQUIRE(o.align_corners());
    REQUIRE(o.ignore_index() == 100);
    REQUIRE(o.kl().teacher_weight() == 0.2);
    REQUIRE(o.kl().class_wise());  // the rest of the nested options keep their defaults
  }
  SECTION("ContextAwareClassifierOptions") {
    cac::ContextAwareClassifierOptions o(16, 4);
    auto& same = o.dropout(0.1).head(cac::ContextAwareHeadOptions(8, 3).tau(4.0));
    REQUIRE(&same == &o);
    REQUIRE(o.dropout() == 0.1);
    REQUIRE(o.head().channels() == 8);
    REQUIRE(o.head().num_classes() == 3);
    REQUIRE(o.head().tau() == 4.0);
    // Built implicitly from head options.
    const cac::ContextAwareClassifierOptions from_head = cac::ContextAwareHeadOptions(64, 5).hidden_channels(10);
    REQUIRE(from_head.head().channels() == 64);
    REQUIRE(from_head.head().hidden_channels() == 10);
    REQUIRE(from_head.dropout() == 0.0);
  }
  SECTION("GroundTruthPrototypesFuncOptions") {
    cac::GroundTruthPrototypesFuncOptions o;
    auto& same = o.scope(cac::OracleScope::Image).ignore_index(3);
    REQUIRE(&same == &o);
    REQUIRE(o.scope() == cac::OracleScope::Image);
    REQUIRE(o.ignore_index() == 3);
  }
}

TEST_CASE("OracleScope prints its name", "[options]") {
  // Golden strings: operator<<(std::ostream&, OracleScope) in options.hpp.
  REQUIRE(printed(cac::OracleScope::Batch) == "Batch");
  REQUIRE(printed(cac::OracleScope::Image) == "Image");
  REQUIRE(c10::str("scope=", cac::OracleScope::Image) == "scope=Image");
}
