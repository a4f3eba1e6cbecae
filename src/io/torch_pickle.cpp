// A small unpickler for state dicts saved by Python's torch.save (zip format, pickle protocol 2-5).
//
// LibTorch's own torch::pickle_load turns every collections.OrderedDict into None (it expects one
// only as a tensor's backward-hooks argument), so it cannot read `torch.save(model.state_dict())`
// or OpenCLIP's checkpoints. This reader runs the pickle opcodes that torch.save emits, builds
// dicts, lists, tuples, numbers, strings and tensors (torch._utils._rebuild_tensor_v2 /
// _rebuild_parameter over storages read from the zip), and keeps anything else as an opaque value
// so that e.g. optimizer state or argparse objects beside the state dict do no harm.
#include "torch_pickle.hpp"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <memory>

#include "clipper/core/error.hpp"

namespace clipper::io::detail {
namespace {

using core::InputError;

struct Value;
using Ref = std::shared_ptr<Value>;

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
  std::string s;                             // string; global "module.name"; storage key
  at::Tensor t;                              // tensor; storage (flat, typed)
  std::vector<Ref> items;                    // list, tuple
  std::vector<std::pair<Ref, Ref>> entries;  // dict
};

Ref make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

at::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},       {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
      {"torch.LongStorage", at::kLong},         {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},       {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},         {"torch.BoolStorage", at::kBool},
  };
  auto it = types.find(global);
  if (it == types.end()) throw InputError("unsupported tensor storage type " + global);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const char* data, std::size_t size, caffe2::serialize::PyTorchStreamReader& zip)
      : p_(data), end_(data + size), zip_(zip) {}

  Ref run() {
    while (true) {
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80:
          byte();
          break;  // PROTO
        case 0x95:
          take(8);
          break;  // FRAME
        case '.':
          return pop();  // STOP
        case '(':
          stack_.push_back(make(Value::Kind::mark));
          break;
        case ')':
          stack_.push_back(make(Value::Kind::tuple));
          break;
        case ']':
          stack_.push_back(make(Value::Kind::list));
          break;
        case '}':
          stack_.push_back(make(Value::Kind::dict));
          break;
        case 'N':
          stack_.push_back(make(Value::Kind::none));
          break;
        case 0x88:
        case 0x89: {
          auto v = make(Value::Kind::boolean);
          v->b = op == 0x88;
          stack_.push_back(v);
          break;
        }
        case 'J':
          push_int(static_cast<std::int32_t>(le(4)));
          break;
        case 'K':
          push_int(static_cast<std::int64_t>(le(1)));
          break;
        case 'M':
          push_int(static_cast<std::int64_t>(le(2)));
          break;
        case 0x8a: {  // LONG1
          const auto n = static_cast<std::size_t>(le(1));
          std::uint64_t u = n ? le(n) : 0;
          if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~0ull << (8 * n);  // sign-extend
          push_int(static_cast<std::int64_t>(u));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          std::uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | static_cast<unsigned char>(byte());
          auto v = make(Value::Kind::real);
          std::memcpy(&v->d, &u, 8);
          stack_.push_back(v);
          break;
        }
        case 'X':
        case 'T':
        case 'B':
          push_string(take(le(4)));
          break;
        case 0x8c:
        case 'U':
        case 'C':
          push_string(take(le(1)));
          break;
        case 0x8d:
        case 0x8e:
          push_string(take(le(8)));
          break;
        case 'q':
          memo_[le(1)] = stack_.back();
          break;
        case 'r':
          memo_[le(4)] = stack_.back();
          break;
        case 0x94:
          memo_[memo_.size()] = stack_.back();
          break;  // MEMOIZE
        case 'h':
          stack_.push_back(memo_.at(le(1)));
          break;
        case 'j':
          stack_.push_back(memo_.at(le(4)));
          break;
        case 'c': {
          const std::string module = line(), name = line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          push_global(module->s + "." + name->s);
          break;
        }
        case 't':
          stack_.push_back(to_tuple(pop_mark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {
          std::vector<Ref> items(op - 0x84);
          for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
          stack_.push_back(to_tuple(items));
          break;
        }
        case 's': {
          auto v = pop(), k = pop();
          stack_.back()->entries.emplace_back(k, v);
          break;
        }
        case 'u': {
          auto items = pop_mark();
          auto& d = stack_.back();
          for (std::size_t k = 0; k + 1 < items.size(); k += 2)
            d->entries.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'a': {
          auto v = pop();
          stack_.back()->items.push_back(v);
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto& l = stack_.back()->items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 'R': {
          auto args = pop(), fn = pop();
          stack_.push_back(reduce(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          pop();
          pop();
          stack_.push_back(make(Value::Kind::opaque));
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: state ignored (e.g. an OrderedDict's _metadata)
        case 'Q':
          stack_.push_back(persistent(pop()));
          break;
        case '0':
          pop();
          break;  // POP
        case '2':
          stack_.push_back(stack_.back());
          break;  // DUP
        case '1':
          pop_mark();
          break;  // POP_MARK
        default:
          throw InputError("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

 private:
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
  std::string line() {
    std::string s;
    for (char c = byte(); c != '\n'; c = byte()) s += c;
    return s;
  }
  Ref pop() {
    if (stack_.empty()) throw InputError("malformed pickle (stack underflow)");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  std::vector<Ref> pop_mark() {
    std::vector<Ref> items;
    while (true) {
      auto v = pop();
      if (v->kind == Value::Kind::mark) break;
      items.push_back(v);
    }
    return {items.rbegin(), items.rend()};
  }
  static Ref to_tuple(std::vector<Ref> items) {
    auto t = make(Value::Kind::tuple);
    t->items = std::move(items);
    return t;
  }
  void push_int(std::int64_t i) {
    auto v = make(Value::Kind::integer);
    v->i = i;
    stack_.push_back(v);
  }
  void push_string(std::string s) {
    auto v = make(Value::Kind::string);
    v->s = std::move(s);
    stack_.push_back(v);
  }
  void push_global(const std::string& name) {
    auto v = make(Value::Kind::global);
    v->s = name;
    stack_.push_back(v);
  }
  static std::vector<std::int64_t> ints(const Ref& tuple) {
    std::vector<std::int64_t> out;
    for (const auto& v : tuple->items) out.push_back(v->i);
    return out;
  }

  Ref reduce(const Ref& fn, const Ref& args) {
    const std::string& name = fn->kind == Value::Kind::global ? fn->s : std::string();
    if (name == "collections.OrderedDict" || name == "builtins.dict")
      return make(Value::Kind::dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      const auto& a = args->items;
      if (a.size() < 4 || a[0]->kind != Value::Kind::storage)
        throw InputError("malformed _rebuild_tensor_v2 arguments");
      auto v = make(Value::Kind::tensor);
      v->t = a[0]->t.as_strided(ints(a[2]), ints(a[3]), a[1]->i).clone();
      return v;
    }
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state" ||
        name == "torch.jit._pickle.restore_type_tag")
      return args->items.at(0);
    return make(Value::Kind::opaque);
  }

  Ref persistent(const Ref& pid) {
    // ('storage', storage type, key, location, numel)
    const auto& a = pid->items;
    if (pid->kind != Value::Kind::tuple || a.size() < 5 || a[0]->s != "storage")
      throw InputError("unsupported persistent id in the pickle");
    const std::string& key = a[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const auto dtype = storage_dtype(a[1]->s);
    const std::int64_t numel = a[4]->i;
    auto v = make(Value::Kind::storage);
    v->t = at::empty({numel}, at::TensorOptions().dtype(dtype));
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) throw InputError("the archive lacks tensor data " + record);
    const std::size_t bytes = static_cast<std::size_t>(numel) * c10::elementSize(dtype);
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
  std::vector<Ref> stack_;
  std::map<std::uint64_t, Ref> memo_;
  std::map<std::string, Ref> storages_;
};

}  // namespace

TensorList read_torch_save_state_dict(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (!zip.hasRecord("data.pkl")) throw InputError("no data.pkl in the archive");
    auto [data, size] = zip.getRecord("data.pkl");
    Unpickler u(static_cast<const char*>(data.get()), size, zip);
    Ref root = u.run();
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
      out.emplace_back(k->s, v->t);
    }
    return out;
  } catch (const InputError& e) {
    throw InputError("cannot read '" + path + "' as a torch.save state dict: " + e.what());
  } catch (const c10::Error& e) {
    throw InputError("cannot read '" + path +
                     "' as a torch.save state dict: " + e.what_without_backtrace());
  }
}

}  // namespace clipper::io::detail
