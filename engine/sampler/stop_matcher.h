// Stop strings over streamed text.
//
// Why: text reaches the client in small decoded chunks, and a stop string may
// straddle two chunks ("Us" + "er:"). Emitting a chunk as soon as it arrives
// would leak the start of a stop string before we know it is one, so the
// matcher holds back exactly the longest tail that could still grow into a
// stop string and releases it once it cannot. Matching is on bytes; the
// result does not depend on how the text was split into chunks: the stop
// fires at the first byte position where any stop string is complete (the
// longest one ending there wins), as if the text came one byte at a time.
#ifndef RWKV_ENGINE_SAMPLER_STOP_MATCHER_H_
#define RWKV_ENGINE_SAMPLER_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace rwkv {

struct StopMatchResult {
  std::string emit;      // text that is safe to send now
  bool stopped = false;  // a stop string matched; generation should end
};

// Not thread-safe; one per generation. Stop strings and text are plain
// bytes: if both are valid UTF-8 and chunks hold whole characters, emitted
// text is whole characters too (a held-back tail always starts on a
// character boundary, since it equals a prefix of a stop string).
class StopMatcher {
 public:
  // Empty strings in `stop_strings` are ignored. With none, Push passes text
  // straight through.
  explicit StopMatcher(std::vector<std::string> stop_strings);

  // Appends `text`. On a match, `emit` is the not-yet-emitted text before the
  // stop string and stopped is true; the stop string and anything after it
  // are dropped, and later calls return {"", true}. Otherwise `emit` is
  // everything except the longest tail that is a proper prefix of some stop
  // string.
  StopMatchResult Push(std::string_view text);

  // At the end of generation (no stop): returns and clears the held-back
  // tail. Returns "" after a stop.
  std::string Finish();

  bool stopped() const { return matched_index_ >= 0; }
  // Index into the constructor's list of the stop string that matched, or -1.
  int matched_index() const { return matched_index_; }
  // Bytes currently held back.
  size_t held_bytes() const { return held_.size(); }

 private:
  // Longest suffix of held_ that is a proper prefix of some stop string.
  size_t LongestPartialMatch() const;

  std::vector<std::string> stops_;
  std::vector<int> stop_index_;  // stops_[i] is stop_strings[stop_index_[i]]
  std::string held_;
  int matched_index_ = -1;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SAMPLER_STOP_MATCHER_H_
