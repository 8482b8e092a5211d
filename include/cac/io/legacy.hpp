#pragma once
/// \file
/// The legacy `torch.save` format (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`):
/// the format of torchvision's ImageNet weights and of many open-mmlab files from 2020.
/// `cac::io::read_checkpoint` (`cac/io/checkpoint.hpp`) calls it when a file starts with a
/// pickle instead of a zip archive; nobody needs to call it directly.
///
/// The stream, as torch/serialization.py's `_legacy_save` writes it and `_legacy_load` reads it:
///
///  1. a pickle of the magic number `0x1950a86a20f9469cfc6c`,
///  2. a pickle of the protocol version, `1001`,
///  3. a pickle of the system info (`protocol_version`, `little_endian`, `type_sizes`),
///  4. the main pickle, whose persistent ids are `('storage', <torch.FloatStorage>, root_key,
///     location, numel, view_metadata)` (`view_metadata`: `None` or `(view_key, offset, size)`)
///     or `('module', <class>, source_file, source)`,
///  5. a pickle of the list of root storage keys,
///  6. for each of those keys in that order, the storage's element count (int64, little
///     endian) and its raw little-endian bytes.
///
/// Tensors in the main pickle are rebuilt by `torch._utils._rebuild_tensor_v2` as in the zip
/// format, so both formats share the pickle interpreter and `cac::io::detail::StorageTable`.
/// Not read: files written on a big-endian machine and the older tar form of `torch.save`
/// (both refused with a message saying how to re-save them).

#include <cac/io/pickle.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cac {
namespace io {
namespace detail {

/// The bytes of `torch.serialization.MAGIC_NUMBER` (`0x1950a86a20f9469cfc6c`), little endian,
/// as pickle's `LONG1` stores them.
inline const std::string& legacy_magic_bytes() {
  static const std::string bytes("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  return bytes;
}

/// The command that re-saves a file in the zip format, for messages.
inline const char* resave_hint() {
  return "re-save it in Python with `torch.save(torch.load(f, map_location='cpu'), f2, "
         "_use_new_zipfile_serialization=True)`";
}

/// True when `in` looks like a POSIX tar archive (`ustar` at byte 257), the form of `torch.save`
/// before the legacy stream.
inline bool is_tar(caffe2::serialize::ReadAdapterInterface& in) {
  char magic[5] = {0, 0, 0, 0, 0};
  return in.size() >= 512 && in.read(257, magic, 5) == 5 && std::string(magic, 5) == "ustar";
}

/// Reads one legacy `torch.save` stream (see the file comment) into `document`.
class LegacyReader {
 public:
  /// `in` is the whole file, named `where` in messages.
  LegacyReader(caffe2::serialize::ReadAdapterInterface& in, std::string where)
      : in_(in), where_(std::move(where)), size_(in.size()), storages_(who_, where_) {}

  /// Reads the stream; the main pickle's objects go to `document`.
  void read(Document& document) {
    Document header;
    uint64_t pos = unpickle_at(0, header, "magic number");
    const Value* magic = header.root();
    const bool is_magic = magic->kind == ValueKind::Object && magic->text == "builtins.int" &&
                          magic->items.size() == 1 && magic->items[0]->text == legacy_magic_bytes();
    TORCH_CHECK(is_magic, who_, ": ", where_, ": expected a torch.save file (a zip archive, or the legacy format ",
                "whose first pickle is the magic number 0x1950a86a20f9469cfc6c) but got a plain pickle file whose ",
                "first object is ", magic->repr(1), ", which is not supported");

    pos = unpickle_at(pos, header, "protocol version");
    const Value* version = header.root();
    TORCH_CHECK(version->kind == ValueKind::Int && version->integer == 1001, who_, ": ", where_,
                ": expected the legacy torch.save protocol version 1001 after the magic number but got ",
                version->repr(1));

    pos = unpickle_at(pos, header, "system info");
    const Value* info = header.root();
    TORCH_CHECK(info->is_dict(), who_, ": ", where_, ": expected the legacy torch.save system info (a dict) but got ",
                info->repr(1));
    const Value* little_endian = info->find("little_endian");
    TORCH_CHECK(!(little_endian && little_endian->kind == ValueKind::Bool && !little_endian->boolean), who_, ": ",
                where_, ": expected a file written on a little-endian machine but got one written on a big-endian ",
                "machine (sys_info little_endian=False), which is not supported; ", resave_hint(), " on that machine");

    auto load_storage = [this](const Value& pid) {
      return storages_.resolve(parse_storage_pid(pid, who_, where_),
                               [this](const StoragePid& root) { return allocate(root); });
    };
    pos = unpickle_at(pos, document, "main", load_storage);

    Document key_list;
    pos = unpickle_at(pos, key_list, "storage key list");
    const Value* keys = key_list.root();
    TORCH_CHECK(keys->kind == ValueKind::List || keys->kind == ValueKind::Tuple, who_, ": ", where_,
                ": expected the list of storage keys after the main pickle but got ", keys->repr(1));
    read_storages(*keys, pos);
  }

 private:
  // Runs the pickle that starts at byte `pos` into `document` and returns the byte after its
  // STOP. Only that pickle is read into memory: from a window of 1 MiB that grows 4x while
  // the pickle runs past its end (storage data are read straight into their tensors).
  uint64_t unpickle_at(uint64_t pos, Document& document, const char* what, StorageLoader loader = nullptr) {
    TORCH_CHECK(pos < size_, who_, ": ", where_, ": truncated legacy torch.save file: expected the ", what,
                " pickle at byte ", pos, " but the file ends there");
    uint64_t window = std::min<uint64_t>(size_ - pos, uint64_t{1} << 20);
    const std::string context = where_ + " (legacy torch.save " + what + " pickle at byte " + std::to_string(pos) + ")";
    for (;;) {
      std::string bytes(static_cast<size_t>(window), '\0');
      TORCH_CHECK(in_.read(pos, &bytes[0], bytes.size()) == bytes.size(), who_, ": ", where_, ": cannot read ", window,
                  " bytes at byte ", pos);
      Document attempt;
      try {
        const size_t used = unpickle(bytes.data(), bytes.size(), context, attempt, loader);
        document = std::move(attempt);
        return pos + used;
      } catch (const c10::Error& error) {
        if (pos + window >= size_ || error.msg().find("truncated pickle") == std::string::npos) throw;
      }
      window = std::min<uint64_t>(size_ - pos, window * 4);
    }
  }

  // A root storage of the main pickle: allocated now, filled from the storage section later.
  // All of them together must fit in the file, so a corrupted count cannot exhaust memory.
  at::Tensor allocate(const StoragePid& pid) {
    const auto element = static_cast<uint64_t>(c10::elementSize(pid.dtype));
    const uint64_t left = size_ - std::min(size_, reserved_);
    TORCH_CHECK(
        static_cast<uint64_t>(pid.numel) <= left / element && static_cast<uint64_t>(pid.numel) * element + 8 <= left,
        who_, ": ", where_, ": storage ", pid.key, " of ", pid.numel, " ", pid.dtype, " elements (",
        static_cast<uint64_t>(pid.numel) * element, " bytes) cannot fit in the rest of a file of ", size_,
        " bytes (corrupted element count?)");
    reserved_ += static_cast<uint64_t>(pid.numel) * element + 8;
    return at::empty({pid.numel}, at::TensorOptions().dtype(pid.dtype));
  }

  uint64_t read_u64(uint64_t pos) {
    unsigned char b[8];
    TORCH_CHECK(in_.read(pos, b, 8) == 8, who_, ": ", where_, ": cannot read 8 bytes at byte ", pos);
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | b[i];
    return value;
  }

  // The storage section: for each listed key, its element count and raw bytes, into the storage
  // the main pickle made for it.
  void read_storages(const Value& keys, uint64_t pos) {
    const size_t count = keys.items.size();
    std::unordered_set<std::string> filled;
    for (size_t i = 0; i < count; ++i) {
      const Value* key_value = keys.items[i];
      TORCH_CHECK(key_value->is_string(), who_, ": ", where_, ": expected storage keys (strings) in the storage key ",
                  "list but got ", key_value->repr(1));
      const std::string& key = key_value->text;
      const at::Tensor* root = storages_.root(key);
      TORCH_CHECK(root, who_, ": ", where_, ": the storage section lists storage '", key, "' (", i + 1, " of ", count,
                  ") but the main pickle never uses it");
      TORCH_CHECK(filled.insert(key).second, who_, ": ", where_, ": the storage section lists storage '", key,
                  "' twice");
      TORCH_CHECK(size_ - pos >= 8, who_, ": ", where_, ": truncated storage section: expected the element count of ",
                  "storage '", key, "' (", i + 1, " of ", count, ") at byte ", pos, " but the file ends at byte ",
                  size_);
      const uint64_t numel = read_u64(pos);
      TORCH_CHECK(numel == static_cast<uint64_t>(root->numel()), who_, ": ", where_, ": storage '", key, "' (", i + 1,
                  " of ", count, "): expected ", root->numel(), " ", root->scalar_type(),
                  " elements (as the main pickle says) but the storage section says ", static_cast<int64_t>(numel));
      pos += 8;
      const uint64_t bytes = root->nbytes();
      TORCH_CHECK(size_ - pos >= bytes, who_, ": ", where_, ": truncated storage section: expected ", bytes,
                  " bytes of storage '", key, "' (", i + 1, " of ", count, ") at byte ", pos, " but only ", size_ - pos,
                  " are left");
      if (bytes > 0) {
        TORCH_CHECK(in_.read(pos, root->data_ptr(), bytes) == bytes, who_, ": ", where_, ": cannot read ", bytes,
                    " bytes at byte ", pos);
      }
      pos += bytes;
    }
    for (const auto& key : storages_.keys()) {
      TORCH_CHECK(filled.count(key), who_, ": ", where_, ": expected storage '", key, "' (used by the main pickle) ",
                  "in the storage section but its key list (", count, " keys) does not have it");
    }
  }

  static constexpr const char* who_ = "cac::io::read_checkpoint";
  caffe2::serialize::ReadAdapterInterface& in_;
  std::string where_;
  uint64_t size_;
  uint64_t reserved_ = 0;
  StorageTable storages_;
};

}  // namespace detail
}  // namespace io
}  // namespace cac
