#pragma once
/// \file
/// Writing files without ever leaving a truncated or half-written one: `AtomicFile` (and its
/// one-call form `write_file`) replaces a file atomically, `AppendFile` appends records with a
/// checked write each. Every failure (a full disk, a read-only or missing directory, a
/// permission) is one `std::runtime_error` naming the file and the system's reason:
///
/// ```
/// cac_io::write_file("work_dirs/run/config.yaml", config.dump());
/// // on a full disk: "cac_io::write_file: cannot write work_dirs/run/config.yaml: No space left on device"
/// ```

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cac_io {

/// A file replaced atomically: the bytes go to a temporary file beside `path` (same directory, so
/// the rename cannot cross file systems), each write checked; `commit()` flushes it to the disk
/// (`fsync`), closes it and renames it over `path`. Until then, and for ever if anything fails or
/// the object is destroyed without `commit()` (an exception), `path` keeps its old content (or
/// does not exist) and the temporary is removed. Missing parent directories are created; a `path`
/// that exists but is not a regular file (a directory, `/dev/full`, a pipe) is refused, since the
/// rename would replace it.
///
/// ```
/// cac_io::AtomicFile file("out/result.json");
/// file.write(json.dump(2));
/// file.commit();
/// ```
class AtomicFile {
 public:
  /// Opens a new temporary file beside `path`; throws if it cannot be created.
  explicit AtomicFile(std::filesystem::path path);
  /// Removes the temporary unless `commit()` succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends `size` bytes; throws (and removes the temporary) if they cannot all be written.
  void write(const void* data, size_t size);
  /// Appends `bytes`.
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  /// `write` for writer callbacks that must not throw or come up short (`torch::serialize::
  /// OutputArchive::save_to`: its zip writer throws on a short count, also from its destructor,
  /// which ends the process): always returns `size`; once a write failed, the rest is dropped and
  /// `commit()` reports the failure.
  size_t write_or_defer(const void* data, size_t size) noexcept;
  /// Flushes, fsyncs and closes the temporary and renames it over `path`; throws on any failure
  /// (including one deferred by `write_or_defer`), leaving `path` as it was.
  void commit();
  /// The error of a failed `write_or_defer`, or "" (for callers that must rethrow it).
  std::string deferred_error() const;
  /// The file this replaces.
  const std::filesystem::path& path() const { return path_; }

 private:
  [[noreturn]] void fail(int error);
  void discard() noexcept;
  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  int deferred_ = 0;
  bool committed_ = false;
};

/// Replaces `path` by `bytes` atomically (`AtomicFile`).
void write_file(const std::filesystem::path& path, std::string_view bytes);

/// Makes `target` another name of the file `source` (a hard link; a copy where the file system has
/// none), published atomically: a temporary name beside `target`, then renamed over it, so
/// `target` is always the old file or the new one. Throws naming `target` on failure.
void publish_link(const std::filesystem::path& source, const std::filesystem::path& target);

/// A file that grows by whole records: opened for appending (created if missing, or emptied with
/// `truncate`), each `append` is one checked `write` of the whole record, so a record is either
/// in the file or reported as an error naming the file (a partly written record is cut off again).
///
/// ```
/// cac_io::AppendFile log("work_dirs/run/log.jsonl");
/// log.append(record.dump() + "\n");
/// ```
class AppendFile {
 public:
  /// Opens (creating or, with `truncate`, emptying) `path`; throws if it cannot.
  explicit AppendFile(std::filesystem::path path, bool truncate = false);
  /// Closes the file.
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  /// Appends `record`; throws if it was not written whole.
  void append(std::string_view record);
  /// The file appended to.
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

/// The one error of this module: "cac_io::<what>: cannot write <path>: <strerror(error)>".
std::runtime_error write_error(const char* what, const std::filesystem::path& path, int error);

}  // namespace cac_io
