// ForwardingBackend must override every virtual op of Backend. An op it does
// not forward runs Backend's default (a composition of other ops, or
// nothing) instead of the inner backend's own, and a benchmark or test
// through a wrapper then silently measures something else: a new CUDA op
// measured nothing through the benchmark's FFN-counting wrapper until it was
// forwarded (docs/PERF.md, session 13). The compiler cannot check this, so
// this test reads both headers.
#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace rwkv {
namespace {

std::string ReadSource(const std::string& relative) {
  const std::string path = std::string(RWKV_SOURCE_DIR) + "/" + relative;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The first group of every match of `re` in `text`, in order.
std::vector<std::string> FirstGroups(const std::string& text, const std::regex& re) {
  std::vector<std::string> groups;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    groups.push_back((*it)[1].str());
  }
  return groups;
}

// The names of the virtual member functions `text` declares (not the
// destructor), in order.
std::vector<std::string> VirtualOps(const std::string& text) {
  static const std::regex kVirtual(R"(virtual\s+[^;{(~]*?\b(\w+)\s*\()");
  return FirstGroups(text, kVirtual);
}

// The names `text` declares with `override`.
std::set<std::string> Overrides(const std::string& text) {
  static const std::regex kOverride(R"(\b(\w+)\s*\([^;{}]*\)\s*(const\s*)?override\b)");
  const std::vector<std::string> names = FirstGroups(text, kOverride);
  return std::set<std::string>(names.begin(), names.end());
}

std::vector<std::string> Missing(const std::vector<std::string>& ops, const std::set<std::string>& overrides) {
  std::vector<std::string> missing;
  for (const std::string& op : ops) {
    if (overrides.count(op) == 0) missing.push_back(op);
  }
  return missing;
}

TEST(ForwardingBackendTest, OverridesEveryVirtualOpOfBackend) {
  const std::vector<std::string> ops = VirtualOps(ReadSource("engine/model/backend.h"));
  // The parser sees the interface: data movement, the ops, the fused ops and
  // the device sampling.
  ASSERT_GE(ops.size(), 40u);
  for (const char* op : {"name", "Upload", "BeginPass", "Wkv7", "GroupedMatMul", "V7PrepWkv7WithOutput",
                         "SampleRows"}) {
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
  }
  const std::vector<std::string> missing = Missing(ops, Overrides(ReadSource("engine/model/forwarding_backend.h")));
  EXPECT_TRUE(missing.empty()) << "ForwardingBackend does not forward " << ::testing::PrintToString(missing)
                               << ": add a forwarding override to engine/model/forwarding_backend.h";
}

// The check finds an op whose forwarding line is gone, on one or several
// lines, const or not.
TEST(ForwardingBackendTest, CheckFindsAnOpThatIsNotForwarded) {
  const std::string backend = R"(
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    virtual void Wkv4(const Segment* segs, int nseg,
                      int C, StateRef aa) = 0;
    virtual bool PadsLora() const { return false; }
    virtual absl::Status SampleRows(const float* /*logits*/, int /*vocab*/) { return Unsupported(); })";
  const std::vector<std::string> ops = VirtualOps(backend);
  EXPECT_EQ(ops, (std::vector<std::string>{"name", "Wkv4", "PadsLora", "SampleRows"}));
  const std::string all = R"(
    std::string name() const override { return inner_->name(); }
    void Wkv4(const Segment* segs, int nseg,
              int C, StateRef aa) override {
      inner_->Wkv4(segs, nseg, C, aa);
    }
    bool PadsLora() const override { return inner_->PadsLora(); }
    absl::Status SampleRows(const float* logits, int vocab) override { return inner_->SampleRows(logits, vocab); })";
  EXPECT_TRUE(Missing(ops, Overrides(all)).empty());
  const std::string no_wkv4 = R"(
    std::string name() const override { return inner_->name(); }
    bool PadsLora() const override { return inner_->PadsLora(); }
    void Other() { inner_->Wkv4(segs, nseg, C, aa); }
    absl::Status SampleRows(const float* logits, int vocab) override { return inner_->SampleRows(logits, vocab); })";
  EXPECT_EQ(Missing(ops, Overrides(no_wkv4)), std::vector<std::string>{"Wkv4"});
}

}  // namespace
}  // namespace rwkv
