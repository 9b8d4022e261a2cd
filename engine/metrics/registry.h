// A small Prometheus metrics registry: counters, gauges and histograms with
// labels, serialized in the text exposition format 0.0.4.
//
// Why in-house: prometheus-cpp is not packaged in Debian 12, and the server
// needs only the three basic metric types and the text format. The interface
// follows prometheus-cpp (BuildCounter().Name(..).Help(..).Register(registry),
// Family<T>::Add(labels), Histogram::BucketBoundaries) so the two can be
// swapped with a few `using` lines. Updates are lock-free atomics; the only
// locks are taken by registration, Family::Add (look-up of a label set: cache
// the returned reference) and Serialize.
//
// Error policy: a bad metric name, label name, duplicate family or bucket
// layout is a programmer error, so Register(), Family::Add() and the
// Histogram constructor abort with a clear message on stderr. Tests and code
// that build names at run time can use TryRegister(), ValidateMetricName()
// and ValidateLabelName(), which return absl::Status instead.
//
// Naming rules enforced at registration (so that the output passes
// `promtool check metrics`): names match [a-zA-Z_][a-zA-Z0-9_]* and do not
// start with "__" (colons are reserved for recording rules and rejected);
// counter names must end in "_total" (the sample is exposed under the name as
// given, like prometheus-cpp, nothing is appended); gauge and histogram names
// must not end in "_total", "_bucket", "_sum" or "_count"; no two families may
// expose the same sample name. Label names match [a-zA-Z_][a-zA-Z0-9_]*, do
// not start with "__", and histograms may not use "le". Label values and help
// texts are arbitrary; invalid UTF-8 is replaced by U+FFFD on output.
#ifndef RWKV_ENGINE_METRICS_REGISTRY_H_
#define RWKV_ENGINE_METRICS_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rwkv::metrics {

// Label name -> value. Ordered, so output is deterministic.
using Labels = std::map<std::string, std::string>;

enum class MetricType { kCounter, kGauge, kHistogram };

// OK, or INVALID_ARGUMENT saying which rule `name` breaks (syntax only; the
// type-specific suffix rules are checked at registration).
absl::Status ValidateMetricName(std::string_view name);
absl::Status ValidateLabelName(std::string_view name);

// A sample value as the text format writes it: "+Inf", "-Inf", "NaN",
// integers below 1e15 without fraction or exponent ("3", "-0" as "0"), other
// values in the shortest form that reads back exactly ("0.25", "1e-05").
std::string FormatValue(double value);

// A monotonically increasing value. Thread-safe; Increment is one atomic add.
class Counter {
 public:
  static constexpr MetricType kType = MetricType::kCounter;

  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `delta`. Negative and NaN deltas are ignored (a counter never goes
  // down), in every build mode, as prometheus-cpp does.
  void Increment(double delta = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down. Thread-safe; every call is one atomic op.
class Gauge {
 public:
  static constexpr MetricType kType = MetricType::kGauge;

  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Decrement(double delta = 1.0) { value_.fetch_sub(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with fixed upper bounds. Thread-safe:
// Observe is a binary search plus two relaxed atomic adds. A concurrent
// Collect may see a bucket count and the sum from slightly different moments
// (never a non-cumulative bucket set; count always equals the +Inf bucket).
class Histogram {
 public:
  static constexpr MetricType kType = MetricType::kHistogram;
  // Upper bounds ("le"), strictly increasing, without +Inf (implicit; a
  // trailing +Inf is accepted and dropped).
  using BucketBoundaries = std::vector<double>;

  // Aborts when `buckets` is not strictly increasing or holds NaN or -Inf.
  explicit Histogram(const BucketBoundaries& buckets);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `value` in the first bucket whose bound is >= value. NaN goes to
  // the +Inf bucket and makes the sum NaN (as client_golang does).
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0.0;
    uint64_t count = 0;  // == cumulative_counts.back()
  };
  Snapshot Collect() const;
  const BucketBoundaries& boundaries() const { return bounds_; }

 private:
  BucketBoundaries bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

// `count` bounds start, start*factor, ... (start > 0, factor > 1, count >= 1),
// each rounded to 15 significant digits so "le" labels print cleanly.
// Aborts on invalid arguments.
Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count);
// `count` bounds start, start+width, ... (width > 0, count >= 1), rounded as above.
Histogram::BucketBoundaries LinearBuckets(double start, double width, int count);
// `count` bounds from `min` to `max` inclusive with a constant factor
// (0 < min < max, count >= 2), rounded as above.
Histogram::BucketBoundaries ExponentialBucketsRange(double min, double max, int count);

// The type-independent part of a family. Registry owns families.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const Labels& constant_labels() const { return constant_labels_; }

  // Appends the family's exposition text; nothing when it has no children.
  virtual void SerializeTo(std::string* out) const = 0;

 protected:
  FamilyBase(std::string name, std::string help, Labels constant_labels, MetricType type)
      : name_(std::move(name)),
        help_(std::move(help)),
        constant_labels_(std::move(constant_labels)),
        type_(type) {}

  // OK when `labels` can be added (valid names, no clash with the constant
  // labels, no "le" on histograms).
  absl::Status CheckChildLabels(const Labels& labels) const;
  // Appends the # HELP and # TYPE lines.
  void AppendHeader(std::string* out) const;
  // Appends one sample line: name+suffix{constant labels, labels, le} value.
  void AppendSample(std::string* out, std::string_view suffix, const Labels& labels,
                    const std::string* le, double value) const;
  void AppendChild(std::string* out, const Labels& labels, const Counter& c) const;
  void AppendChild(std::string* out, const Labels& labels, const Gauge& g) const;
  void AppendChild(std::string* out, const Labels& labels, const Histogram& h) const;

 private:
  const std::string name_;
  const std::string help_;
  const Labels constant_labels_;
  const MetricType type_;
};

namespace internal {
// Prints "rwkv metrics: <status>" to stderr and aborts.
[[noreturn]] void DieOnError(const absl::Status& status);
}  // namespace internal

class Registry;

// All metrics of one name, one child per label set.
template <typename T>
class Family final : public FamilyBase {
 public:
  // The child for `labels`, created on first use with T(args...); later calls
  // with the same labels return the same object and ignore `args` (as in
  // prometheus-cpp). The reference stays valid for the registry's lifetime.
  // Takes a mutex: look up once, keep the reference. Aborts on invalid labels.
  template <typename... Args>
  T& Add(const Labels& labels, Args&&... args) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = children_.find(labels);
    if (it != children_.end()) return *it->second;
    if (absl::Status s = CheckChildLabels(labels); !s.ok()) internal::DieOnError(s);
    auto child = std::make_unique<T>(std::forward<Args>(args)...);
    T& ref = *child;
    children_.emplace(labels, std::move(child));
    return ref;
  }

  bool Has(const Labels& labels) const {
    std::lock_guard<std::mutex> lock(mu_);
    return children_.count(labels) != 0;
  }

  void SerializeTo(std::string* out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (children_.empty()) return;
    AppendHeader(out);
    for (const auto& [labels, child] : children_) AppendChild(out, labels, *child);
  }

 private:
  friend class Registry;
  Family(std::string name, std::string help, Labels constant_labels)
      : FamilyBase(std::move(name), std::move(help), std::move(constant_labels), T::kType) {}

  mutable std::mutex mu_;
  std::map<Labels, std::unique_ptr<T>> children_;
};

// Owns families; serializes them in registration order. Thread-safe.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a new family (Builder::Register/TryRegister call this).
  // INVALID_ARGUMENT for a bad metric or constant-label name or a suffix that
  // does not fit the type; ALREADY_EXISTS when one of its names is taken.
  template <typename T>
  absl::StatusOr<Family<T>*> AddFamily(std::string name, std::string help, Labels constant_labels) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckNewFamily(name, T::kType, constant_labels); !s.ok()) return s;
    auto family = std::unique_ptr<Family<T>>(
        new Family<T>(std::move(name), std::move(help), std::move(constant_labels)));
    Family<T>* ptr = family.get();
    ClaimNames(*ptr);
    families_.push_back(std::move(family));
    return ptr;
  }

  // The whole registry in the text exposition format 0.0.4.
  std::string Serialize() const;

 private:
  absl::Status CheckNewFamily(const std::string& name, MetricType type,
                              const Labels& constant_labels) const;
  void ClaimNames(const FamilyBase& family);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
  std::set<std::string> taken_names_;  // every sample (and family) name in use
};

// prometheus-cpp style builder: BuildCounter().Name("x_total").Help("...")
// .Register(registry).
template <typename T>
class Builder {
 public:
  Builder& Name(std::string name) {
    name_ = std::move(name);
    return *this;
  }
  Builder& Help(std::string help) {
    help_ = std::move(help);
    return *this;
  }
  // Constant labels, added to every child.
  Builder& Labels(const std::map<std::string, std::string>& labels) {
    labels_ = labels;
    return *this;
  }

  // Aborts with the reason when the family cannot be registered.
  Family<T>& Register(Registry& registry) const {
    absl::StatusOr<Family<T>*> family = TryRegister(registry);
    if (!family.ok()) internal::DieOnError(family.status());
    return **family;
  }
  absl::StatusOr<Family<T>*> TryRegister(Registry& registry) const {
    return registry.AddFamily<T>(name_, help_, labels_);
  }

 private:
  std::string name_;
  std::string help_;
  std::map<std::string, std::string> labels_;
};

inline Builder<Counter> BuildCounter() { return {}; }
inline Builder<Gauge> BuildGauge() { return {}; }
inline Builder<Histogram> BuildHistogram() { return {}; }

}  // namespace rwkv::metrics

#endif  // RWKV_ENGINE_METRICS_REGISTRY_H_
