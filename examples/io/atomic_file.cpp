#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace cac_io {

namespace {

// Writes all of `size` bytes, retrying short writes and EINTR; returns 0 or the errno.
int write_all(int fd, const void* data, size_t size) noexcept {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (written == 0) return EIO;
    bytes += written;
    size -= static_cast<size_t>(written);
  }
  return 0;
}

void create_parent(const std::filesystem::path& path, const char* what) {
  if (!path.has_parent_path()) return;
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  if (error) throw write_error(what, path, error.value());
}

// Makes the rename durable: fsync of the directory (best effort: some file systems refuse it).
void sync_directory(const std::filesystem::path& path) noexcept {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

std::runtime_error write_error(const char* what, const std::filesystem::path& path, int error) {
  return std::runtime_error(std::string("cac_io::") + what + ": cannot write " + path.string() + ": " +
                            std::strerror(error));
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  // Renaming over a device, pipe or directory would replace it: refuse (e.g. --out /dev/stdout).
  std::error_code ignored;
  const auto status = std::filesystem::status(path_, ignored);
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
    throw std::runtime_error("cac_io::write_file: cannot write " + path_.string() +
                             ": it exists and is not a regular file (a directory, device or pipe); name a file");
  }
  create_parent(path_, "write_file");
  static std::atomic<unsigned> counter{0};
  temp_ = path_;
  temp_ += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) throw write_error("write_file", path_, errno);
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::fail(int error) {
  discard();
  throw write_error("write_file", path_, error);
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0) fail(deferred_ ? deferred_ : EBADF);
  if (const int error = write_all(fd_, data, size)) fail(error);
}

size_t AtomicFile::write_or_defer(const void* data, size_t size) noexcept {
  if (deferred_ == 0) deferred_ = fd_ < 0 ? EBADF : write_all(fd_, data, size);
  return size;  // a short count would make the caller throw, maybe from a destructor
}

std::string AtomicFile::deferred_error() const {
  return deferred_ ? write_error("write_file", path_, deferred_).what() : std::string();
}

void AtomicFile::commit() {
  if (deferred_ != 0) fail(deferred_);
  if (fd_ < 0) fail(EBADF);
  if (::fsync(fd_) != 0 && errno != EINVAL) fail(errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(errno);
  if (::rename(temp_.c_str(), path_.c_str()) != 0) fail(errno);
  committed_ = true;
  sync_directory(path_);
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

void publish_link(const std::filesystem::path& source, const std::filesystem::path& target) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path temp = target;
  temp += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::error_code error;
  std::filesystem::create_hard_link(source, temp, error);
  if (error) {
    error.clear();
    std::filesystem::copy_file(source, temp, std::filesystem::copy_options::overwrite_existing, error);
  }
  if (!error) std::filesystem::rename(temp, target, error);
  if (error) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw write_error("publish_link", target, error.value());
  }
}

AppendFile::AppendFile(std::filesystem::path path, bool truncate) : path_(std::move(path)) {
  create_parent(path_, "append_file");
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0666);
  if (fd_ < 0) throw write_error("append_file", path_, errno);
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(std::string_view record) {
  struct stat before {};
  const bool sized = ::fstat(fd_, &before) == 0;
  if (const int error = write_all(fd_, record.data(), record.size())) {
    if (sized && ::ftruncate(fd_, before.st_size) != 0) {
      // The partial record stays; the error below still names the file.
    }
    throw write_error("append_file", path_, error);
  }
}

}  // namespace cac_io
