#pragma once
/// \file
/// Reading and writing PyTorch checkpoints without Python: `cac::io::read_checkpoint` (every
/// object of the file), `cac::io::read_state_dict` (its tensors by key), both for `torch.save`'s
/// zip format (PyTorch >= 1.6) and its legacy format (older files, told apart by their first
/// bytes; see `cac/io/legacy.hpp`), and `cac::io::write_state_dict` (a zip file `torch.load` reads
/// as a `dict` of tensors).
///
/// The zip layer is LibTorch's own (`caffe2::serialize::PyTorchStreamReader`/`Writer`); `data.pkl`
/// (or the legacy stream's main pickle) is run by cac's pickle interpreter (`cac/io/pickle.hpp`), which, unlike
/// `torch::pickle_load`, understands `collections.OrderedDict`, parameters, nested mmcv/timm checkpoints and unknown
/// Python objects. See docs/checkpoints.md.

#include <cac/io/legacy.hpp>
#include <cac/io/pickle.hpp>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Storage.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/arg.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <unistd.h>

namespace cac {
namespace io {

/// A state dict: tensors by dotted key (`layer1.0.conv1.weight`), sorted by key.
using StateDict = std::map<std::string, at::Tensor>;

/// Options of `cac::io::read_state_dict` and `cac::io::Checkpoint::state_dict`.
///
/// ```
/// auto weights = cac::io::read_state_dict("ema.pth", cac::io::ReadOptions().entry("state_dict_ema"));
/// ```
struct ReadOptions {
  /// The top-level entry that holds the state dict. Empty: the first of `state_dict` (mmcv,
  /// mmsegmentation), `model` (timm, official Swin), `module` (DeepSpeed) that is a dict, else the
  /// top-level dict itself (`torch.save(model.state_dict())`).
  /// Default: ""
  TORCH_ARG(std::string, entry) = "";
  /// `TORCH_WARN` about skipped non-tensor entries and unknown Python objects in the file.
  /// Default: true
  TORCH_ARG(bool, warn) = true;
};

/// Everything `torch.load` would return for one file, as `cac::io::Value`s (tensors are CPU
/// tensors that own their data; views of one storage share it, as after `torch.load`).
///
/// ```
/// auto checkpoint = cac::io::read_checkpoint("fcn_m-v2-d8_512x512_160k_ade20k.pth");
/// if (const auto* meta = checkpoint.root()->find("meta")) std::cout << meta->repr() << "\n";
/// cac::io::StateDict weights = checkpoint.state_dict();
/// ```
class Checkpoint {
 public:
  /// The file (or buffer name) the checkpoint was read from.
  std::string source;
  /// The unpickled objects.
  Document document;

  /// The top-level object.
  const Value* root() const { return document.root(); }

  /// The state dict: the entry chosen by `options.entry()` (see `cac::io::ReadOptions`), its
  /// tensor values by key. Non-tensor values (numbers, unknown objects such as quantized
  /// tensors) are skipped with one `TORCH_WARN` naming them.
  StateDict state_dict(const ReadOptions& options = {}) const {
    const char* who = "cac::io::read_state_dict";
    const Value* dict = nullptr;
    if (!options.entry().empty()) {
      dict = root()->find(options.entry());
      TORCH_CHECK(dict && dict->is_dict(), who, ": ", source, ": expected a dict entry '", options.entry(),
                  "' at the top level but got ", dict ? dict->repr(1) : std::string("no such entry"));
    } else {
      for (const char* key : {"state_dict", "model", "module"}) {
        const Value* candidate = root()->find(key);
        if (candidate && candidate->is_dict()) {
          dict = candidate;
          break;
        }
      }
      if (!dict) dict = root();
      TORCH_CHECK(dict->is_dict(), who, ": ", source, ": expected a dict of tensors at the top level but got ",
                  dict->repr(1));
    }
    StateDict out;
    std::vector<std::string> skipped;
    for (const auto& entry : dict->entries) {
      if (entry.first->is_string() && entry.second->is_tensor()) {
        out[entry.first->text] = entry.second->tensor;
      } else {
        skipped.push_back(entry.first->repr(0, 0) + ": " + entry.second->repr(0, 0));
      }
    }
    if (options.warn()) {
      if (!skipped.empty()) {
        std::string list;
        for (size_t i = 0; i < skipped.size() && i < 10; ++i) list += (i ? ", " : "") + skipped[i];
        if (skipped.size() > 10) list += ", ... (" + std::to_string(skipped.size()) + " in all)";
        TORCH_WARN(who, ": ", source, ": skipped ", skipped.size(), " non-tensor entries of the state dict: ", list);
      }
      if (!document.unknown_globals().empty()) {
        std::string list;
        for (const auto& name : document.unknown_globals()) list += (list.empty() ? "" : ", ") + name;
        TORCH_WARN(who, ": ", source, ": kept unknown Python objects as opaque values (not tensors): ", list);
      }
    }
    return out;
  }
};

namespace detail {

/// A `ReadAdapterInterface` over a caller-owned buffer that never reads past its end.
class BoundedMemoryAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  BoundedMemoryAdapter(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char* what = "") const override {
    (void)what;
    if (pos >= size_) return 0;
    n = std::min<uint64_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const char* data_;
  size_t size_;
};

/// The message of `error` without its C++ backtrace.
inline std::string message_of(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->msg();
  return error.what();
}

/// The two layouts `torch.save` writes.
enum class FileFormat {
  /// PyTorch >= 1.6: a zip archive (`data.pkl`, `data/<key>` records).
  Zip,
  /// PyTorch < 1.6 or `_use_new_zipfile_serialization=False`: pickles back to back, then the
  /// storages (see `cac/io/legacy.hpp`).
  Legacy,
};

/// The format of a would-be checkpoint from its first bytes (`PK\x03\x04`: zip; `\x80`, a
/// pickle's `PROTO`: legacy); explains what it is when neither.
inline FileFormat detect_format(caffe2::serialize::ReadAdapterInterface& in, const std::string& where) {
  const char* who = "cac::io::read_checkpoint";
  unsigned char head[4] = {0, 0, 0, 0};
  const size_t n = in.size() < 4 ? in.size() : 4;
  TORCH_CHECK(n == 4 && in.read(0, head, 4) == 4, who, ": ", where,
              ": expected a torch.save file (zip archive or legacy format) but got a file of ", in.size(), " bytes");
  if (head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) return FileFormat::Zip;
  if (head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) return FileFormat::Legacy;  // legacy.hpp checks the rest
  TORCH_CHECK(!is_tar(in), who, ": ", where, ": expected a torch.save file (zip archive or legacy format) but got ",
              "a tar archive, the oldest form of torch.save (PyTorch 0.1, 2017), which is not supported; ",
              resave_hint());
  TORCH_CHECK(false, who, ": ", where, ": expected a torch.save file (a zip archive starting with 'PK\\x03\\x04' or ",
              "a legacy one starting with a pickle's 0x80) but got a file starting with bytes 0x", std::hex,
              static_cast<int>(head[0]), " 0x", static_cast<int>(head[1]), " 0x", static_cast<int>(head[2]), " 0x",
              static_cast<int>(head[3]));
}

/// Whether the zip archive `reader` is TorchScript-style (records `constants.pkl` or
/// `code/__torch__.py`), as `torch.jit.save` and LibTorch's `torch::save` write it.
inline bool is_torchscript(caffe2::serialize::PyTorchStreamReader& reader) {
  return reader.hasRecord("constants.pkl") || reader.hasRecord("code/__torch__.py");
}

/// Reads the `torch.save` file behind `in` (named `where` in messages), zip or legacy, into a
/// `Checkpoint`.
inline Checkpoint read_archive(const std::shared_ptr<caffe2::serialize::ReadAdapterInterface>& in,
                               const std::string& where) {
  const char* who = "cac::io::read_checkpoint";
  const FileFormat format = detect_format(*in, where);
  Checkpoint checkpoint;
  checkpoint.source = where;
  try {
    if (format == FileFormat::Legacy) {
      LegacyReader(*in, where).read(checkpoint.document);
      return checkpoint;
    }
    caffe2::serialize::PyTorchStreamReader reader(in);
    TORCH_CHECK(!is_torchscript(reader), who, ": ", where,
                ": expected a torch.save checkpoint but got a TorchScript archive (torch.jit.save); load it with "
                "torch::jit::load, or save its `state_dict()` with torch.save in Python");
    TORCH_CHECK(reader.hasRecord("data.pkl"), who, ": ", where, ": expected a 'data.pkl' record in the archive");
    at::DataPtr program;
    size_t program_size = 0;
    std::tie(program, program_size) = reader.getRecord("data.pkl");

    // Persistent ids ('storage', <torch.XStorage>, key, location, numel): record data/<key>,
    // read once into its own buffer, which becomes the storage (no other copy of the data).
    StorageTable storages(who, where);
    auto make_root = [&](const StoragePid& pid) -> at::Tensor {
      const std::string record = "data/" + pid.key;
      TORCH_CHECK(reader.hasRecord(record), who, ": ", where, ": expected a record '", record,
                  "' for a storage but the archive has none");
      at::DataPtr data;
      size_t bytes = 0;
      std::tie(data, bytes) = reader.getRecord(record);
      const auto element = static_cast<int64_t>(c10::elementSize(pid.dtype));
      TORCH_CHECK(pid.numel <= static_cast<int64_t>(bytes) / element, who, ": ", where, ": storage ", pid.key, " of ",
                  pid.numel, " ", pid.dtype, " elements but its record has ", bytes, " bytes");
      c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, std::move(data), nullptr, false);
      at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(pid.dtype));
      tensor.set_(storage, 0, {pid.numel}, {1});
      return tensor;
    };
    auto load_storage = [&](const Value& pid) {
      return storages.resolve(parse_storage_pid(pid, who, where), make_root);
    };
    unpickle(static_cast<const char*>(program.get()), program_size, where, checkpoint.document, load_storage);
  } catch (const c10::Error& error) {
    const std::string message = error.msg();
    if (message.rfind("cac::io::", 0) == 0) throw;
    TORCH_CHECK(false, who, ": ", where, ": not a readable torch.save archive (truncated or corrupted?): ", message);
  } catch (const std::exception& error) {
    TORCH_CHECK(false, who, ": ", where,
                ": not a readable torch.save archive (truncated or corrupted?): ", error.what());
  }
  return checkpoint;
}

}  // namespace detail

/// Reads the `torch.save` file `path` like `torch.load(path, map_location='cpu')`: the zip
/// format of PyTorch >= 1.6 or the legacy format of older versions (and of
/// `_use_new_zipfile_serialization=False`), detected from the first bytes. Throws `c10::Error`
/// naming the file and what was expected for a missing, truncated, corrupted, TorchScript,
/// big-endian legacy or tar-form (PyTorch 0.1) file.
inline Checkpoint read_checkpoint(const std::string& path) {
  std::error_code error;
  TORCH_CHECK(std::filesystem::is_regular_file(path, error),
              "cac::io::read_checkpoint: expected a checkpoint file but ", path,
              " does not exist or is not a regular file");
  std::shared_ptr<caffe2::serialize::ReadAdapterInterface> in;
  try {
    in = std::make_shared<caffe2::serialize::FileAdapter>(path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "cac::io::read_checkpoint: cannot open ", path, ": ", detail::message_of(e));
  }
  return detail::read_archive(in, path);
}

/// Reads a `torch.save` file (zip or legacy) held in memory (`data[0, size)`, borrowed for the call only);
/// `name` names it in error messages. See `cac::io::read_checkpoint`.
inline Checkpoint read_checkpoint(const void* data, size_t size, const std::string& name = "<memory>") {
  return detail::read_archive(std::make_shared<detail::BoundedMemoryAdapter>(data, size), name);
}

/// Whether the file `path` is a TorchScript-style zip archive (records `constants.pkl` or
/// `code/__torch__.py`): what `torch.jit.save` and LibTorch's `torch::save` /
/// `torch::serialize::OutputArchive` write, which `read_checkpoint` refuses, as opposed to a
/// `torch.save` checkpoint. False for a missing, unreadable, legacy or non-zip file; never throws.
///
/// ```
/// if (cac::io::is_torchscript_archive(path)) torch::load(model, path); else load_my_pth(path);
/// ```
inline bool is_torchscript_archive(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  char magic[4] = {};
  if (!file.read(magic, sizeof magic) || std::memcmp(magic, "PK\x03\x04", 4) != 0) return false;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    return detail::is_torchscript(reader);
  } catch (const c10::Error&) {
    return false;  // a damaged zip: not an archive LibTorch can load either
  }
}

/// The state dict of the file `path`: `read_checkpoint(path).state_dict(options)`.
///
/// ```
/// cac::io::StateDict weights = cac::io::read_state_dict("upernet_swin_tiny.pth");
/// ```
inline StateDict read_state_dict(const std::string& path, const ReadOptions& options = {}) {
  return read_checkpoint(path).state_dict(options);
}

namespace detail {

/// Writes protocol-2 pickle opcodes for `write_state_dict`.
class Pickler {
 public:
  std::string out;
  void op(char c) { out.push_back(c); }
  void string(const std::string& s) {
    op('X');
    le(s.size(), 4);
    out += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le(static_cast<uint64_t>(static_cast<int32_t>(v)) & 0xffffffffu, 4);
    } else {
      out.push_back(static_cast<char>(0x8a));  // LONG1, 8 bytes two's complement
      out.push_back(8);
      le(static_cast<uint64_t>(v), 8);
    }
  }
  void global(const std::string& module, const std::string& name) { out += "c" + module + "\n" + name + "\n"; }
  void int_tuple(c10::IntArrayRef values) {
    op('(');
    for (int64_t v : values) integer(v);
    op('t');
  }

 private:
  void le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
};

}  // namespace detail

/// Writes `state_dict` as `torch.save` would write a `dict` of tensors, so Python's
/// `torch.load(path)` returns `{key: tensor}` with bit-identical values (dtype, sizes, strides and
/// storage sharing kept; tensors on other devices are copied to the CPU). The file is written to
/// `path + ".tmp"` and renamed, so `path` is never half-written.
///
/// ```
/// cac::io::write_state_dict(cac::io::state_dict_of(*model), "model_cpp.pth");
/// // Python: model.load_state_dict(torch.load("model_cpp.pth"))
/// ```
inline void write_state_dict(const StateDict& state_dict, const std::string& path) {
  const char* who = "cac::io::write_state_dict";
  detail::Pickler pickle;
  pickle.out = "\x80\x02}";  // PROTO 2, EMPTY_DICT
  struct Record {
    std::string name;
    at::Tensor storage_owner;
  };
  std::vector<Record> records;
  std::map<std::pair<const void*, int>, std::string> keys;  // (storage, dtype) -> record key
  if (!state_dict.empty()) pickle.op('(');
  for (const auto& [name, value] : state_dict) {
    TORCH_CHECK(value.defined(), who, ": expected defined tensors but '", name, "' is undefined");
    TORCH_CHECK(!value.is_sparse() && !value.is_quantized() && value.layout() == at::kStrided, who,
                ": expected dense tensors but '", name, "' has layout ", value.layout());
    at::Tensor tensor = value.device().is_cpu() ? value.detach() : value.detach().cpu();
    const std::string storage_type = detail::storage_class(tensor.scalar_type(), who);
    const auto id = std::make_pair(static_cast<const void*>(tensor.storage().unsafeGetStorageImpl()),
                                   static_cast<int>(tensor.scalar_type()));
    auto found = keys.find(id);
    if (found == keys.end()) {
      found = keys.emplace(id, std::to_string(records.size())).first;
      records.push_back({"data/" + found->second, tensor});
    }
    const int64_t storage_numel =
        static_cast<int64_t>(tensor.storage().nbytes() / c10::elementSize(tensor.scalar_type()));
    pickle.string(name);
    pickle.global("torch._utils", "_rebuild_tensor_v2");
    pickle.op('(');
    pickle.op('(');  // the persistent id
    pickle.string("storage");
    pickle.global("torch", storage_type);
    pickle.string(found->second);
    pickle.string("cpu");
    pickle.integer(storage_numel);
    pickle.op('t');
    pickle.op('Q');
    pickle.integer(tensor.storage_offset());
    pickle.int_tuple(tensor.sizes());
    pickle.int_tuple(tensor.strides());
    pickle.out.push_back(static_cast<char>(0x89));  // requires_grad=False
    pickle.global("collections", "OrderedDict");
    pickle.op(')');
    pickle.op('R');  // backward_hooks = OrderedDict()
    pickle.op('t');
    pickle.op('R');
  }
  if (!state_dict.empty()) pickle.op('u');
  pickle.op('.');

  // A temporary of this process beside the target: a user's own `OUT.tmp` and a concurrent writer
  // of the same OUT are left alone.
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  try {
    std::ofstream file(temp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(file.good(), who, ": cannot open ", temp, " for writing: ", std::strerror(errno));
    caffe2::serialize::PyTorchStreamWriter writer([&file](const void* data, size_t size) -> size_t {
      file.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
      return file.good() ? size : 0;
    });
    writer.writeRecord("data.pkl", pickle.out.data(), pickle.out.size());
    for (const auto& record : records) {
      const auto& storage = record.storage_owner.storage();
      writer.writeRecord(record.name, storage.data(), storage.nbytes());
    }
    writer.writeEndOfFile();
    file.close();
    if (!file.good()) {
      std::remove(temp.c_str());
      TORCH_CHECK(false, who, ": writing ", temp, " failed (disk full?)");
    }
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    std::remove(temp.c_str());
    TORCH_CHECK(false, who, ": cannot rename ", temp, " to ", path, ": ", error.message());
  }
}

}  // namespace io
}  // namespace cac
