// A small unpickler for state dicts saved by Python's torch.save (zip format, pickle protocol 2-5).
//
// LibTorch's own torch::jit::Unpickler turns every collections.OrderedDict into None (it expects
// one only as a tensor's backward-hooks argument), with or without a type resolver, so it cannot
// read `torch.save(model.state_dict())` or OpenCLIP's checkpoints. This reader runs the pickle
// opcodes that torch.save emits, builds dicts, lists, tuples, numbers, strings and tensors
// (torch._utils._rebuild_tensor_v2 / _rebuild_parameter over storages read from the zip), and
// keeps anything else as an opaque value so that e.g. optimizer state or argparse objects beside
// the state dict do no harm. read_torch_train_checkpoint also takes out an OpenCLIP checkpoint's
// epoch, name and torch.optim state (int-keyed dicts, numbers, booleans, None, tuples).
//
// The bytes are hostile until proven otherwise (tests/fuzz/fuzz_torch_pickle.cpp):
// - every value lives in one arena and refers to others by pointer, so a deep or cyclic structure
//   is freed flat (no recursive destructor) and nothing walks it recursively;
// - every opcode checks the stack, the memo and the kinds of the values it uses;
// - integers are at most 64 bits (LONG1/LONG4 longer than 8 bytes are refused);
// - a storage is allocated only once its record is known to hold exactly its bytes, and the
//   storages together fit in the file; a view must lie inside its storage, and the bytes that
//   views materialise (a zero stride repeats an element) are bounded by the file size;
// - everything else the reader builds (values, strings, the lists it converts them to) is charged
//   to one budget, PickleLimits (torch_pickle.hpp) times the file's size plus a floor, before it
//   is built: memo references (BINGET) cost two bytes each however large the value they repeat, so
//   a STACK_GLOBAL over a memoised string, or a dict key or 'params' list repeated by reference,
//   would otherwise turn a 1 MB file into gigabytes.
#include "torch_pickle.hpp"

#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>

#include "clipper/core/error.hpp"

namespace clipper::io::detail {
namespace {

using core::InputError;

// Views may materialise at most this many times the file's bytes in all (tied or repeated
// weights), and each at most the file's bytes.
constexpr std::uint64_t kViewBytesPerFileByte = 4;
constexpr std::size_t kMaxDims = 64;
constexpr std::uint64_t kMemoEntryBytes = 64;      // a std::map node
constexpr std::uint64_t kScalarTensorBytes = 512;  // a 0-dim tensor: TensorImpl, storage
// State dicts with optimizer state hold tens of thousands of values; the cap keeps a long
// pickle of tiny opcodes from turning each byte into a ~100-byte value without end.
constexpr std::size_t kMaxValues = std::size_t{1} << 22;

struct Value {
  enum class Kind {
    none,
    boolean,
    integer,
    real,
    string,
    tensor,
    list,
    tuple,
    dict,
    global,
    storage,
    mark,
    opaque
  };
  Kind kind = Kind::none;
  bool b = false;
  std::int64_t i = 0;
  double d = 0.0;
  std::string s;                                   // string; global "module.name"
  at::Tensor t;                                    // tensor; storage (flat, typed)
  std::vector<Value*> items;                       // list, tuple
  std::vector<std::pair<Value*, Value*>> entries;  // dict
};
using Ref = Value*;  // owned by the Unpickler's arena

at::ScalarType storage_dtype(const Value& global) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},       {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
      {"torch.LongStorage", at::kLong},         {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},       {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},         {"torch.BoolStorage", at::kBool},
  };
  if (global.kind != Value::Kind::global)
    throw InputError("malformed persistent id: the storage type is not a class");
  auto it = types.find(global.s);
  if (it == types.end()) throw InputError("unsupported tensor storage type " + global.s);
  return it->second;
}

std::uint64_t mul_checked(std::uint64_t a, std::uint64_t b, const char* what) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw InputError(std::string(what) + " overflows");
  return r;
}

std::uint64_t add_checked(std::uint64_t a, std::uint64_t b, const char* what) {
  std::uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw InputError(std::string(what) + " overflows");
  return r;
}

// The bytes the reader may still build; charge() comes before the allocation it pays for.
class Budget {
 public:
  Budget(std::uint64_t file_size, const PickleLimits& limits)
      : file_size_(file_size),
        limit_(add_checked(mul_checked(limits.built_bytes_per_file_byte, file_size, "the budget"),
                           limits.built_bytes_floor, "the budget")) {}
  void charge(std::uint64_t bytes) {
    if (__builtin_add_overflow(used_, bytes, &used_) || used_ > limit_)
      throw InputError("the pickle builds more than " + std::to_string(limit_) +
                       " bytes of values, the limit for a file of " + std::to_string(file_size_) +
                       " bytes (repeated memo references?)");
  }
  void charge(std::uint64_t count, std::uint64_t each) {
    charge(count > limit_ / std::max<std::uint64_t>(each, 1) ? limit_ + 1 : count * each);
  }

 private:
  std::uint64_t file_size_, limit_, used_ = 0;
};

class Unpickler {
 public:
  Unpickler(const char* data, std::size_t size, caffe2::serialize::PyTorchStreamReader& zip,
            std::uint64_t file_size, Budget& budget)
      : p_(data), end_(data + size), zip_(zip), file_size_(file_size), budget_(budget) {}

  Ref run() {
    while (true) {
      const auto op = static_cast<unsigned char>(byte());
      if (op == '.') return pop();  // STOP
      if (!push_op(op) && !container_op(op) && !stack_op(op))
        throw InputError("unsupported pickle opcode 0x" + hex(op));
    }
  }

 private:
  // Opcodes that push one new value.
  bool push_op(unsigned char op) {
    switch (op) {
      case ')':
        return push(make(Value::Kind::tuple)), true;
      case ']':
        return push(make(Value::Kind::list)), true;
      case '}':
        return push(make(Value::Kind::dict)), true;
      case 'N':
        return push(make(Value::Kind::none)), true;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        Ref v = make(Value::Kind::boolean);
        v->b = op == 0x88;
        return push(v), true;
      }
      case 'J':
        return push_int(static_cast<std::int32_t>(le(4))), true;
      case 'K':
        return push_int(static_cast<std::int64_t>(le(1))), true;
      case 'M':
        return push_int(static_cast<std::int64_t>(le(2))), true;
      case 0x8a:  // LONG1
        return push_int(long_int(le(1))), true;
      case 0x8b:  // LONG4
        return push_int(long_int(le(4))), true;
      case 'G':
        return push_float(), true;
      case 'X':
      case 'T':
      case 'B':
        return push_string(take(le(4))), true;
      case 0x8c:
      case 'U':
      case 'C':
        return push_string(take(le(1))), true;
      case 0x8d:
      case 0x8e:
        return push_string(take(le(8))), true;
      case 'c': {  // GLOBAL
        const std::string module = line(), name = line();
        return push_global(module, name), true;
      }
      case 0x93: {  // STACK_GLOBAL
        Ref name = pop(), module = pop();
        if (module->kind != Value::Kind::string || name->kind != Value::Kind::string)
          throw InputError("malformed pickle (STACK_GLOBAL needs two strings)");
        return push_global(module->s, name->s), true;
      }
    }
    return false;
  }

  // Opcodes that build or fill containers and objects.
  bool container_op(unsigned char op) {
    switch (op) {
      case 't':
        return push(to_tuple(pop_mark())), true;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<Ref> items(op - 0x84);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        return push(to_tuple(std::move(items))), true;
      }
      case 's': {  // SETITEM
        Ref v = pop(), k = pop();
        if (Ref d = target(Value::Kind::dict, "SETITEM")) {
          budget_.charge(sizeof(d->entries[0]));
          d->entries.emplace_back(k, v);
        }
        return true;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2 != 0) throw InputError("malformed pickle (SETITEMS with odd items)");
        if (Ref d = target(Value::Kind::dict, "SETITEMS")) {
          budget_.charge(items.size() / 2, sizeof(d->entries[0]));
          for (std::size_t k = 0; k + 1 < items.size(); k += 2)
            d->entries.emplace_back(items[k], items[k + 1]);
        }
        return true;
      }
      case 'a': {  // APPEND
        Ref v = pop();
        if (Ref l = target(Value::Kind::list, "APPEND")) {
          budget_.charge(sizeof(Ref));
          l->items.push_back(v);
        }
        return true;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        if (Ref l = target(Value::Kind::list, "APPENDS")) {
          budget_.charge(items.size(), sizeof(Ref));
          l->items.insert(l->items.end(), items.begin(), items.end());
        }
        return true;
      }
      case 'R': {  // REDUCE
        Ref args = pop(), fn = pop();
        if (args->kind != Value::Kind::tuple)
          throw InputError("malformed pickle (REDUCE arguments are not a tuple)");
        return push(reduce(*fn, *args)), true;
      }
      case 0x81:  // NEWOBJ: cls, args
        pop(), pop();
        return push(make(Value::Kind::opaque)), true;
      case 0x92:  // NEWOBJ_EX: cls, args, kwargs
        pop(), pop(), pop();
        return push(make(Value::Kind::opaque)), true;
      case 'b':  // BUILD: the state is ignored (e.g. an OrderedDict's _metadata)
        pop();
        top("BUILD");
        return true;
      case 'Q':  // BINPERSID
        return push(persistent(*pop())), true;
    }
    return false;
  }

  // Framing, memo and plain stack manipulation.
  bool stack_op(unsigned char op) {
    switch (op) {
      case 0x80:  // PROTO
        byte();
        return true;
      case 0x95:  // FRAME: its length only; the frame's opcodes follow inline
        le(8);
        return true;
      case 'q':
        return memoize(le(1), "BINPUT"), true;
      case 'r':
        return memoize(le(4), "LONG_BINPUT"), true;
      case 0x94:  // MEMOIZE
        return memoize(memo_.size(), "MEMOIZE"), true;
      case 'h':
        return push(memo(le(1))), true;
      case 'j':
        return push(memo(le(4))), true;
      case '0':  // POP
        return pop(), true;
      case '1':  // POP_MARK
        return pop_mark(), true;
      case '2':  // DUP
        return push(top("DUP")), true;
      case '(':  // MARK
        return push(make(Value::Kind::mark)), true;
    }
    return false;
  }

  static std::string hex(unsigned v) {
    const char* d = "0123456789abcdef";
    return std::string{d[(v >> 4) & 15], d[v & 15]};
  }
  char byte() {
    if (p_ >= end_) throw InputError("the pickle ends early");
    return *p_++;
  }
  std::string take(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(end_ - p_)) throw InputError("the pickle ends early");
    budget_.charge(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::uint64_t le(std::size_t n) {
    std::uint64_t u = 0;
    for (std::size_t k = 0; k < n; ++k)
      u |= static_cast<std::uint64_t>(static_cast<unsigned char>(byte())) << (8 * k);
    return u;
  }
  // LONG1 / LONG4: a little-endian two's-complement integer of n bytes, at most 64 bits here.
  std::int64_t long_int(std::uint64_t n) {
    if (n > 8)
      throw InputError("pickle integer of " + std::to_string(n) + " bytes exceeds 64 bits");
    std::uint64_t u = n ? le(static_cast<std::size_t>(n)) : 0;
    if (n > 0 && n < 8 && ((u >> (8 * n - 1)) & 1)) u |= ~0ull << (8 * n);  // sign-extend
    return static_cast<std::int64_t>(u);
  }
  std::string line() {
    std::string s;
    for (char c = byte(); c != '\n'; c = byte()) s += c;
    budget_.charge(s.size());
    return s;
  }

  Ref make(Value::Kind k) {
    if (arena_.size() >= kMaxValues)
      throw InputError("the pickle holds more than " + std::to_string(kMaxValues) + " values");
    budget_.charge(sizeof(Value));
    arena_.emplace_back();
    arena_.back().kind = k;
    return &arena_.back();
  }
  void push(Ref v) {
    if (stack_.size() >= stack_charged_) {
      budget_.charge(sizeof(Ref));
      ++stack_charged_;
    }
    stack_.push_back(v);
  }
  Ref pop() {
    if (stack_.empty()) throw InputError("malformed pickle (stack underflow)");
    Ref v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Ref top(const char* op) {
    if (stack_.empty())
      throw InputError(std::string("malformed pickle (") + op + " on an empty stack)");
    return stack_.back();
  }
  // The container an opcode fills: a value of `kind`, or nullptr for an opaque object (whose
  // contents are ignored); anything else is malformed.
  Ref target(Value::Kind kind, const char* op) {
    Ref t = top(op);
    if (t->kind == kind) return t;
    if (t->kind == Value::Kind::opaque) return nullptr;
    throw InputError(std::string("malformed pickle (") + op + " on a value of the wrong kind)");
  }
  void memoize(std::uint64_t index, const char* op) {
    Ref v = top(op);
    budget_.charge(kMemoEntryBytes);
    memo_[index] = v;
  }
  Ref memo(std::uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end())
      throw InputError("malformed pickle (memo entry " + std::to_string(index) + " is not set)");
    return it->second;
  }
  std::vector<Ref> pop_mark() {
    std::vector<Ref> items;
    while (true) {
      Ref v = pop();
      if (v->kind == Value::Kind::mark) break;
      items.push_back(v);
    }
    return {items.rbegin(), items.rend()};
  }
  Ref to_tuple(std::vector<Ref> items) {
    Ref t = make(Value::Kind::tuple);
    budget_.charge(items.size(), sizeof(Ref));
    t->items = std::move(items);
    return t;
  }
  void push_int(std::int64_t i) {
    Ref v = make(Value::Kind::integer);
    v->i = i;
    push(v);
  }
  void push_float() {  // BINFLOAT, big-endian
    std::uint64_t u = 0;
    for (int k = 0; k < 8; ++k) u = (u << 8) | static_cast<unsigned char>(byte());
    Ref v = make(Value::Kind::real);
    std::memcpy(&v->d, &u, 8);
    push(v);
  }
  void push_string(std::string s) {
    Ref v = make(Value::Kind::string);
    v->s = std::move(s);
    push(v);
  }
  // "module.name": STACK_GLOBAL may repeat one memoised string any number of times.
  void push_global(const std::string& module, const std::string& name) {
    Ref v = make(Value::Kind::global);
    budget_.charge(module.size() + 1);
    budget_.charge(name.size());
    v->s.reserve(module.size() + 1 + name.size());  // module + "." + name would grow it to 2x
    v->s.append(module).append(1, '.').append(name);
    push(v);
  }

  static const Value& arg(const Value& args, std::size_t k, Value::Kind kind, const char* what) {
    if (k >= args.items.size() || args.items[k]->kind != kind)
      throw InputError(std::string("malformed tensor arguments: ") + what);
    return *args.items[k];
  }
  // A tuple of non-negative integers (a size or a stride).
  static std::vector<std::int64_t> dims(const Value& tuple, const char* what) {
    if (tuple.items.size() > kMaxDims)
      throw InputError(std::string("a tensor ") + what + " has more than 64 dimensions");
    std::vector<std::int64_t> out;
    for (const Ref v : tuple.items) {
      if (v->kind != Value::Kind::integer || v->i < 0)
        throw InputError(std::string("a tensor ") + what + " holds a value that is not a " +
                         "non-negative integer");
      out.push_back(v->i);
    }
    return out;
  }

  Ref reduce(const Value& fn, const Value& args) {
    const std::string& name = fn.kind == Value::Kind::global ? fn.s : std::string();
    if (name == "collections.OrderedDict" || name == "builtins.dict")
      return make(Value::Kind::dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor")
      return rebuild_tensor(args);
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state" ||
        name == "torch.jit._pickle.restore_type_tag") {
      if (args.items.empty()) throw InputError("malformed pickle (" + name + " without arguments)");
      return args.items[0];
    }
    return make(Value::Kind::opaque);
  }

  // (storage, storage_offset, size, stride, ...): a view into the storage, copied out.
  Ref rebuild_tensor(const Value& args) {
    const Value& storage = arg(args, 0, Value::Kind::storage, "no storage");
    const Value& offset = arg(args, 1, Value::Kind::integer, "the offset is not an integer");
    const auto size = dims(arg(args, 2, Value::Kind::tuple, "the size is not a tuple"), "size");
    const auto stride =
        dims(arg(args, 3, Value::Kind::tuple, "the stride is not a tuple"), "stride");
    if (size.size() != stride.size())
      throw InputError("a tensor's size and stride differ in length");
    if (offset.i < 0) throw InputError("a tensor's storage offset is negative");
    std::uint64_t numel = 1, last = static_cast<std::uint64_t>(offset.i);
    for (std::size_t k = 0; k < size.size(); ++k) {
      numel = mul_checked(numel, static_cast<std::uint64_t>(size[k]), "a tensor's element count");
      if (size[k] > 0)
        last = add_checked(last,
                           mul_checked(static_cast<std::uint64_t>(size[k] - 1),
                                       static_cast<std::uint64_t>(stride[k]), "a tensor's extent"),
                           "a tensor's extent");
    }
    const auto storage_numel = static_cast<std::uint64_t>(storage.t.numel());
    if (numel > 0 ? last >= storage_numel : last > storage_numel)
      throw InputError("a tensor view reaches element " + std::to_string(last) +
                       " of a storage of " + std::to_string(storage_numel) + " elements");
    const std::uint64_t bytes = mul_checked(numel, storage.t.element_size(), "a tensor's size");
    view_bytes_ = add_checked(view_bytes_, bytes, "the tensors' total size");
    if (bytes > file_size_ || view_bytes_ > kViewBytesPerFileByte * file_size_)
      throw InputError("tensor views ask for " + std::to_string(view_bytes_) +
                       " bytes, more than the file's " + std::to_string(file_size_) +
                       " bytes can hold");
    Ref v = make(Value::Kind::tensor);
    v->t = storage.t.as_strided(size, stride, offset.i).clone();
    return v;
  }

  // ('storage', storage type, key, location, numel): the record data/<key>, read once.
  Ref persistent(const Value& pid) {
    const auto& a = pid.items;
    if (pid.kind != Value::Kind::tuple || a.size() < 5 || a[0]->kind != Value::Kind::string ||
        a[0]->s != "storage" || a[2]->kind != Value::Kind::string ||
        a[4]->kind != Value::Kind::integer)
      throw InputError("unsupported persistent id in the pickle");
    const std::string& key = a[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const auto dtype = storage_dtype(*a[1]);
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) throw InputError("the archive lacks tensor data " + record);
    if (a[4]->i < 0) throw InputError("tensor data " + record + " has a negative element count");
    const std::uint64_t bytes = mul_checked(static_cast<std::uint64_t>(a[4]->i),
                                            c10::elementSize(dtype), "a storage's size");
    const std::uint64_t held = zip_.getRecordSize(record);
    if (held != bytes)
      throw InputError("tensor data " + record + " holds " + std::to_string(held) +
                       " bytes, expected " + std::to_string(bytes));
    storage_bytes_ = add_checked(storage_bytes_, bytes, "the storages' total size");
    if (storage_bytes_ > file_size_)
      throw InputError("the storages claim " + std::to_string(storage_bytes_) +
                       " bytes, more than the file's " + std::to_string(file_size_));
    Ref v = make(Value::Kind::storage);
    v->t = at::empty({a[4]->i}, at::TensorOptions().dtype(dtype));
    const auto got = zip_.getRecord(record, v->t.data_ptr(), bytes);
    if (got != bytes)
      throw InputError("tensor data " + record + " holds " + std::to_string(got) +
                       " bytes, expected " + std::to_string(bytes));
    storages_[key] = v;
    return v;
  }

  const char* p_;
  const char* end_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::uint64_t file_size_;
  Budget& budget_;
  std::uint64_t storage_bytes_ = 0, view_bytes_ = 0;
  std::size_t stack_charged_ = 0;  // the stack's high-water mark, charged
  std::deque<Value> arena_;        // every value; freed flat whatever the structure
  std::vector<Ref> stack_;
  std::map<std::uint64_t, Ref> memo_;
  std::map<std::string, Ref> storages_;
};

// Bounds-checked reads from bytes in memory (caffe2's MemoryReadAdapter does not check).
class BytesAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesAdapter(const std::string& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* what = "") const override {
    if (pos >= bytes_.size()) return 0;
    n = std::min<std::uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const std::string& bytes_;
};

TensorList state_dict_of(const Value& file_root, Budget& budget) {
  const Value* root = &file_root;
  if (root->kind == Value::Kind::dict)
    for (const auto& [k, v] : root->entries)
      if (k->kind == Value::Kind::string && k->s == "state_dict") {
        root = v;
        break;
      }
  if (root->kind != Value::Kind::dict)
    throw InputError(
        "not a state dict: it holds no dict of tensors (nor a dict with a 'state_dict' entry)");
  TensorList out;
  for (const auto& [k, v] : root->entries) {
    if (k->kind != Value::Kind::string) throw InputError("a state-dict key is not a string");
    if (v->kind != Value::Kind::tensor)
      throw InputError("not a state dict: entry '" + k->s + "' is not a tensor");
    budget.charge(sizeof(out[0]) + k->s.size());
    out.emplace_back(k->s, v->t);
  }
  return out;
}

// The value under string key `key` of a dict, or nullptr.
const Value* entry(const Value& dict, const std::string& key) {
  for (const auto& [k, v] : dict.entries)
    if (k->kind == Value::Kind::string && k->s == key) return v;
  return nullptr;
}

std::vector<std::int64_t> int_list(const Value& v, const std::string& what, Budget& budget) {
  if (v.kind != Value::Kind::list && v.kind != Value::Kind::tuple)
    throw InputError(what + " is not a list");
  budget.charge(v.items.size(), sizeof(std::int64_t));
  std::vector<std::int64_t> out;
  for (const Ref x : v.items) {
    if (x->kind != Value::Kind::integer) throw InputError(what + " holds a non-integer");
    out.push_back(x->i);
  }
  return out;
}

bool is_number(const Value& v) {
  return v.kind == Value::Kind::integer || v.kind == Value::Kind::real ||
         v.kind == Value::Kind::boolean;
}
double number(const Value& v) {
  return v.kind == Value::Kind::integer ? static_cast<double>(v.i)
         : v.kind == Value::Kind::real  ? v.d
                                        : (v.b ? 1.0 : 0.0);
}

// Every group may be the same dict by reference (and its 'params' the same list): each copy out is
// charged.
io::TorchOptimizerGroup group_of(const Value& g, const std::string& what, Budget& budget) {
  if (g.kind != Value::Kind::dict) throw InputError(what + " is not a dict");
  io::TorchOptimizerGroup out;
  for (const auto& [k, v] : g.entries) {
    if (k->kind != Value::Kind::string) throw InputError(what + " has a key that is not a string");
    budget.charge(kMemoEntryBytes + k->s.size());  // a map node or a vector entry and its key
    if (k->s == "params") {
      out.params = int_list(*v, what + " 'params'", budget);
    } else if (is_number(*v)) {
      out.scalars[k->s] = number(*v);
    } else if (v->kind == Value::Kind::none) {
      out.none.push_back(k->s);
    } else if (v->kind == Value::Kind::tuple || v->kind == Value::Kind::list) {
      auto& t = out.tuples[k->s];
      budget.charge(v->items.size(), sizeof(double));
      for (const Ref x : v->items)
        if (is_number(*x)) t.push_back(number(*x));
    }  // anything else (a string, an object) says nothing clipper uses
  }
  return out;
}

// {name: tensor or number} of one parameter's state.
std::map<std::string, at::Tensor> param_state_of(const Value& v, const std::string& what,
                                                 Budget& budget) {
  if (v.kind != Value::Kind::dict) throw InputError(what + " is not a dict");
  std::map<std::string, at::Tensor> out;
  for (const auto& [k, x] : v.entries) {
    if (k->kind != Value::Kind::string) throw InputError(what + " has a key that is not a string");
    budget.charge(kMemoEntryBytes + k->s.size() + (is_number(*x) ? kScalarTensorBytes : 0));
    if (x->kind == Value::Kind::tensor)
      out[k->s] = x->t;
    else if (is_number(*x))
      out[k->s] = at::scalar_tensor(number(*x), at::kDouble);
    else
      throw InputError(what + " '" + k->s + "' is neither a tensor nor a number");
  }
  return out;
}

io::TorchOptimizerState optimizer_of(const Value& v, Budget& budget) {
  if (v.kind != Value::Kind::dict) throw InputError("'optimizer' is not a dict");
  const Value* state = entry(v, "state");
  const Value* groups = entry(v, "param_groups");
  if (!state || state->kind != Value::Kind::dict || !groups || groups->kind != Value::Kind::list)
    throw InputError(
        "'optimizer' is not a torch.optim state dict (no 'state' dict and "
        "'param_groups' list)");
  io::TorchOptimizerState out;
  for (const auto& [k, x] : state->entries) {
    if (k->kind != Value::Kind::integer)
      throw InputError("'optimizer' 'state' has a key that is not a parameter index");
    budget.charge(kMemoEntryBytes);
    out.state[k->i] =
        param_state_of(*x, "optimizer state of parameter " + std::to_string(k->i), budget);
  }
  for (std::size_t g = 0; g < groups->items.size(); ++g)
    out.groups.push_back(
        group_of(*groups->items[g], "optimizer param_groups[" + std::to_string(g) + "]", budget));
  return out;
}

io::TorchTrainCheckpoint train_checkpoint_of(const Value& root, Budget& budget) {
  if (root.kind != Value::Kind::dict) throw InputError("the file does not hold a dict");
  io::TorchTrainCheckpoint out;
  for (const auto& [k, v] : root.entries)
    if (k->kind == Value::Kind::string) {
      budget.charge(sizeof(std::string) + k->s.size());
      out.keys.push_back(k->s);
    }
  if (entry(root, "state_dict")) out.state_dict = state_dict_of(root, budget);
  if (const Value* e = entry(root, "epoch")) {
    if (e->kind != Value::Kind::integer) throw InputError("'epoch' is not an integer");
    out.epoch = e->i;
  }
  if (const Value* n = entry(root, "name"); n && n->kind == Value::Kind::string) out.name = n->s;
  if (const Value* o = entry(root, "optimizer")) out.optimizer = optimizer_of(*o, budget);
  return out;
}

// Runs the pickle of the archive and converts its root with `convert` while the values live.
template <typename Convert>
auto read_zip(caffe2::serialize::PyTorchStreamReader& zip, std::uint64_t file_size,
              const PickleLimits& limits, Convert convert) {
  if (!zip.hasRecord("data.pkl")) throw InputError("no data.pkl in the archive");
  if (zip.getRecordSize("data.pkl") > file_size)
    throw InputError("data.pkl claims more bytes than the file holds");
  auto [data, size] = zip.getRecord("data.pkl");
  Budget budget(file_size, limits);
  Unpickler u(static_cast<const char*>(data.get()), size, zip, file_size, budget);
  return convert(*u.run(), budget);
}

template <typename Open>
auto read_guarded(const std::string& name, const char* as, Open open) {
  try {
    return open();
  } catch (const InputError& e) {
    throw InputError("cannot read '" + name + "' as " + as + ": " + e.what());
  } catch (const c10::Error& e) {
    throw InputError("cannot read '" + name + "' as " + as + ": " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw InputError("cannot read '" + name + "' as " + as + ": out of memory");
  }
}

template <typename Convert>
auto read_file(const std::string& path, const char* as, Convert convert) {
  return read_guarded(path, as, [&] {
    auto adapter = std::make_shared<caffe2::serialize::FileAdapter>(path);
    const std::uint64_t size = adapter->size();
    caffe2::serialize::PyTorchStreamReader zip(adapter);
    return read_zip(zip, size, PickleLimits{}, convert);
  });
}

template <typename Convert>
auto read_bytes(const std::string& bytes, const std::string& name, const char* as,
                const PickleLimits& limits, Convert convert) {
  return read_guarded(name, as, [&] {
    caffe2::serialize::PyTorchStreamReader zip(std::make_shared<BytesAdapter>(bytes));
    return read_zip(zip, bytes.size(), limits, convert);
  });
}

constexpr const char* kStateDict = "a torch.save state dict";
constexpr const char* kTrainCheckpoint = "a torch.save training checkpoint";

}  // namespace

TensorList read_torch_save_state_dict(const std::string& path) {
  return read_file(path, kStateDict, state_dict_of);
}

TensorList read_torch_save_state_dict_bytes(const std::string& bytes, const std::string& name,
                                            const PickleLimits& limits) {
  return read_bytes(bytes, name, kStateDict, limits, state_dict_of);
}

io::TorchTrainCheckpoint read_torch_train_checkpoint_bytes(const std::string& bytes,
                                                           const std::string& name,
                                                           const PickleLimits& limits) {
  return read_bytes(bytes, name, kTrainCheckpoint, limits, train_checkpoint_of);
}

}  // namespace clipper::io::detail

namespace clipper::io {

TorchTrainCheckpoint read_torch_train_checkpoint(const std::string& path) {
  return detail::read_file(path, detail::kTrainCheckpoint, detail::train_checkpoint_of);
}

}  // namespace clipper::io
