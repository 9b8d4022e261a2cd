// See bench_math.h.
#include "tools/bench/bench_math.h"

#include <algorithm>

namespace rwkv {
namespace {

struct PeerRow {
  const char* model;
  int64_t batch;
  PeerPoint point;
};

// Albatross faster3a_2605 on one H100 (the device kind we measure on), fp16
// weights, tokens/s (fp16 state, fp32 state). From the issue text.
constexpr PeerRow kAlbatross[] = {
    {"synthetic:1.5b", 1, {587, 566}},       {"synthetic:1.5b", 8, {2643, 2429}},
    {"synthetic:1.5b", 64, {18208, 12172}},  {"synthetic:1.5b", 256, {50638, 13871}},
    {"synthetic:1.5b", 960, {80009, 15780}}, {"synthetic:7.2b", 1, {204, 199}},
    {"synthetic:7.2b", 8, {1003, 926}},      {"synthetic:7.2b", 64, {6719, 4520}},
    {"synthetic:7.2b", 256, {18564, 5248}},  {"synthetic:7.2b", 960, {25309, 5763}},
};

}  // namespace

Floor StepFloor(const FloorInputs& in, int64_t batch) {
  Floor f;
  const double b = static_cast<double>(batch);
  if (in.copy_gbps > 0) {
    f.memory_ms = (in.weight_bytes + b * 2.0 * in.state_bytes) / (in.copy_gbps * 1e9) * 1e3;
  }
  if (in.peak_tflops > 0) f.compute_ms = 2.0 * in.params * b / (in.peak_tflops * 1e12) * 1e3;
  f.ms = std::max(f.memory_ms, f.compute_ms);
  f.memory_bound = f.memory_ms >= f.compute_ms;
  return f;
}

bool IsKnownPeer(const std::string& name) { return name == "albatross"; }

std::string KnownPeers() { return "albatross"; }

std::optional<PeerPoint> PeerLookup(const std::string& peer, const std::string& model, int64_t batch) {
  if (peer != "albatross") return std::nullopt;
  for (const PeerRow& r : kAlbatross) {
    if (model == r.model && batch == r.batch) return r.point;
  }
  return std::nullopt;
}

double TargetFactor(int64_t batch) { return batch == 1 ? 1.1 : 1.25; }

namespace {

struct PrefillRow {
  const char* model;
  int64_t tokens;
  PrefillTarget target;
};

// Issue 5: one H100, fp16 weights, batch 1, a 4,096-token prompt.
constexpr PrefillRow kPrefillTargets[] = {
    {"synthetic:1.5b", 4096, {56000, 0}},
    {"synthetic:7.2b", 4096, {30000, 0.40}},
    {"synthetic:v4-1.5b", 4096, {96500, 0}},
    {"synthetic:v4-7.2b", 4096, {36200, 0}},
};

}  // namespace

std::optional<PrefillTarget> PrefillTargetLookup(const std::string& peer, const std::string& model,
                                                 int64_t tokens) {
  if (!IsKnownPeer(peer)) return std::nullopt;
  for (const PrefillRow& r : kPrefillTargets) {
    if (model == r.model && tokens == r.tokens) return r.target;
  }
  return std::nullopt;
}

}  // namespace rwkv
