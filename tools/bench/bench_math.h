// The arithmetic of rwkv-bench-engine: the per-step floor and the peer's
// published numbers.
//
// Why a separate unit: the floor is the yardstick every GPU number in
// docs/PERF.md is read against, so its formula lives in one small, tested
// place rather than inside the timing loop. A decode step of B sessions must
// at least read every weight once and read and write every session's state
// once (bytes over the measured copy bandwidth), and must do 2 * params * B
// multiply-adds' worth of flops (over the measured tensor-core peak); the
// larger of the two is the floor, and measured time over it is our gap.
//
// The peer table holds BlinkDL's Albatross (faster3a_2605) tokens/s on the
// same H100 kind with fp16 weights and random weights, as read by the lead
// (docs/PEER-NOTES.md): an fp16-state and an fp32-state column. Ratios are
// taken against the column of the state dtype we run (--state-dtype); the
// issue's targets are 1.25x the peer (1.1x at B=1).
//
// Prefill (--prefill): one session's T-token prompt in one forward. Its work
// is 2 * params * T flops as issue 5 counts it (the head included, though
// only the last row's logits are computed: an overstatement of 4-9% at
// 7.2B-1.5B); the fraction of the measured matrix peak reached is the
// yardstick. Issue 5's targets for a 4,096-token prompt on one H100 (fp16
// weights) sit in a table like the peer's.
#ifndef RWKV_TOOLS_BENCH_BENCH_MATH_H_
#define RWKV_TOOLS_BENCH_BENCH_MATH_H_

#include <cstdint>
#include <optional>
#include <string>

namespace rwkv {

struct FloorInputs {
  double weight_bytes = 0;  // bytes of weights a step reads
  double state_bytes = 0;   // bytes of one session's state (read once and written once per step)
  double params = 0;        // weights multiplied per token (2 flops each)
  double copy_gbps = 0;     // measured, (bytes read + bytes written) / time, in 1e9 B/s
  double peak_tflops = 0;   // measured; 0 when unknown (the compute term is then left out)
};

struct Floor {
  double memory_ms = 0;   // (weight bytes + B * 2 * state bytes) / bandwidth
  double compute_ms = 0;  // 2 * params * B / peak (0 when the peak is unknown)
  double ms = 0;          // the larger
  bool memory_bound = true;
};

Floor StepFloor(const FloorInputs& in, int64_t batch);

struct PeerPoint {
  double fp16_state_tps = 0;  // tokens/s with fp16 state
  double fp32_state_tps = 0;  // tokens/s with fp32 state
};

bool IsKnownPeer(const std::string& name);
std::string KnownPeers();  // for messages
// The peer's numbers for `model` ("synthetic:1.5b", "synthetic:7.2b") at
// `batch`, if it published them.
std::optional<PeerPoint> PeerLookup(const std::string& peer, const std::string& model, int64_t batch);
// The target: 1.1x the peer's tokens/s at B=1, 1.25x above.
double TargetFactor(int64_t batch);
// The peer column we compare with: fp16-state tokens/s when our state is fp16.
inline double PeerTpsForState(const PeerPoint& p, bool fp16_state) {
  return fp16_state ? p.fp16_state_tps : p.fp32_state_tps;
}

// 2 * params * T: issue 5's flop count of a T-token prefill.
inline double PrefillFlops(double params, int64_t tokens) { return 2.0 * params * static_cast<double>(tokens); }

struct PrefillTarget {
  double tps = 0;            // tokens/s to reach
  double peak_fraction = 0;  // fraction of the measured matrix peak to reach (0: none set)
};

// Issue 5's prefill target for `model` at a `tokens`-token prompt (batch 1),
// shown with --peer (the targets sit beside the peer's decode numbers).
std::optional<PrefillTarget> PrefillTargetLookup(const std::string& peer, const std::string& model, int64_t tokens);

}  // namespace rwkv

#endif  // RWKV_TOOLS_BENCH_BENCH_MATH_H_
