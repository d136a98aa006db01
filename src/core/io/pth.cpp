// The PyTorch `.pth` reader: the zip archive torch.save writes (storages as records "data/<key>")
// and a pickle interpreter for its data.pkl that executes nothing.
#include "cspn/core/io/pth.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caffe2/serialize/inline_container.h>

#include "tensor_file.hpp"

namespace cspn {

namespace fs = std::filesystem;
using io_detail::shape_str;

namespace {

// A pickle interpreter for what torch.save writes (protocol 2; the protocol 4 framing opcodes are
// accepted too). Nothing is executed: known callables (OrderedDict, tensor rebuilders) are
// interpreted, any other call becomes an opaque object.

struct PyObject;
using PyRef = std::shared_ptr<PyObject>;

struct PyObject {
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Object };
  Kind kind = Kind::None;
  int64_t i = 0;                               // Bool, Int
  double f = 0;                                // Float
  std::string s;                               // String, Bytes, Global ("module.name"), Object (callable)
  std::vector<PyRef> items;                    // Tuple, List, Object (arguments)
  std::vector<std::pair<PyRef, PyRef>> dict;   // Dict, in insertion order
  torch::Tensor tensor;                        // Storage (flat, 1-D) or Tensor

  static PyRef make(Kind k) {
    auto o = std::make_shared<PyObject>();
    o->kind = k;
    return o;
  }
};

const char* kind_name(PyObject::Kind k) {
  static const char* names[] = {"None",  "bool",   "int",     "float",  "str",    "bytes", "tuple",
                                "list",  "dict",   "global",  "storage", "tensor", "object"};
  return names[static_cast<int>(k)];
}

torch::ScalarType storage_type(const std::string& global) {
  static const std::map<std::string, torch::ScalarType> types{
      {"torch.DoubleStorage", torch::kFloat64}, {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},     {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},    {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},     {"torch.BoolStorage", torch::kBool}};
  auto it = types.find(global);
  if (it == types.end()) throw std::runtime_error("unsupported storage type " + global);
  return it->second;
}

class Unpickler {
 public:
  // `load_storage(key, dtype, numel)` returns the flat tensor of record "data/<key>".
  Unpickler(const std::string& where, const std::vector<uint8_t>& data,
            std::function<torch::Tensor(const std::string&, torch::ScalarType, int64_t)> load_storage)
      : where_(where), data_(data), load_storage_(std::move(load_storage)) {}

  PyRef run() {
    while (true) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = u8();
          if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
          break;
        }
        case 0x95: skip(8); break;                 // FRAME: the framed bytes follow inline
        case '.': return pop();                    // STOP
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0': pop(); break;                    // POP
        case '1': pop_mark(); break;               // POP_MARK
        case '2': push(top()); break;              // DUP
        case 'N': push(PyObject::make(PyObject::Kind::None)); break;
        case 0x88: push(make_int(1, PyObject::Kind::Bool)); break;  // NEWTRUE
        case 0x89: push(make_int(0, PyObject::Kind::Bool)); break;  // NEWFALSE
        case 'J': push(make_int(static_cast<int32_t>(le(4)))); break;  // BININT
        case 'K': push(make_int(u8())); break;                       // BININT1
        case 'M': push(make_int(static_cast<int64_t>(le(2)))); break; // BININT2
        case 0x8a: push(make_int(long1())); break;                   // LONG1
        case 'G': push(binfloat()); break;                           // BINFLOAT
        case 'X': push(make_str(le(4), PyObject::Kind::String)); break;     // BINUNICODE
        case 0x8c: push(make_str(u8(), PyObject::Kind::String)); break;     // SHORT_BINUNICODE
        case 0x8d: push(make_str(le(8), PyObject::Kind::String)); break;    // BINUNICODE8
        case 'T': push(make_str(le(4), PyObject::Kind::Bytes)); break;      // BINSTRING
        case 'U': push(make_str(u8(), PyObject::Kind::Bytes)); break;       // SHORT_BINSTRING
        case 'B': push(make_str(le(4), PyObject::Kind::Bytes)); break;      // BINBYTES
        case 'C': push(make_str(u8(), PyObject::Kind::Bytes)); break;       // SHORT_BINBYTES
        case ')': push(PyObject::make(PyObject::Kind::Tuple)); break;       // EMPTY_TUPLE
        case 't': push(sequence(PyObject::Kind::Tuple, pop_mark())); break; // TUPLE
        case 0x85: case 0x86: case 0x87: {                                  // TUPLE1..3
          const size_t n = op - 0x84;
          if (stack_.size() < n) fail("stack underflow");
          std::vector<PyRef> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(sequence(PyObject::Kind::Tuple, std::move(items)));
          break;
        }
        case ']': push(PyObject::make(PyObject::Kind::List)); break;        // EMPTY_LIST
        case 'l': push(sequence(PyObject::Kind::List, pop_mark())); break;  // LIST
        case 'a': {                                                          // APPEND
          auto v = pop();
          expect(top(), PyObject::Kind::List, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {                                                          // APPENDS
          auto items = pop_mark();
          auto& list = expect(top(), PyObject::Kind::List, "APPENDS")->items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case '}': push(PyObject::make(PyObject::Kind::Dict)); break;        // EMPTY_DICT
        case 'd': {                                                          // DICT
          auto d = PyObject::make(PyObject::Kind::Dict);
          set_items(d, pop_mark());
          push(d);
          break;
        }
        case 's': {                                                          // SETITEM
          auto v = pop();
          auto k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {                                                          // SETITEMS
          auto items = pop_mark();
          set_items(top(), std::move(items));
          break;
        }
        case 'q': memo_[u8()] = top(); break;                                // BINPUT
        case 'r': memo_[le(4)] = top(); break;                               // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;                       // MEMOIZE
        case 'h': push(memo(u8())); break;                                   // BINGET
        case 'j': push(memo(le(4))); break;                                  // LONG_BINGET
        case 'c': {                                                          // GLOBAL
          auto g = PyObject::make(PyObject::Kind::Global);
          const std::string module = line();
          g->s = module + "." + line();
          push(g);
          break;
        }
        case 0x93: {                                                         // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          auto g = PyObject::make(PyObject::Kind::Global);
          g->s = expect(module, PyObject::Kind::String, "STACK_GLOBAL")->s + "." +
                 expect(name, PyObject::Kind::String, "STACK_GLOBAL")->s;
          push(g);
          break;
        }
        case 'Q': push(persistent_load(pop())); break;                       // BINPERSID
        case 'R': {                                                          // REDUCE
          auto args = pop();
          auto callable = pop();
          push(reduce(callable, expect(args, PyObject::Kind::Tuple, "REDUCE")->items));
          break;
        }
        case 0x81: {                                                         // NEWOBJ
          auto args = pop();
          auto cls = pop();
          auto o = PyObject::make(PyObject::Kind::Object);
          o->s = cls->s;
          o->items = expect(args, PyObject::Kind::Tuple, "NEWOBJ")->items;
          push(o);
          break;
        }
        case 'b': pop(); break;  // BUILD: object state (e.g. OrderedDict._metadata) is not needed
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(where_ + ": offset " + std::to_string(op_pos_) + ": " + msg);
  }

  void need(size_t n) const {
    if (n > data_.size() - pos_) fail("truncated pickle (needs " + std::to_string(n) + " more bytes)");
  }
  void skip(size_t n) {
    need(n);
    pos_ += n;
  }
  uint8_t u8() {
    need(1);
    return data_[pos_++];
  }
  // n-byte little-endian unsigned integer.
  uint64_t le(int n) {
    need(static_cast<size_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | data_[pos_ + static_cast<size_t>(i)];
    pos_ += static_cast<size_t>(n);
    return v;
  }
  // LONG1: a length byte, then a little-endian two's-complement integer.
  int64_t long1() {
    const uint8_t n = u8();
    if (n > 8) fail("LONG1 of " + std::to_string(n) + " bytes does not fit int64");
    if (n == 0) return 0;
    uint64_t v = le(n);
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }
  PyRef binfloat() {  // 8-byte big-endian IEEE double
    need(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | data_[pos_ + static_cast<size_t>(i)];
    pos_ += 8;
    auto o = PyObject::make(PyObject::Kind::Float);
    std::memcpy(&o->f, &bits, sizeof bits);
    return o;
  }
  std::string line() {
    const auto begin = pos_;
    while (pos_ < data_.size() && data_[pos_] != '\n') ++pos_;
    if (pos_ == data_.size()) fail("truncated GLOBAL name");
    return std::string(reinterpret_cast<const char*>(data_.data()) + begin, pos_++ - begin);
  }

  static PyRef make_int(int64_t v, PyObject::Kind k = PyObject::Kind::Int) {
    auto o = PyObject::make(k);
    o->i = v;
    return o;
  }
  PyRef make_str(uint64_t n, PyObject::Kind k) {
    need(n);
    auto o = PyObject::make(k);
    o->s.assign(reinterpret_cast<const char*>(data_.data()) + pos_, n);
    pos_ += n;
    return o;
  }
  static PyRef sequence(PyObject::Kind k, std::vector<PyRef> items) {
    auto o = PyObject::make(k);
    o->items = std::move(items);
    return o;
  }

  void push(PyRef v) { stack_.push_back(std::move(v)); }
  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const PyRef& top() const {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  PyRef memo(uint64_t key) const {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }
  const PyRef& expect(const PyRef& v, PyObject::Kind k, const char* op) const {
    if (v->kind != k)
      fail(std::string(op) + " expects a " + kind_name(k) + ", got a " + kind_name(v->kind));
    return v;
  }
  void set_items(const PyRef& d, std::vector<PyRef> kv) {
    if (kv.size() % 2 != 0) fail("odd number of items for a dict");
    if (d->kind == PyObject::Kind::Object) return;  // a dict subclass we do not interpret
    expect(d, PyObject::Kind::Dict, "SETITEM(S)");
    for (size_t i = 0; i < kv.size(); i += 2) d->dict.emplace_back(kv[i], kv[i + 1]);
  }
  int64_t to_int(const PyRef& v, const char* what) const {
    if (v->kind != PyObject::Kind::Int)
      fail(std::string(what) + " must be an int, got a " + kind_name(v->kind));
    return v->i;
  }
  std::vector<int64_t> to_ints(const PyRef& v, const char* what) const {
    expect(v, PyObject::Kind::Tuple, what);
    std::vector<int64_t> out;
    for (const auto& x : v->items) out.push_back(to_int(x, what));
    return out;
  }

  // ('storage', torch.FloatStorage, key, location, numel) -> the storage's flat tensor.
  PyRef persistent_load(const PyRef& pid) {
    const auto& t = expect(pid, PyObject::Kind::Tuple, "BINPERSID")->items;
    if (t.size() != 5 || t[0]->kind != PyObject::Kind::String || t[0]->s != "storage" ||
        t[1]->kind != PyObject::Kind::Global || t[2]->kind != PyObject::Kind::String)
      fail("expected a persistent id ('storage', <type>, key, location, numel)");
    auto o = PyObject::make(PyObject::Kind::Storage);
    const std::string& key = t[2]->s;
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      o->tensor = cached->second;
    } else {
      torch::ScalarType type;
      try {
        type = storage_type(t[1]->s);
      } catch (const std::runtime_error& e) {
        fail(e.what());
      }
      o->tensor = load_storage_(key, type, to_int(t[4], "storage numel"));
      storages_.emplace(key, o->tensor);
    }
    return o;
  }

  PyRef reduce(const PyRef& callable, const std::vector<PyRef>& args) {
    const std::string& name = callable->s;
    if (callable->kind == PyObject::Kind::Global && name == "collections.OrderedDict")
      return PyObject::make(PyObject::Kind::Dict);
    if (callable->kind == PyObject::Kind::Global && name == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.size() < 4) fail("_rebuild_tensor_v2 expects at least 4 arguments");
      const auto& storage = expect(args[0], PyObject::Kind::Storage, "_rebuild_tensor_v2")->tensor;
      const int64_t offset = to_int(args[1], "storage offset");
      const auto size = to_ints(args[2], "tensor size");
      const auto stride = to_ints(args[3], "tensor stride");
      if (size.size() != stride.size()) fail("tensor size and stride differ in length");
      int64_t last = offset;  // the largest element index the view reaches
      bool empty = false;
      for (size_t d = 0; d < size.size(); ++d) {
        if (size[d] < 0 || stride[d] < 0) fail("negative tensor size or stride");
        empty = empty || size[d] == 0;
        last += (size[d] - 1) * stride[d];
      }
      auto o = PyObject::make(PyObject::Kind::Tensor);
      if (empty) {
        o->tensor = torch::empty(size, storage.options());
      } else {
        if (offset < 0 || last >= storage.numel())
          fail("tensor " + shape_str(size) + " at offset " + std::to_string(offset) +
               " reaches past its storage of " + std::to_string(storage.numel()) + " elements");
        o->tensor = storage.as_strided(size, stride, offset).contiguous();
      }
      return o;
    }
    if (callable->kind == PyObject::Kind::Global &&
        (name == "torch._utils._rebuild_parameter" ||
         name == "torch._utils._rebuild_parameter_with_state")) {
      if (args.empty()) fail(name + " without arguments");
      return expect(args[0], PyObject::Kind::Tensor, name.c_str());
    }
    auto o = PyObject::make(PyObject::Kind::Object);
    o->s = name;
    o->items = args;
    return o;
  }

  std::string where_;
  const std::vector<uint8_t>& data_;
  std::function<torch::Tensor(const std::string&, torch::ScalarType, int64_t)> load_storage_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
  std::unordered_map<std::string, torch::Tensor> storages_;
};

// The tensors of an unpickled checkpoint: a dict of tensors, or a {"state_dict"|"model": dict}
// wrapper around one.
StateDict tensors_of(const PyRef& root, const std::string& path) {
  if (root->kind != PyObject::Kind::Dict)
    throw std::runtime_error(path + ": expected the checkpoint to hold a dict of tensors, got a " +
                             kind_name(root->kind) +
                             (root->kind == PyObject::Kind::Object ? " (" + root->s + ")" : ""));
  for (const char* wrapper : {"state_dict", "model"})
    for (const auto& [k, v] : root->dict)
      if (k->kind == PyObject::Kind::String && k->s == wrapper && v->kind == PyObject::Kind::Dict)
        return tensors_of(v, path + " [\"" + wrapper + "\"]");
  StateDict out;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != PyObject::Kind::String)
      throw std::runtime_error(path + ": expected string keys, got a " + std::string(kind_name(k->kind)));
    if (v->kind != PyObject::Kind::Tensor)
      throw std::runtime_error(path + ": key '" + k->s + "' holds a " + kind_name(v->kind) +
                               ", expected a tensor (a training checkpoint? it needs a \"state_dict\" "
                               "or \"model\" entry)");
    out.emplace_back(k->s, v->tensor);
  }
  return out;
}

std::vector<uint8_t> record_bytes(caffe2::serialize::PyTorchStreamReader& reader,
                                  const std::string& name) {
  auto [ptr, size] = reader.getRecord(name);
  const auto* p = static_cast<const uint8_t*>(ptr.get());
  return std::vector<uint8_t>(p, p + size);
}

}  // namespace

StateDict read_pth(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error(path + ": no such file");
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  std::vector<uint8_t> pickle;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (reader->hasRecord("byteorder")) {
      const auto order = record_bytes(*reader, "byteorder");
      if (std::string(order.begin(), order.end()) != "little")
        throw std::runtime_error("big-endian checkpoints are not supported");
    }
    pickle = record_bytes(*reader, "data.pkl");
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": not a readable PyTorch zip checkpoint (torch.save, PyTorch >= "
                             "1.6): " + e.what_without_backtrace());
  }
  auto load_storage = [&](const std::string& key, torch::ScalarType type, int64_t numel) {
    const std::string name = "data/" + key;
    at::DataPtr ptr;
    size_t size = 0;
    try {
      std::tie(ptr, size) = reader->getRecord(name);
    } catch (const c10::Error& e) {
      throw std::runtime_error(path + ": storage record " + name + ": " + e.what_without_backtrace());
    }
    auto t = torch::empty({numel}, torch::TensorOptions().dtype(type));
    const size_t bytes = static_cast<size_t>(numel) * t.element_size();
    if (size < bytes)
      throw std::runtime_error(path + ": storage record " + name + " holds " + std::to_string(size) +
                               " bytes, expected " + std::to_string(bytes) + " (" +
                               std::to_string(numel) + " x " + c10::toString(type) + ")");
    if (bytes > 0) std::memcpy(t.data_ptr(), ptr.get(), bytes);
    return t;
  };
  Unpickler unpickler(path + ": data.pkl", pickle, load_storage);
  return tensors_of(unpickler.run(), path);
}

}  // namespace cspn
