// StopMatcher implementation.
//
// Why: stop strings are few (at most 16) and short (at most 256 bytes), and a
// chunk is usually a token's worth of text, so plain string_view::find from
// the first position a new match could end at, plus a suffix/prefix check
// for the held-back tail, is simpler than an automaton and fast enough.
#include "engine/sampler/stop_matcher.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rwkv {

StopMatcher::StopMatcher(std::vector<std::string> stop_strings) {
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) continue;
    stops_.push_back(std::move(stop_strings[i]));
    stop_index_.push_back(static_cast<int>(i));
  }
}

StopMatchResult StopMatcher::Push(std::string_view text) {
  if (stopped()) return {"", true};
  if (stops_.empty()) return {std::string(text), false};
  const size_t old_size = held_.size();
  held_.append(text);
  const std::string_view buf(held_);

  // Earliest-ending match; among those ending at the same byte, the longest.
  // held_[0, old_size) holds no complete match, so only matches ending past
  // old_size are new.
  size_t best_end = std::string_view::npos;
  size_t best_start = 0;
  int best = -1;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const std::string& s = stops_[i];
    const size_t from = old_size >= s.size() ? old_size - s.size() + 1 : 0;
    const size_t pos = buf.find(s, from);
    if (pos == std::string_view::npos) continue;
    const size_t end = pos + s.size();
    if (best < 0 || end < best_end || (end == best_end && pos < best_start)) {
      best = static_cast<int>(i);
      best_end = end;
      best_start = pos;
    }
  }
  if (best >= 0) {
    matched_index_ = stop_index_[best];
    StopMatchResult result{held_.substr(0, best_start), true};
    held_.clear();
    return result;
  }

  const size_t keep = LongestPartialMatch();
  StopMatchResult result{held_.substr(0, held_.size() - keep), false};
  held_.erase(0, held_.size() - keep);
  return result;
}

size_t StopMatcher::LongestPartialMatch() const {
  const std::string_view buf(held_);
  size_t best = 0;
  for (const std::string& s : stops_) {
    // Candidate lengths longer than the best so far, longest first.
    for (size_t len = std::min(s.size() - 1, buf.size()); len > best; --len) {
      if (buf.substr(buf.size() - len) == std::string_view(s).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

std::string StopMatcher::Finish() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace rwkv
