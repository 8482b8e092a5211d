#pragma once
/// \file
/// `cac::io::Value` and `cac::io::Document`: the Python objects of a checkpoint's `data.pkl`, and
/// `cac::io::unpickle`, the bounded pickle interpreter (protocols 0-5 binary opcodes, what
/// `torch.save` and `pickle` emit) that builds them. Tensors and storages are made by callbacks
/// so this header knows nothing about file layouts: `cac::io::StoragePid` and
/// `cac::io::detail::StorageTable` are the parts of `torch.load`'s storage handling the zip
/// reader (`cac/io/checkpoint.hpp`) and the legacy reader (`cac/io/legacy.hpp`) share.

#include <ATen/ATen.h>
#include <c10/core/Storage.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cac {
namespace io {

/// The kinds of Python object a `cac::io::Value` holds.
enum class ValueKind {
  /// `None`.
  None,
  /// `True`/`False` (`Value::boolean`).
  Bool,
  /// An `int` that fits 64 bits (`Value::integer`).
  Int,
  /// A `float` (`Value::floating`).
  Float,
  /// A `str` (`Value::text`, UTF-8).
  String,
  /// A `bytes` (`Value::text`, raw).
  Bytes,
  /// A `tuple` (`Value::items`).
  Tuple,
  /// A `list` (`Value::items`).
  List,
  /// A `dict` or `collections.OrderedDict` in insertion order (`Value::entries`); an
  /// `OrderedDict`'s attributes (`_metadata`) are in `Value::state`.
  Dict,
  /// A `set` or `frozenset` (`Value::items`).
  Set,
  /// A `torch.Tensor` or `torch.nn.Parameter` (`Value::tensor`).
  Tensor,
  /// A typed storage (`Value::tensor` is a 1-D tensor over the whole storage).
  Storage,
  /// A class or function named by `GLOBAL` (`Value::text` is `module.name`).
  Global,
  /// Anything else: an instance of an unknown class or the result of calling an unknown function,
  /// kept opaque (`Value::text` is the callable's `module.name`, `Value::items` its arguments,
  /// `Value::state` its `BUILD` state). A Python `int` beyond 64 bits is an `Object` named
  /// `builtins.int` whose one item is a `Bytes` value: its two's-complement little-endian bytes.
  Object,
};

/// One Python object of an unpickled file. Values live in a `cac::io::Document`, which owns
/// them; containers point to their elements (cycles and sharing are allowed, as in Python).
///
/// ```
/// const cac::io::Value* meta = document.root()->find("meta");
/// if (meta && meta->is_dict()) std::cout << meta->repr() << "\n";
/// ```
struct Value {
  /// What this value is.
  ValueKind kind = ValueKind::None;
  /// The value of a `Bool`.
  bool boolean = false;
  /// The value of an `Int`.
  int64_t integer = 0;
  /// The value of a `Float`.
  double floating = 0.0;
  /// A `String`'s or `Bytes`' contents; a `Global`'s or `Object`'s `module.name`.
  std::string text;
  /// A `Tuple`'s, `List`'s or `Set`'s elements; an `Object`'s constructor arguments.
  std::vector<const Value*> items;
  /// A `Dict`'s entries in insertion order.
  std::vector<std::pair<const Value*, const Value*>> entries;
  /// The `BUILD` state of a `Dict` (OrderedDict attributes such as `_metadata`) or `Object`.
  const Value* state = nullptr;
  /// A `Tensor`'s tensor or a `Storage`'s 1-D tensor (CPU, sharing memory with every view).
  at::Tensor tensor;

  /// True for a `Dict`.
  bool is_dict() const { return kind == ValueKind::Dict; }
  /// True for a `Tensor`.
  bool is_tensor() const { return kind == ValueKind::Tensor; }
  /// True for a `String`.
  bool is_string() const { return kind == ValueKind::String; }

  /// The value of the `Dict` entry whose key is the string `key`, or null (also for a non-dict).
  const Value* find(const std::string& key) const {
    if (kind != ValueKind::Dict) return nullptr;
    const Value* found = nullptr;
    for (const auto& entry : entries) {
      if (entry.first->kind == ValueKind::String && entry.first->text == key) found = entry.second;
    }
    return found;  // the last assignment wins, as in Python
  }

  /// A short Python-like rendering (containers abbreviated past `max_items`, nesting past
  /// `max_depth`), for messages and `cac-convert`.
  std::string repr(int max_depth = 3, size_t max_items = 8) const {
    std::ostringstream out;
    repr_into(out, max_depth, max_items);
    return out.str();
  }

 private:
  void repr_into(std::ostringstream& out, int depth, size_t max_items) const {
    auto sequence = [&](const char* open, const char* close) {
      out << open;
      if (depth <= 0 && !items.empty()) {
        out << "...";
      } else {
        for (size_t i = 0; i < items.size() && i < max_items; ++i) {
          if (i) out << ", ";
          items[i]->repr_into(out, depth - 1, max_items);
        }
        if (items.size() > max_items) out << ", ... (" << items.size() << " items)";
      }
      out << close;
    };
    switch (kind) {
      case ValueKind::None: out << "None"; break;
      case ValueKind::Bool: out << (boolean ? "True" : "False"); break;
      case ValueKind::Int: out << integer; break;
      case ValueKind::Float: out << floating; break;
      case ValueKind::String: out << "'" << (text.size() > 64 ? text.substr(0, 61) + "..." : text) << "'"; break;
      case ValueKind::Bytes: out << "b<" << text.size() << " bytes>"; break;
      case ValueKind::Tuple: sequence("(", ")"); break;
      case ValueKind::List: sequence("[", "]"); break;
      case ValueKind::Set: sequence("{", "}"); break;
      case ValueKind::Dict:
        out << "{";
        if (depth <= 0 && !entries.empty()) {
          out << "...";
        } else {
          for (size_t i = 0; i < entries.size() && i < max_items; ++i) {
            if (i) out << ", ";
            entries[i].first->repr_into(out, depth - 1, max_items);
            out << ": ";
            entries[i].second->repr_into(out, depth - 1, max_items);
          }
          if (entries.size() > max_items) out << ", ... (" << entries.size() << " entries)";
        }
        out << "}";
        break;
      case ValueKind::Tensor: out << "tensor(" << tensor.scalar_type() << ", " << tensor.sizes() << ")"; break;
      case ValueKind::Storage: out << "storage(" << tensor.scalar_type() << ", " << tensor.numel() << ")"; break;
      case ValueKind::Global: out << "<" << text << ">"; break;
      case ValueKind::Object: out << "<" << text << " object>"; break;
    }
  }
};

/// The objects of one unpickled file: owns every `cac::io::Value` (so cycles never leak and
/// destruction never recurses) and points to the top-level one.
class Document {
 public:
  /// The top-level object (`None` for an empty document).
  const Value* root() const { return root_ ? root_ : &none_; }
  /// The number of values the document owns.
  size_t size() const { return values_.size(); }
  /// The `module.name` of every unknown class or function the file names, in first-use order.
  const std::vector<std::string>& unknown_globals() const { return unknown_globals_; }

  /// A new value of kind `kind`, owned by this document. (Used by the interpreter.)
  Value* make(ValueKind kind) {
    values_.emplace_back();
    values_.back().kind = kind;
    return &values_.back();
  }
  /// Sets the top-level object. (Used by the interpreter.)
  void set_root(const Value* root) { root_ = root; }
  /// Records an unknown `module.name` once. (Used by the interpreter.)
  void note_unknown_global(const std::string& name) {
    for (const auto& known : unknown_globals_) {
      if (known == name) return;
    }
    unknown_globals_.push_back(name);
  }

 private:
  std::deque<Value> values_;
  const Value* root_ = nullptr;
  Value none_;
  std::vector<std::string> unknown_globals_;
};

/// What `cac::io::unpickle` calls to turn persistent ids into storages.
///
/// `load_storage(pid)` receives the `BINPERSID` argument (for `torch.save`,
/// `('storage', <torch.FloatStorage>, key, location, numel)`, and in the legacy format a sixth
/// item, `view_metadata`) and returns a 1-D CPU tensor over the whole storage (kept in a
/// `Storage` value). Views of one key must get the same storage. The legacy format's other
/// persistent id, `('module', <class>, source_file, source)` (a whole `nn.Module` saved with
/// `torch.save(model)`), never reaches the loader: it unpickles to the class, as in `torch.load`.
using StorageLoader = std::function<at::Tensor(const Value& pid)>;

/// One storage persistent id of `torch.save`, parsed: `('storage', <torch.FloatStorage>, key,
/// location, numel)` in the zip format, plus `view_metadata` (`None` or `(view_key, offset,
/// view_numel)`, in elements) in the legacy format.
///
/// ```
/// cac::io::StoragePid pid = cac::io::detail::parse_storage_pid(value, "my_reader", "model.pth");
/// ```
struct StoragePid {
  /// The storage's dtype (`torch.FloatStorage` or `torch.cuda.FloatStorage` -> `at::kFloat`,
  /// `torch.storage.UntypedStorage` -> `at::kByte`).
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  /// The storage class as written (`torch.cuda.HalfStorage` ...).
  std::string type;
  /// The root storage's key (a zip record `data/<key>`, or a legacy storage-section key).
  std::string key;
  /// Where it was saved from (`cpu`, `cuda:0`); ignored, everything loads to the CPU.
  std::string location;
  /// The root storage's element count.
  int64_t numel = 0;
  /// True when the tensor uses a view of the root storage (legacy `view_metadata`).
  bool view = false;
  /// The view's own key (tensors naming it share one view).
  std::string view_key;
  /// The view's first element in the root storage.
  int64_t view_offset = 0;
  /// The view's element count.
  int64_t view_numel = 0;
};

namespace detail {

/// The dtype of a legacy typed-storage class name (`FloatStorage` ...), or `Undefined`.
inline c10::ScalarType storage_dtype(const std::string& name) {
  // clang-format off
  static const std::pair<const char*, c10::ScalarType> table[] = {
      {"FloatStorage", at::kFloat},     {"DoubleStorage", at::kDouble},   {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},   {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},     {"CharStorage", at::kChar},       {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},       {"ComplexFloatStorage", at::kComplexFloat},
      {"ComplexDoubleStorage", at::kComplexDouble}};
  // clang-format on
  for (const auto& entry : table) {
    if (name == entry.first) return entry.second;
  }
  return c10::ScalarType::Undefined;
}

/// The dtype of a storage class named by a pickle `GLOBAL` (`torch.FloatStorage`,
/// `torch.storage.UntypedStorage` as bytes, or `torch.cuda.FloatStorage`, which `torch.save`
/// normalises away but `torch.load` accepts), or `Undefined`. Everything is read to the CPU,
/// whatever the `location` (`cuda:0`) says.
inline c10::ScalarType storage_type_dtype(const std::string& global) {
  for (const char* module : {"torch.", "torch.cuda.", "torch.storage."}) {
    const size_t n = std::strlen(module);
    if (global.size() <= n || global.compare(0, n, module) != 0) continue;
    const std::string name = global.substr(n);
    if (name == "UntypedStorage" || name == "_UntypedStorage") return at::kByte;
    if (name.find('.') == std::string::npos) return storage_dtype(name);
  }
  return c10::ScalarType::Undefined;
}

/// The legacy typed-storage class name of `dtype` (`FloatStorage` ...); throws for others.
inline std::string storage_class(c10::ScalarType dtype, const char* who) {
  // clang-format off
  static const std::pair<c10::ScalarType, const char*> table[] = {
      {at::kFloat, "FloatStorage"},     {at::kDouble, "DoubleStorage"},   {at::kHalf, "HalfStorage"},
      {at::kBFloat16, "BFloat16Storage"}, {at::kLong, "LongStorage"},   {at::kInt, "IntStorage"},
      {at::kShort, "ShortStorage"},     {at::kChar, "CharStorage"},       {at::kByte, "ByteStorage"},
      {at::kBool, "BoolStorage"},       {at::kComplexFloat, "ComplexFloatStorage"},
      {at::kComplexDouble, "ComplexDoubleStorage"}};
  // clang-format on
  for (const auto& entry : table) {
    if (entry.first == dtype) return entry.second;
  }
  TORCH_CHECK(false, who, ": expected a tensor of a dtype torch.save supports but got ", dtype);
}

/// Parses a storage persistent id (see `cac::io::StoragePid`); throws a `who: where: expected
/// ... but got ...` error for anything else.
inline StoragePid parse_storage_pid(const Value& pid, const char* who, const std::string& where) {
  const auto& items = pid.items;
  const bool shaped = pid.kind == ValueKind::Tuple && items.size() >= 5 && items.size() <= 6 && items[0]->is_string() &&
                      items[0]->text == "storage" && items[1]->kind == ValueKind::Global && items[2]->is_string() &&
                      items[4]->kind == ValueKind::Int;
  TORCH_CHECK(shaped, who, ": ", where, ": expected a persistent id ('storage', type, key, location, numel) but got ",
              pid.repr(1));
  StoragePid out;
  out.type = items[1]->text;
  out.key = items[2]->text;
  if (items[3]->is_string() || items[3]->kind == ValueKind::Bytes) out.location = items[3]->text;
  out.numel = items[4]->integer;
  out.dtype = storage_type_dtype(out.type);
  TORCH_CHECK(out.dtype != c10::ScalarType::Undefined, who, ": ", where, ": expected a storage type such as ",
              "torch.FloatStorage but got ", out.type);
  TORCH_CHECK(out.numel >= 0, who, ": ", where, ": storage ", out.key, ": expected an element count >= 0 but got ",
              out.numel);
  if (items.size() == 6 && items[5]->kind != ValueKind::None) {
    const Value& view = *items[5];
    TORCH_CHECK(view.kind == ValueKind::Tuple && view.items.size() == 3 && view.items[0]->is_string() &&
                    view.items[1]->kind == ValueKind::Int && view.items[2]->kind == ValueKind::Int,
                who, ": ", where, ": storage ", out.key,
                ": expected view metadata (view_key, offset, size) or None but got ", view.repr(1));
    out.view = true;
    out.view_key = view.items[0]->text;
    out.view_offset = view.items[1]->integer;
    out.view_numel = view.items[2]->integer;
  }
  return out;
}

/// The storages of one file by key, as `torch.load` keeps them: a root storage is made once by
/// the reader's callback, later uses of its key must agree on the dtype, and a legacy storage
/// view is a storage of its own over a slice of the root's memory (tensors on it have offsets
/// relative to the view, as in Python).
class StorageTable {
 public:
  /// Makes the 1-D tensor over a new root storage of `pid.numel` elements of `pid.dtype`.
  using MakeRoot = std::function<at::Tensor(const StoragePid& pid)>;

  /// `who` and `where` prefix error messages.
  StorageTable(const char* who, std::string where) : who_(who), where_(std::move(where)) {}

  /// The storage `pid` names (its root, made by `make_root` on first use, or a view of it).
  at::Tensor resolve(const StoragePid& pid, const MakeRoot& make_root) {
    auto found = roots_.find(pid.key);
    if (found == roots_.end()) {
      found = roots_.emplace(pid.key, make_root(pid)).first;
      order_.push_back(pid.key);
    } else {
      TORCH_CHECK(found->second.scalar_type() == pid.dtype, who_, ": ", where_, ": storage ", pid.key, " is used as ",
                  found->second.scalar_type(), " and as ", pid.dtype);
    }
    if (!pid.view) return found->second;
    auto view = views_.find(pid.view_key);
    if (view != views_.end()) return view->second;
    const at::Tensor& root = found->second;
    const int64_t capacity = root.numel();
    TORCH_CHECK(pid.view_offset >= 0 && pid.view_numel >= 0 && pid.view_offset <= capacity &&
                    pid.view_numel <= capacity - pid.view_offset,
                who_, ": ", where_, ": expected storage view ", pid.view_key, " inside its storage ", pid.key, " of ",
                capacity, " elements but got offset ", pid.view_offset, " and ", pid.view_numel, " elements");
    // A storage over root's memory that keeps root alive (its context owns a reference).
    const auto element = static_cast<int64_t>(root.element_size());
    auto* keep = new c10::Storage(root.storage());
    // const_cast: LibTorch 2.x's data() is const; the view writes through to root, as torch.load's does.
    char* start = static_cast<char*>(const_cast<void*>(root.storage().data())) + pid.view_offset * element;
    c10::DataPtr data(
        start, keep, [](void* context) { delete static_cast<c10::Storage*>(context); }, root.device());
    c10::Storage storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(pid.view_numel * element),
                         std::move(data), nullptr, false);
    at::Tensor tensor = at::empty({0}, root.options());
    tensor.set_(storage, 0, {pid.view_numel}, {1});
    views_.emplace(pid.view_key, tensor);
    return tensor;
  }

  /// The root storage of `key`, or null.
  const at::Tensor* root(const std::string& key) const {
    auto found = roots_.find(key);
    return found == roots_.end() ? nullptr : &found->second;
  }
  /// The root keys in first-use order.
  const std::vector<std::string>& keys() const { return order_; }

 private:
  const char* who_;
  std::string where_;
  std::unordered_map<std::string, at::Tensor> roots_;
  std::unordered_map<std::string, at::Tensor> views_;
  std::vector<std::string> order_;
};

/// The bounded interpreter behind `cac::io::unpickle`.
class Unpickler {
 public:
  Unpickler(const char* data, size_t size, std::string where, StorageLoader loader, Document& document)
      : data_(data), size_(size), where_(std::move(where)), loader_(std::move(loader)), doc_(document) {}

  /// Runs the program up to its `STOP`; returns the number of bytes it used.
  size_t run() {
    for (;;) {
      const size_t op_pos = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                 // PROTO
        case 0x95: skip(8); break;              // FRAME
        case '.': finish(op_pos); return pos_;  // STOP
        case 'N': push(doc_.make(ValueKind::None)); break;
        case 0x88: push(make_bool(true)); break;                       // NEWTRUE
        case 0x89: push(make_bool(false)); break;                      // NEWFALSE
        case 'J': push(make_int(static_cast<int32_t>(le(4)))); break;  // BININT
        case 'K': push(make_int(u8())); break;                         // BININT1
        case 'M': push(make_int(le(2))); break;                        // BININT2
        case 0x8a: push(make_long(u8(), op_pos)); break;               // LONG1
        case 0x8b: push(make_long(le(4), op_pos)); break;              // LONG4
        case 'I': push(make_text_int(line(), op_pos)); break;          // INT (protocol 0, also True/False)
        case 'G': {                                                    // BINFLOAT (big endian)
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | u8();
          Value* v = doc_.make(ValueKind::Float);
          std::memcpy(&v->floating, &bits, 8);
          push(v);
          break;
        }
        case 'X': push(make_string(ValueKind::String, le(4))); break;              // BINUNICODE
        case 0x8c: push(make_string(ValueKind::String, u8())); break;              // SHORT_BINUNICODE
        case 0x8d: push(make_string(ValueKind::String, le(8))); break;             // BINUNICODE8
        case 'T': push(make_string(ValueKind::String, le(4))); break;              // BINSTRING (py2 str)
        case 'U': push(make_string(ValueKind::String, u8())); break;               // SHORT_BINSTRING
        case 'B': push(make_string(ValueKind::Bytes, le(4))); break;               // BINBYTES
        case 'C': push(make_string(ValueKind::Bytes, u8())); break;                // SHORT_BINBYTES
        case 0x8e: push(make_string(ValueKind::Bytes, le(8))); break;              // BINBYTES8
        case 0x96: push(make_string(ValueKind::Bytes, le(8))); break;              // BYTEARRAY8
        case '}': push(doc_.make(ValueKind::Dict)); break;                         // EMPTY_DICT
        case ']': push(doc_.make(ValueKind::List)); break;                         // EMPTY_LIST
        case ')': push(doc_.make(ValueKind::Tuple)); break;                        // EMPTY_TUPLE
        case 0x8f: push(doc_.make(ValueKind::Set)); break;                         // EMPTY_SET
        case '(': marks_.push_back(stack_.size()); break;                          // MARK
        case 't': push(make_sequence(ValueKind::Tuple, pop_mark(op_pos))); break;  // TUPLE
        case 'l': push(make_sequence(ValueKind::List, pop_mark(op_pos))); break;   // LIST
        case 0x91: push(make_sequence(ValueKind::Set, pop_mark(op_pos))); break;   // FROZENSET
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1/2/3
          const size_t n = op - 0x84u;
          need_stack(n, op_pos);
          std::vector<const Value*> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(make_sequence(ValueKind::Tuple, std::move(items)));
          break;
        }
        case 'd': {  // DICT
          auto items = pop_mark(op_pos);
          Value* dict = doc_.make(ValueKind::Dict);
          set_items(dict, items, op_pos);
          push(dict);
          break;
        }
        case 's': {  // SETITEM
          need_stack(3, op_pos);
          std::vector<const Value*> items(stack_.end() - 2, stack_.end());
          stack_.resize(stack_.size() - 2);
          set_items(mutable_top(op_pos), items, op_pos);
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark(op_pos);
          need_stack(1, op_pos);
          set_items(mutable_top(op_pos), items, op_pos);
          break;
        }
        case 'a': {  // APPEND
          need_stack(2, op_pos);
          const Value* item = pop();
          append_items(mutable_top(op_pos), {item}, op_pos);
          break;
        }
        case 'e':
        case 0x90: {  // APPENDS, ADDITEMS
          auto items = pop_mark(op_pos);
          need_stack(1, op_pos);
          append_items(mutable_top(op_pos), items, op_pos);
          break;
        }
        case '0':
          need_stack(1, op_pos);
          pop();
          break;                            // POP
        case '1': pop_mark(op_pos); break;  // POP_MARK
        case '2':
          need_stack(1, op_pos);
          push(stack_.back());
          break;                                                   // DUP
        case 'q': put(u8(), op_pos); break;                        // BINPUT
        case 'r': put(le(4), op_pos); break;                       // LONG_BINPUT
        case 0x94: put(memo_.size(), op_pos); break;               // MEMOIZE
        case 'p': put(parse_uint(line(), op_pos), op_pos); break;  // PUT
        case 'h': get(u8(), op_pos); break;                        // BINGET
        case 'j': get(le(4), op_pos); break;                       // LONG_BINGET
        case 'g': get(parse_uint(line(), op_pos), op_pos); break;  // GET
        case 'c': {                                                // GLOBAL
          std::string module = line();
          std::string name = line();
          push(make_global(module + "." + name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          need_stack(2, op_pos);
          const Value* name = pop();
          const Value* module = pop();
          check(module->is_string() && name->is_string(), op_pos, "STACK_GLOBAL expects two strings");
          push(make_global(module->text + "." + name->text));
          break;
        }
        case 'R': {  // REDUCE
          need_stack(2, op_pos);
          const Value* args = pop();
          const Value* callable = pop();
          push(call(callable, args, op_pos));
          break;
        }
        case 0x81: {  // NEWOBJ
          need_stack(2, op_pos);
          const Value* args = pop();
          const Value* cls = pop();
          push(call(cls, args, op_pos));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          need_stack(3, op_pos);
          pop();  // kwargs
          const Value* args = pop();
          const Value* cls = pop();
          push(call(cls, args, op_pos));
          break;
        }
        case 'b': {  // BUILD
          need_stack(2, op_pos);
          const Value* state = pop();
          Value* target = mutable_top(op_pos);
          if (target->kind == ValueKind::Dict || target->kind == ValueKind::Object) target->state = state;
          break;  // tensors (`_rebuild_tensor_v2` ignores no state here) and others: state dropped
        }
        case 'Q': {  // BINPERSID
          need_stack(1, op_pos);
          const Value* pid = pop();
          if (pid->kind == ValueKind::Tuple && pid->items.size() >= 2 && pid->items[0]->is_string() &&
              pid->items[0]->text == "module") {
            push(pid->items[1]);  // legacy ('module', <class>, source_file, source): the class
            break;
          }
          Value* storage = doc_.make(ValueKind::Storage);
          storage->tensor = load_storage(*pid, op_pos);
          push(storage);
          break;
        }
        default:
          fail(op_pos, "unsupported pickle opcode 0x", hex(op),
               " (torch.save writes protocol 2; re-save the file with torch.save)");
      }
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(size_t at, const Args&... args) const {
    TORCH_CHECK(false, "cac::io::read_checkpoint: ", where_, ": invalid pickle at byte ", at, ": ", args...);
  }
  void check(bool cond, size_t at, const char* what) const {
    if (!cond) fail(at, what);
  }
  static std::string hex(uint8_t op) {
    const char* digits = "0123456789abcdef";
    return std::string{digits[op >> 4], digits[op & 15]};
  }

  // Bounded reads: every read checks the bytes left first.
  void need_bytes(uint64_t n) const {
    if (n > size_ - pos_) {
      TORCH_CHECK(false, "cac::io::read_checkpoint: ", where_, ": truncated pickle: expected ", n,
                  " more bytes at byte ", pos_, " but only ", size_ - pos_, " are left");
    }
  }
  uint8_t u8() {
    need_bytes(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t le(int bytes) {
    need_bytes(static_cast<uint64_t>(bytes));
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += static_cast<size_t>(bytes);
    return value;
  }
  void skip(uint64_t n) {
    need_bytes(n);
    pos_ += static_cast<size_t>(n);
  }
  std::string line() {
    const void* end = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!end)
      TORCH_CHECK(false, "cac::io::read_checkpoint: ", where_, ": truncated pickle: expected a newline after byte ",
                  pos_);
    const size_t n = static_cast<size_t>(static_cast<const char*>(end) - (data_ + pos_));
    std::string text(data_ + pos_, n);
    pos_ += n + 1;
    return text;
  }
  uint64_t parse_uint(const std::string& text, size_t at) const {
    check(!text.empty() && text.size() <= 18, at, "expected a decimal memo index");
    uint64_t value = 0;
    for (char c : text) {
      check(c >= '0' && c <= '9', at, "expected a decimal memo index");
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    return value;
  }

  void push(const Value* v) { stack_.push_back(v); }
  const Value* pop() {
    const Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  void need_stack(size_t n, size_t at) const {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + n) fail(at, "stack underflow (expected ", n, " items above the mark)");
  }
  std::vector<const Value*> pop_mark(size_t at) {
    if (marks_.empty()) fail(at, "MARK expected but the mark stack is empty");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<const Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  // The top of the stack, which the interpreter created and may modify (values reached through
  // the memo are the same objects, as in Python).
  Value* mutable_top(size_t at) {
    need_stack(1, at);
    return const_cast<Value*>(stack_.back());
  }
  void put(uint64_t index, size_t at) {
    need_stack(1, at);
    check(index <= memo_.size() + (1u << 20), at, "memo index out of range");
    memo_[index] = stack_.back();
  }
  void get(uint64_t index, size_t at) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail(at, "memo key ", index, " was never stored");
    push(it->second);
  }

  Value* make_bool(bool b) {
    Value* v = doc_.make(ValueKind::Bool);
    v->boolean = b;
    return v;
  }
  Value* make_int(int64_t i) {
    Value* v = doc_.make(ValueKind::Int);
    v->integer = i;
    return v;
  }
  Value* make_long(uint64_t n, size_t at) {
    need_bytes(n);
    if (n > 8) {  // a Python int beyond 64 bits: opaque, its bytes kept (see Value)
      Value* v = doc_.make(ValueKind::Object);
      v->text = "builtins.int";
      v->items.push_back(make_string(ValueKind::Bytes, n));
      return v;
    }
    uint64_t value = 0;
    for (uint64_t i = n; i-- > 0;) value = (value << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(data_[pos_ + n - 1]) & 0x80)) value |= ~uint64_t{0} << (8 * n);
    pos_ += static_cast<size_t>(n);
    (void)at;
    return make_int(static_cast<int64_t>(value));
  }
  Value* make_text_int(const std::string& text, size_t at) {
    if (text == "00") return make_bool(false);
    if (text == "01") return make_bool(true);
    check(!text.empty() && text.size() <= 19, at, "expected a decimal integer");
    size_t i = text[0] == '-' ? 1 : 0;
    check(i < text.size(), at, "expected a decimal integer");
    int64_t value = 0;
    for (; i < text.size(); ++i) {
      check(text[i] >= '0' && text[i] <= '9', at, "expected a decimal integer");
      value = value * 10 + (text[i] - '0');
    }
    return make_int(text[0] == '-' ? -value : value);
  }
  Value* make_string(ValueKind kind, uint64_t n) {
    need_bytes(n);
    Value* v = doc_.make(kind);
    v->text.assign(data_ + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return v;
  }
  Value* make_sequence(ValueKind kind, std::vector<const Value*> items) {
    Value* v = doc_.make(kind);
    v->items = std::move(items);
    return v;
  }
  void set_items(Value* target, const std::vector<const Value*>& items, size_t at) {
    check(items.size() % 2 == 0, at, "SETITEMS expects key/value pairs");
    if (target->kind != ValueKind::Dict) {
      check(target->kind == ValueKind::Object, at, "SETITEM(S) on a value that is not a dict");
      return;  // an opaque dict subclass: its items are dropped
    }
    for (size_t i = 0; i < items.size(); i += 2) target->entries.emplace_back(items[i], items[i + 1]);
  }
  void append_items(Value* target, const std::vector<const Value*>& items, size_t at) {
    if (target->kind == ValueKind::List || target->kind == ValueKind::Set) {
      target->items.insert(target->items.end(), items.begin(), items.end());
      return;
    }
    check(target->kind == ValueKind::Object, at, "APPEND(S) on a value that is not a list");
  }

  static bool known_global(const std::string& name) {
    static const char* known[] = {"collections.OrderedDict",
                                  "torch._utils._rebuild_tensor_v2",
                                  "torch._utils._rebuild_tensor",
                                  "torch._utils._rebuild_parameter",
                                  "torch._utils._rebuild_parameter_with_state",
                                  "torch._tensor._rebuild_from_type_v2",
                                  "_codecs.encode",
                                  "__builtin__.set",
                                  "builtins.set",
                                  "__builtin__.frozenset",
                                  "builtins.frozenset",
                                  "torch.storage.UntypedStorage"};
    for (const char* k : known) {
      if (name == k) return true;
    }
    return storage_type_dtype(name) != c10::ScalarType::Undefined;
  }
  Value* make_global(const std::string& name) {
    if (!known_global(name)) doc_.note_unknown_global(name);
    Value* v = doc_.make(ValueKind::Global);
    v->text = name;
    return v;
  }

  static const Value* arg(const Value* args, size_t i) {
    return args->kind == ValueKind::Tuple && i < args->items.size() ? args->items[i] : nullptr;
  }
  static bool int_tuple(const Value* v, std::vector<int64_t>& out) {
    if (!v || (v->kind != ValueKind::Tuple && v->kind != ValueKind::List)) return false;
    out.clear();
    for (const Value* item : v->items) {
      if (item->kind != ValueKind::Int) return false;
      out.push_back(item->integer);
    }
    return true;
  }

  // Calls the class or function `callable` with `args` (REDUCE/NEWOBJ).
  const Value* call(const Value* callable, const Value* args, size_t at) {
    const std::string name = callable->kind == ValueKind::Global ? callable->text : std::string("<not a global>");
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      return rebuild_tensor(args, at);
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      const Value* data = arg(args, 0);
      if (!data || !data->is_tensor()) fail(at, name, " expects a tensor as its first argument");
      return data;  // requires_grad and hooks do not matter for weights
    }
    if (name == "torch._tensor._rebuild_from_type_v2") {  // (func, type, args, state)
      const Value* func = arg(args, 0);
      const Value* inner = arg(args, 2);
      if (!func || !inner) fail(at, name, " expects (func, type, args, state)");
      return call(func, inner, at);
    }
    if (name == "collections.OrderedDict") return doc_.make(ValueKind::Dict);
    if (name == "_codecs.encode") {  // protocol 2's bytes: encode(u'...', 'latin1')
      const Value* text = arg(args, 0);
      if (text && text->is_string()) {
        Value* bytes = doc_.make(ValueKind::Bytes);
        bytes->text = latin1(text->text);
        return bytes;
      }
    }
    if (name == "__builtin__.set" || name == "builtins.set" || name == "__builtin__.frozenset" ||
        name == "builtins.frozenset") {
      Value* set = doc_.make(ValueKind::Set);
      const Value* items = arg(args, 0);
      if (items && (items->kind == ValueKind::List || items->kind == ValueKind::Tuple)) set->items = items->items;
      return set;
    }
    Value* object = doc_.make(ValueKind::Object);
    object->text = name;
    if (args->kind == ValueKind::Tuple) object->items = args->items;
    return object;
  }

  // UTF-8 text of code points < 256 back to the bytes they encode.
  static std::string latin1(const std::string& utf8) {
    std::string out;
    for (size_t i = 0; i < utf8.size(); ++i) {
      const auto c = static_cast<uint8_t>(utf8[i]);
      if (c < 0x80 || i + 1 >= utf8.size()) {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back(static_cast<char>(((c & 0x1f) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f)));
      }
    }
    return out;
  }

  at::Tensor load_storage(const Value& pid, size_t at) {
    at::Tensor storage;
    try {
      storage = loader_(pid);
    } catch (const c10::Error&) {
      throw;
    } catch (const std::exception& e) {
      fail(at, "loading a storage failed: ", e.what());
    }
    return storage;
  }

  // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  // backward_hooks[, metadata]): a view of the storage, checked to stay inside it.
  const Value* rebuild_tensor(const Value* args, size_t at) {
    const Value* storage = arg(args, 0);
    const Value* offset = arg(args, 1);
    std::vector<int64_t> sizes, strides;
    if (!storage || storage->kind != ValueKind::Storage || !offset || offset->kind != ValueKind::Int ||
        !int_tuple(arg(args, 2), sizes) || !int_tuple(arg(args, 3), strides)) {
      fail(at, "_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
    }
    if (sizes.size() != strides.size() || sizes.size() > 64) {
      fail(at, "tensor with ", sizes.size(), " sizes and ", strides.size(), " strides");
    }
    const int64_t capacity = storage->tensor.numel();
    int64_t last = offset->integer;  // the highest element index the view touches
    bool empty = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0 || sizes[d] > (int64_t{1} << 48) || strides[d] > (int64_t{1} << 48)) {
        fail(at, "tensor with size ", sizes[d], " and stride ", strides[d], " in dim ", d);
      }
      if (sizes[d] == 0) empty = true;
      int64_t extent = 0;
      if (sizes[d] > 0 && (__builtin_mul_overflow(sizes[d] - 1, strides[d], &extent) ||
                           __builtin_add_overflow(last, extent, &last) || last > (int64_t{1} << 50))) {
        fail(at, "tensor view extends past any storage");
      }
    }
    if (offset->integer < 0 || (!empty && last >= capacity) || (empty && offset->integer > capacity)) {
      fail(at, "tensor view (offset ", offset->integer, ", size ", c10::IntArrayRef(sizes), ", stride ",
           c10::IntArrayRef(strides), ") outside its storage of ", capacity, " elements");
    }
    Value* tensor = doc_.make(ValueKind::Tensor);
    tensor->tensor = at::empty({0}, storage->tensor.options());
    tensor->tensor.set_(storage->tensor.storage(), offset->integer, sizes, strides);
    return tensor;
  }

  void finish(size_t at) {
    check(!stack_.empty(), at, "STOP with an empty stack");
    doc_.set_root(stack_.back());
  }

  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string where_;
  StorageLoader loader_;
  Document& doc_;
  std::vector<const Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, const Value*> memo_;
};

}  // namespace detail

/// Runs the pickle program at the start of `data[0, size)` into `document` (its root is the
/// unpickled object) and returns the number of bytes up to and including its `STOP` (a file may
/// hold several pickles back to back, as the legacy `torch.save` format does). `where` names the
/// source in error messages; `load_storage` resolves persistent ids (null: any `BINPERSID` is an
/// error). Every read is bounds-checked: malformed input throws `c10::Error`, never reads past
/// `size`; input that ends before `STOP` throws a message containing "truncated pickle".
inline size_t unpickle(const char* data, size_t size, const std::string& where, Document& document,
                       StorageLoader load_storage = nullptr) {
  if (!load_storage) {
    load_storage = [where](const Value&) -> at::Tensor {
      TORCH_CHECK(false, "cac::io::unpickle: ", where, ": expected no persistent ids but found one");
    };
  }
  return detail::Unpickler(data, size, where, std::move(load_storage), document).run();
}

}  // namespace io
}  // namespace cac
