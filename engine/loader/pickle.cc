// A pickle stack machine restricted to plain data and torch state dicts.
//
// Why an arena: every value lives in one vector and refers to others by
// index, so shared and even cyclic references (possible through the memo)
// cannot leak or recurse, and teardown is flat no matter how deeply a
// hostile pickle nests. All counts are capped by PickleLimits.
#include "engine/loader/pickle.h"

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/loader/binary_util.h"

namespace rwkv::loader_internal {
namespace {

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kBytes,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor,
  kObject,
};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;                // int / bool; index into storages / tensors
  std::string s;                // str, bytes, global or object's callable name
  std::vector<uint32_t> items;  // tuple/list elements; dict: key, value, key, value...
};

struct StorageRec {
  std::string type, key;
  int64_t numel = 0;
};

struct TensorRec {
  uint32_t storage = 0;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

class Machine {
 public:
  Machine(std::span<const uint8_t> pkl, const PickleLimits& limits)
      : cur_(pkl.data(), pkl.size()), limits_(limits) {}

  absl::StatusOr<std::vector<PickledTensor>> Run();

 private:
  absl::Status Step(uint8_t op);
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("pickle: %s (opcode 0x%02x at offset %d)", what, op_, op_pos_));
  }
  absl::StatusOr<uint32_t> New(Value v) {
    if (values_.size() >= limits_.max_values) return Error("too many values");
    values_.push_back(std::move(v));
    return static_cast<uint32_t>(values_.size() - 1);
  }
  absl::Status Push(uint32_t v) {
    if (stack_.size() >= limits_.max_stack) return Error("stack too deep");
    stack_.push_back(v);
    return absl::OkStatus();
  }
  absl::Status PushNew(Value v) {
    absl::StatusOr<uint32_t> idx = New(std::move(v));
    if (!idx.ok()) return idx.status();
    return Push(*idx);
  }
  absl::Status Pop(uint32_t* v) {
    if (stack_.size() <= Floor()) return Error("stack underflow");
    *v = stack_.back();
    stack_.pop_back();
    return absl::OkStatus();
  }
  // Lowest stack index visible (values below the innermost mark are hidden).
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::Status PopMark(std::vector<uint32_t>* items) {
    if (marks_.empty()) return Error("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    items->assign(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return absl::OkStatus();
  }
  absl::Status Memoize(uint32_t key) {
    if (stack_.size() <= Floor()) return Error("memoizing with an empty stack");
    if (!memo_.contains(key) && memo_.size() >= limits_.max_memo) return Error("memo too large");
    memo_[key] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint32_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Error(absl::StrCat("memo key ", key, " not defined"));
    return Push(it->second);
  }
  absl::Status ReadInt(size_t n, bool is_signed, int64_t* out) {
    const uint8_t* p;
    if (!cur_.ReadBytes(n, &p)) return Error("truncated");
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * k);
    if (is_signed && n < 8 && n > 0 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);
    std::memcpy(out, &v, 8);
    return absl::OkStatus();
  }
  absl::Status PushString(Kind kind, size_t len_bytes) {
    int64_t len = 0;
    // Only BINSTRING's length is signed; an 8-byte length above 2^63 reads as negative.
    if (absl::Status s = ReadInt(len_bytes, op_ == 'T', &len); !s.ok()) return s;
    std::string_view text;
    if (len < 0 || !cur_.ReadString(static_cast<uint64_t>(len), &text)) {
      return Error(absl::StrCat("string length ", len, " runs past the end of the pickle"));
    }
    Value v;
    v.kind = kind;
    v.s = std::string(text);
    return PushNew(std::move(v));
  }
  absl::Status PushGlobal(std::string name) {
    Value v;
    v.kind = Kind::kGlobal;
    v.s = std::move(name);
    return PushNew(std::move(v));
  }
  absl::Status ReadLine(std::string* out) {
    const uint8_t* start = cur_.here();
    const size_t avail = cur_.remaining();
    const void* nl = avail == 0 ? nullptr : std::memchr(start, '\n', avail < 256 ? avail : 256);
    if (nl == nullptr) return Error("unterminated GLOBAL name");
    const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nl) - start);
    out->assign(reinterpret_cast<const char*>(start), n);
    cur_.Skip(n + 1);
    return absl::OkStatus();
  }
  absl::Status Reduce();
  absl::Status PersistentLoad();
  absl::Status RebuildTensor(const std::vector<uint32_t>& args, bool v2);
  bool IntTuple(uint32_t idx, std::vector<int64_t>* out) const;

  ByteCursor cur_;
  PickleLimits limits_;
  uint8_t op_ = 0;
  size_t op_pos_ = 0;
  std::vector<Value> values_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint32_t, uint32_t> memo_;
  std::vector<StorageRec> storages_;
  std::vector<TensorRec> tensors_;
  bool stopped_ = false;
  uint32_t result_ = 0;
};

bool Machine::IntTuple(uint32_t idx, std::vector<int64_t>* out) const {
  const Value& v = values_[idx];
  if (v.kind != Kind::kTuple && v.kind != Kind::kList) return false;
  out->clear();
  for (uint32_t item : v.items) {
    if (values_[item].kind != Kind::kInt) return false;
    out->push_back(values_[item].i);
  }
  return true;
}

absl::Status Machine::PersistentLoad() {
  uint32_t pid = 0;
  if (absl::Status s = Pop(&pid); !s.ok()) return s;
  const Value& t = values_[pid];
  if (t.kind != Kind::kTuple || t.items.size() != 5) {
    return Error("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  const Value& tag = values_[t.items[0]];
  const Value& type = values_[t.items[1]];
  const Value& key = values_[t.items[2]];
  const Value& numel = values_[t.items[4]];
  if (tag.kind != Kind::kString || tag.s != "storage" || type.kind != Kind::kGlobal ||
      key.kind != Kind::kString || numel.kind != Kind::kInt || numel.i < 0) {
    return Error("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  StorageRec rec{type.s, key.s, numel.i};
  Value v;
  v.kind = Kind::kStorage;
  v.i = static_cast<int64_t>(storages_.size());
  storages_.push_back(std::move(rec));
  return PushNew(std::move(v));
}

absl::Status Machine::RebuildTensor(const std::vector<uint32_t>& args, bool v2) {
  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
  // _rebuild_tensor(storage, offset, size, stride)
  const bool arity_ok = v2 ? (args.size() == 6 || args.size() == 7) : args.size() == 4;
  if (!arity_ok) return Error("unexpected arguments to _rebuild_tensor");
  const Value& storage = values_[args[0]];
  const Value& offset = values_[args[1]];
  if (storage.kind != Kind::kStorage) return Error("_rebuild_tensor without a storage");
  if (offset.kind != Kind::kInt || offset.i < 0) return Error("bad tensor storage offset");
  TensorRec rec;
  rec.storage = static_cast<uint32_t>(storage.i);
  rec.offset = offset.i;
  if (!IntTuple(args[2], &rec.shape) || !IntTuple(args[3], &rec.stride) ||
      rec.shape.size() != rec.stride.size()) {
    return Error("tensor size/stride are not matching tuples of ints");
  }
  if (rec.shape.size() > kMaxDims) {
    return Error(absl::StrCat("tensor with ", rec.shape.size(), " dimensions (at most ", kMaxDims,
                              " supported)"));
  }
  Value v;
  v.kind = Kind::kTensor;
  v.i = static_cast<int64_t>(tensors_.size());
  tensors_.push_back(std::move(rec));
  return PushNew(std::move(v));
}

absl::Status Machine::Reduce() {
  uint32_t args_idx = 0, fn_idx = 0;
  if (absl::Status s = Pop(&args_idx); !s.ok()) return s;
  if (absl::Status s = Pop(&fn_idx); !s.ok()) return s;
  if (values_[args_idx].kind != Kind::kTuple) return Error("REDUCE arguments are not a tuple");
  if (values_[fn_idx].kind != Kind::kGlobal) return Error("REDUCE of a non-callable");
  const std::vector<uint32_t> args = values_[args_idx].items;  // copy: values_ may grow
  const std::string fn = values_[fn_idx].s;
  if (fn == "collections.OrderedDict" || fn == "builtins.dict") {
    if (!args.empty()) return Error("OrderedDict with constructor arguments");
    Value v;
    v.kind = Kind::kDict;
    return PushNew(std::move(v));
  }
  if (fn == "torch._utils._rebuild_tensor_v2") return RebuildTensor(args, true);
  if (fn == "torch._utils._rebuild_tensor") return RebuildTensor(args, false);
  if (fn == "torch._utils._rebuild_parameter" ||
      fn == "torch._utils._rebuild_parameter_with_state") {
    if (args.empty() || values_[args[0]].kind != Kind::kTensor) {
      return Error("_rebuild_parameter without a tensor");
    }
    return Push(args[0]);
  }
  Value v;  // anything else is inert data; refused later if used as a tensor
  v.kind = Kind::kObject;
  v.s = fn;
  return PushNew(std::move(v));
}

absl::Status Machine::Step(uint8_t op) {
  uint32_t a, b;
  int64_t n;
  std::vector<uint32_t> items;
  switch (op) {
    case 0x80:  // PROTO
      if (absl::Status s = ReadInt(1, false, &n); !s.ok()) return s;
      if (n < 2 || n > 5) return Error(absl::StrCat("unsupported pickle protocol ", n));
      return absl::OkStatus();
    case 0x95:  // FRAME
      return ReadInt(8, false, &n);
    case '.':  // STOP
      if (absl::Status s = Pop(&result_); !s.ok()) return s;
      stopped_ = true;
      return absl::OkStatus();
    case '(':  // MARK
      if (marks_.size() >= limits_.max_marks) return Error("MARKs nested too deeply");
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case '0':  // POP
      return Pop(&a);
    case '1':  // POP_MARK
      return PopMark(&items);
    case '2':  // DUP
      if (stack_.size() <= Floor()) return Error("stack underflow");
      return Push(stack_.back());
    case 'N':
      return PushNew(Value{Kind::kNone, 0, {}, {}});
    case 0x88:
      return PushNew(Value{Kind::kBool, 1, {}, {}});
    case 0x89:
      return PushNew(Value{Kind::kBool, 0, {}, {}});
    case 'J':  // BININT
    case 'K':  // BININT1
    case 'M':  // BININT2
      if (absl::Status s = ReadInt(op == 'J' ? 4 : op == 'K' ? 1 : 2, op == 'J', &n); !s.ok())
        return s;
      return PushNew(Value{Kind::kInt, n, {}, {}});
    case 0x8a:    // LONG1
    case 0x8b: {  // LONG4
      int64_t len;
      if (absl::Status s = ReadInt(op == 0x8a ? 1 : 4, true, &len); !s.ok()) return s;
      if (len < 0 || len > 8) return Error(absl::StrCat("integer of ", len, " bytes is too large"));
      if (absl::Status s = ReadInt(static_cast<size_t>(len), true, &n); !s.ok()) return s;
      return PushNew(Value{Kind::kInt, n, {}, {}});
    }
    case 'G':  // BINFLOAT (big-endian double; its value is never needed)
      if (!cur_.Skip(8)) return Error("truncated");
      return PushNew(Value{Kind::kFloat, 0, {}, {}});
    case 'X':
      return PushString(Kind::kString, 4);  // BINUNICODE
    case 0x8c:
      return PushString(Kind::kString, 1);  // SHORT_BINUNICODE
    case 0x8d:
      return PushString(Kind::kString, 8);  // BINUNICODE8
    case 'U':
      return PushString(Kind::kString, 1);  // SHORT_BINSTRING
    case 'T':
      return PushString(Kind::kString, 4);  // BINSTRING
    case 'C':
      return PushString(Kind::kBytes, 1);  // SHORT_BINBYTES
    case 'B':
      return PushString(Kind::kBytes, 4);  // BINBYTES
    case 0x8e:
      return PushString(Kind::kBytes, 8);  // BINBYTES8
    case 'c': {                            // GLOBAL
      std::string module, name;
      if (absl::Status s = ReadLine(&module); !s.ok()) return s;
      if (absl::Status s = ReadLine(&name); !s.ok()) return s;
      return PushGlobal(module + "." + name);
    }
    case 0x93: {  // STACK_GLOBAL
      if (absl::Status s = Pop(&b); !s.ok()) return s;
      if (absl::Status s = Pop(&a); !s.ok()) return s;
      if (values_[a].kind != Kind::kString || values_[b].kind != Kind::kString) {
        return Error("STACK_GLOBAL needs two strings");
      }
      return PushGlobal(values_[a].s + "." + values_[b].s);
    }
    case 'q':  // BINPUT
    case 'r':  // LONG_BINPUT
      if (absl::Status s = ReadInt(op == 'q' ? 1 : 4, false, &n); !s.ok()) return s;
      return Memoize(static_cast<uint32_t>(n));
    case 0x94:  // MEMOIZE
      return Memoize(static_cast<uint32_t>(memo_.size()));
    case 'h':  // BINGET
    case 'j':  // LONG_BINGET
      if (absl::Status s = ReadInt(op == 'h' ? 1 : 4, false, &n); !s.ok()) return s;
      return Get(static_cast<uint32_t>(n));
    case ')':
      return PushNew(Value{Kind::kTuple, 0, {}, {}});
    case ']':
      return PushNew(Value{Kind::kList, 0, {}, {}});
    case '}':
      return PushNew(Value{Kind::kDict, 0, {}, {}});
    case 't':  // TUPLE
    case 'l':  // LIST
    case 'd':  // DICT
      if (absl::Status s = PopMark(&items); !s.ok()) return s;
      if (op == 'd' && items.size() % 2 != 0) return Error("DICT with an odd number of items");
      return PushNew(Value{op == 't'   ? Kind::kTuple
                           : op == 'l' ? Kind::kList
                                       : Kind::kDict,
                           0,
                           {},
                           std::move(items)});
    case 0x85:  // TUPLE1..3
    case 0x86:
    case 0x87: {
      const size_t k = static_cast<size_t>(op - 0x84);
      if (stack_.size() < Floor() + k) return Error("stack underflow");
      items.assign(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
      stack_.resize(stack_.size() - k);
      return PushNew(Value{Kind::kTuple, 0, {}, std::move(items)});
    }
    case 'a':    // APPEND
    case 'e':    // APPENDS
    case 's':    // SETITEM
    case 'u': {  // SETITEMS
      if (op == 'a') {
        if (absl::Status s = Pop(&a); !s.ok()) return s;
        items.push_back(a);
      } else if (op == 's') {
        if (absl::Status s = Pop(&b); !s.ok()) return s;
        if (absl::Status s = Pop(&a); !s.ok()) return s;
        items = {a, b};
      } else if (absl::Status s = PopMark(&items); !s.ok()) {
        return s;
      }
      if (stack_.size() <= Floor()) return Error("stack underflow");
      Value& target = values_[stack_.back()];
      const bool is_list_op = op == 'a' || op == 'e';
      if (target.kind != (is_list_op ? Kind::kList : Kind::kDict)) {
        return Error(
            absl::StrCat(is_list_op ? "APPEND to a " : "SETITEM on a ", KindName(target.kind)));
      }
      if (!is_list_op && items.size() % 2 != 0)
        return Error("SETITEMS with an odd number of items");
      if (target.items.size() + items.size() > limits_.max_values)
        return Error("container too large");
      target.items.insert(target.items.end(), items.begin(), items.end());
      return absl::OkStatus();
    }
    case 'R':  // REDUCE
      return Reduce();
    case 0x81: {  // NEWOBJ: cls.__new__(cls, *args) -> inert object
      if (absl::Status s = Pop(&b); !s.ok()) return s;
      if (absl::Status s = Pop(&a); !s.ok()) return s;
      if (values_[a].kind != Kind::kGlobal) return Error("NEWOBJ of a non-class");
      return PushNew(Value{Kind::kObject, 0, values_[a].s, {}});
    }
    case 'b': {  // BUILD: attribute state (e.g. a state dict's _metadata) is ignored
      if (absl::Status s = Pop(&a); !s.ok()) return s;
      if (stack_.size() <= Floor()) return Error("stack underflow");
      const Kind k = values_[stack_.back()].kind;
      if (k != Kind::kDict && k != Kind::kObject && k != Kind::kTensor) {
        return Error(absl::StrCat("BUILD on a ", KindName(k)));
      }
      return absl::OkStatus();
    }
    case 'Q':  // BINPERSID
      return PersistentLoad();
    default:
      return Error("unsupported pickle opcode");
  }
}

absl::StatusOr<std::vector<PickledTensor>> Machine::Run() {
  while (!stopped_) {
    op_pos_ = cur_.pos();
    if (!cur_.ReadU8(&op_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("pickle: ends without STOP at offset ", cur_.pos(), " (truncated?)"));
    }
    if (absl::Status s = Step(op_); !s.ok()) return s;
  }
  const Value& top = values_[result_];
  if (top.kind != Kind::kDict) {
    return absl::InvalidArgumentError(absl::StrCat("pickle: the top-level object is a ",
                                                   KindName(top.kind), ", not a state dict"));
  }
  std::vector<PickledTensor> out;
  for (size_t k = 0; k + 1 < top.items.size(); k += 2) {
    const Value& key = values_[top.items[k]];
    const Value& val = values_[top.items[k + 1]];
    if (key.kind != Kind::kString) {
      return absl::InvalidArgumentError(absl::StrCat("pickle: state dict key ", k / 2, " is a ",
                                                     KindName(key.kind), ", not a string"));
    }
    if (val.kind != Kind::kTensor) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pickle: state dict entry '", key.s, "' is a ", KindName(val.kind),
          val.kind == Kind::kObject || val.kind == Kind::kGlobal ? absl::StrCat(" (", val.s, ")")
                                                                 : "",
          ", not a tensor"));
    }
    const TensorRec& t = tensors_[static_cast<size_t>(val.i)];
    const StorageRec& st = storages_[t.storage];
    PickledTensor p;
    p.name = key.s;
    p.storage_type = st.type;
    p.storage_key = st.key;
    p.storage_numel = st.numel;
    p.storage_offset = t.offset;
    p.shape = t.shape;
    p.stride = t.stride;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<PickledTensor>> ParseTorchStateDict(std::span<const uint8_t> pkl,
                                                               const PickleLimits& limits) {
  Machine m(pkl, limits);
  return m.Run();
}

}  // namespace rwkv::loader_internal
