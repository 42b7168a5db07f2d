#include "file_space.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "fd.h"
#include "sys_error.h"

namespace dmsnap {

void PreallocateFile(const std::string& path, uint64_t inode, uint64_t length) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
  if (fd.get() < 0) throw SysError(errno, "open", "", path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw SysError(errno, "fstat", "", path);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_ino) != inode) throw SysError(ESTALE, "open", "", path);
  int result;
  do {
    result = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(length));
  } while (result != 0 && errno == EINTR);
  if (result != 0) throw SysError(errno, "fallocate", "", path);
  if (::fsync(fd.get()) != 0) throw SysError(errno, "fsync", "", path);
}

}  // namespace dmsnap
