// Registry implementation: name rules, value formatting and the text format.
//
// Why here and not in the header: the exposition format has a handful of
// easy-to-get-wrong details (escaping, +Inf/NaN spelling, integer formatting,
// cumulative buckets, invalid UTF-8 in label values breaking a whole scrape),
// and keeping them in one translation unit keeps the golden tests honest.
// Formatting uses std::to_chars, so the output does not depend on the locale.
#include "engine/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace rwkv::metrics {
namespace {

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

absl::Status CheckName(const char* kind, std::string_view name) {
  const std::string quoted = absl::StrCat("\"", absl::string_view(name.data(), name.size()), "\"");
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(kind, " name is empty"));
  if (!IsNameStart(name[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, " name ", quoted, " must start with a letter or '_'"));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kind, " name ", quoted, " may only contain [a-zA-Z0-9_]",
          c == ':' ? " (':' is reserved for recording rules)" : ""));
    }
  }
  if (name.size() >= 2 && name[0] == '_' && name[1] == '_') {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, " name ", quoted, " must not start with \"__\" (reserved)"));
  }
  return absl::OkStatus();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Appends `in` with the given escapes, replacing invalid UTF-8 by U+FFFD
// (Prometheus rejects a scrape holding invalid UTF-8).
void AppendEscaped(std::string* out, std::string_view in, bool escape_quote) {
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      if (c == '\\') {
        out->append("\\\\");
      } else if (c == '\n') {
        out->append("\\n");
      } else if (c == '"' && escape_quote) {
        out->append("\\\"");
      } else {
        out->push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    // Multi-byte sequence: check the lead byte, length, continuation bytes,
    // overlongs, surrogates and the U+10FFFF limit.
    struct Lead {
      size_t len;     // sequence length, 0 for an invalid lead byte
      uint32_t min;   // smallest code point of that length (no overlongs)
      uint32_t bits;  // payload of the lead byte
    };
    const Lead lead = c >= 0xC2 && c <= 0xDF   ? Lead{2, 0x80, c & 0x1Fu}
                      : c >= 0xE0 && c <= 0xEF ? Lead{3, 0x800, c & 0x0Fu}
                      : c >= 0xF0 && c <= 0xF4 ? Lead{4, 0x10000, c & 0x07u}
                                               : Lead{0, 0, 0};
    const size_t len = lead.len;
    const uint32_t min = lead.min;
    uint32_t cp = lead.bits;
    bool ok = len != 0 && i + len <= in.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(in[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out->append(in.substr(i, len));
      i += len;
    } else {
      out->append("\xEF\xBF\xBD");
      ++i;
    }
  }
}

// Rounds to 15 significant digits (drops the 0.30000000000000004 noise of
// repeated float arithmetic).
double RoundTo15Digits(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, 15);
  double out = v;
  std::from_chars(buf, res.ptr, out);
  return out;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// The sample names a family exposes, plus names it reserves so that no other
// family can shadow it (the counter's base name is its OpenMetrics family name).
std::vector<std::string> NamesOf(const std::string& name, MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return {name, name.substr(0, name.size() - std::string_view("_total").size())};
    case MetricType::kGauge:
      return {name};
    case MetricType::kHistogram:
      return {name, name + "_bucket", name + "_sum", name + "_count"};
  }
  return {name};
}

}  // namespace

namespace internal {
void DieOnError(const absl::Status& status) {
  std::fprintf(stderr, "rwkv metrics: %s\n", status.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

absl::Status ValidateMetricName(std::string_view name) { return CheckName("metric", name); }
absl::Status ValidateLabelName(std::string_view name) { return CheckName("label", name); }

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);  // shortest round-trip
  return std::string(buf, res.ptr);
}

// ---------------------------------------------------------------- metrics

void Counter::Increment(double delta) {
  if (!(delta >= 0.0)) return;  // negative or NaN
  value_.fetch_add(delta, std::memory_order_relaxed);
}

Histogram::Histogram(const BucketBoundaries& buckets) : bounds_(buckets) {
  if (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0) bounds_.pop_back();
  for (size_t i = 0; i < bounds_.size(); ++i) {
    const double b = bounds_[i];
    if (std::isnan(b) || std::isinf(b)) {
      internal::DieOnError(absl::InvalidArgumentError(
          absl::StrCat("histogram bucket bound ", i, " is ", FormatValue(b),
                       "; bounds must be finite (+Inf is implicit)")));
    }
    if (i > 0 && !(bounds_[i - 1] < b)) {
      internal::DieOnError(absl::InvalidArgumentError(
          absl::StrCat("histogram bucket bounds must be strictly increasing; bound ", i, " (",
                       FormatValue(b), ") <= bound ", i - 1, " (", FormatValue(bounds_[i - 1]),
                       ")")));
    }
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  size_t index = bounds_.size();  // +Inf, also for NaN
  if (!std::isnan(value)) {
    index = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                bounds_.begin());
  }
  counts_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snap;
  snap.cumulative_counts.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snap.cumulative_counts[i] = running;
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1 || std::isinf(start) || std::isinf(factor)) {
    internal::DieOnError(absl::InvalidArgumentError(
        absl::StrCat("ExponentialBuckets(", FormatValue(start), ", ", FormatValue(factor), ", ",
                     count, "): need start > 0, factor > 1, count >= 1")));
  }
  Histogram::BucketBoundaries out;
  out.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) out.push_back(RoundTo15Digits(start * std::pow(factor, i)));
  return out;
}

Histogram::BucketBoundaries LinearBuckets(double start, double width, int count) {
  if (!std::isfinite(start) || !(width > 0) || std::isinf(width) || count < 1) {
    internal::DieOnError(absl::InvalidArgumentError(
        absl::StrCat("LinearBuckets(", FormatValue(start), ", ", FormatValue(width), ", ", count,
                     "): need finite start, width > 0, count >= 1")));
  }
  Histogram::BucketBoundaries out;
  out.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) out.push_back(RoundTo15Digits(start + width * i));
  return out;
}

Histogram::BucketBoundaries ExponentialBucketsRange(double min, double max, int count) {
  if (!(min > 0) || !(max > min) || std::isinf(max) || count < 2) {
    internal::DieOnError(absl::InvalidArgumentError(
        absl::StrCat("ExponentialBucketsRange(", FormatValue(min), ", ", FormatValue(max), ", ",
                     count, "): need 0 < min < max, count >= 2")));
  }
  const double factor = std::pow(max / min, 1.0 / (count - 1));
  Histogram::BucketBoundaries out = ExponentialBuckets(min, factor, count);
  out.back() = max;  // exact despite pow rounding
  return out;
}

// ---------------------------------------------------------------- families

absl::Status FamilyBase::CheckChildLabels(const Labels& labels) const {
  for (const auto& [label, value] : labels) {
    if (absl::Status s = ValidateLabelName(label); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("metric ", name_, ": ", s.message()));
    }
    if (type_ == MetricType::kHistogram && label == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name_, ": label name \"le\" is reserved for buckets"));
    }
    if (constant_labels_.count(label) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric ", name_, ": label \"", label, "\" is already a constant label of the family"));
    }
  }
  return absl::OkStatus();
}

void FamilyBase::AppendHeader(std::string* out) const {
  if (!help_.empty()) {
    absl::StrAppend(out, "# HELP ", name_, " ");
    AppendEscaped(out, help_, /*escape_quote=*/false);
    out->push_back('\n');
  }
  absl::StrAppend(out, "# TYPE ", name_, " ", TypeName(type_), "\n");
}

void FamilyBase::AppendSample(std::string* out, std::string_view suffix, const Labels& labels,
                              const std::string* le, double value) const {
  out->append(name_);
  out->append(suffix);
  if (!constant_labels_.empty() || !labels.empty() || le != nullptr) {
    // Constant and child labels never share a name, so a merge keeps them sorted.
    Labels merged = labels;
    merged.insert(constant_labels_.begin(), constant_labels_.end());
    out->push_back('{');
    bool first = true;
    auto append_label = [&](const std::string& label, std::string_view v) {
      if (!first) out->push_back(',');
      first = false;
      absl::StrAppend(out, label, "=\"");
      AppendEscaped(out, v, /*escape_quote=*/true);
      out->push_back('"');
    };
    for (const auto& [label, v] : merged) append_label(label, v);
    if (le != nullptr) append_label("le", *le);
    out->push_back('}');
  }
  out->push_back(' ');
  out->append(FormatValue(value));
  out->push_back('\n');
}

void FamilyBase::AppendChild(std::string* out, const Labels& labels, const Counter& c) const {
  AppendSample(out, "", labels, nullptr, c.Value());
}

void FamilyBase::AppendChild(std::string* out, const Labels& labels, const Gauge& g) const {
  AppendSample(out, "", labels, nullptr, g.Value());
}

void FamilyBase::AppendChild(std::string* out, const Labels& labels, const Histogram& h) const {
  const Histogram::Snapshot snap = h.Collect();
  const Histogram::BucketBoundaries& bounds = h.boundaries();
  for (size_t i = 0; i <= bounds.size(); ++i) {
    const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
    AppendSample(out, "_bucket", labels, &le, static_cast<double>(snap.cumulative_counts[i]));
  }
  AppendSample(out, "_sum", labels, nullptr, snap.sum);
  AppendSample(out, "_count", labels, nullptr, static_cast<double>(snap.count));
}

// ---------------------------------------------------------------- registry

absl::Status Registry::CheckNewFamily(const std::string& name, MetricType type,
                                      const Labels& constant_labels) const {
  if (absl::Status s = ValidateMetricName(name); !s.ok()) return s;
  const bool total = EndsWith(name, "_total") && name.size() > std::string_view("_total").size();
  if (type == MetricType::kCounter && !total) {
    return absl::InvalidArgumentError(
        absl::StrCat("counter name \"", name, "\" must end in \"_total\" (e.g. \"", name,
                     "_total\")"));
  }
  if (type != MetricType::kCounter) {
    for (std::string_view suffix : {"_total", "_bucket", "_sum", "_count"}) {
      if (EndsWith(name, suffix)) {
        return absl::InvalidArgumentError(absl::StrCat(
            TypeName(type), " name \"", name, "\" must not end in \"",
            absl::string_view(suffix.data(), suffix.size()), "\" (reserved for ",
            suffix == "_total" ? "counters" : "histogram samples", ")"));
      }
    }
  }
  for (const auto& [label, value] : constant_labels) {
    if (absl::Status s = ValidateLabelName(label); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": ", s.message()));
    }
    if (type == MetricType::kHistogram && label == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name, ": label name \"le\" is reserved for buckets"));
    }
  }
  for (const std::string& n : NamesOf(name, type)) {
    if (taken_names_.count(n) != 0) {
      return absl::AlreadyExistsError(absl::StrCat(
          "metric \"", name, "\" clashes with an already registered metric (name \"", n,
          "\" is taken)"));
    }
  }
  return absl::OkStatus();
}

void Registry::ClaimNames(const FamilyBase& family) {
  for (std::string& n : NamesOf(family.name(), family.type())) taken_names_.insert(std::move(n));
}

std::string Registry::Serialize() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.reserve(4096);
  for (const auto& family : families_) family->SerializeTo(&out);
  return out;
}

}  // namespace rwkv::metrics
