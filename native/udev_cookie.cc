#include "udev_cookie.h"

#include <errno.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <time.h>

#include <random>

#include "sys_error.h"

namespace dmsnap {

namespace {

// The high half of every dm cookie's semaphore key, shared with libdevmapper and dmsetup.
constexpr uint32_t kCookieMagic = 0x0D4D;

union SemArg {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
};

}  // namespace

UdevCookie CreateUdevCookie() {
  std::random_device device;
  std::mt19937 generator(device());
  std::uniform_int_distribution<uint32_t> distribution(1, 0xFFFF);
  for (int attempt = 0; attempt < 1000; attempt++) {
    uint32_t base = distribution(generator);
    key_t key = static_cast<key_t>((kCookieMagic << 16) | base);
    int semid = ::semget(key, 1, 0600 | IPC_CREAT | IPC_EXCL);
    if (semid < 0) {
      if (errno == EEXIST) continue;  // a cookie in use by someone else
      throw SysError(errno, "semget", "", "");
    }
    SemArg arg;
    arg.val = 0;
    if (::semctl(semid, 0, SETVAL, arg) < 0) {
      int saved = errno;
      ::semctl(semid, 0, IPC_RMID);
      throw SysError(saved, "semctl", "", "");
    }
    return UdevCookie{base, semid};
  }
  throw SysError(EEXIST, "semget", "", "");
}

void AddToUdevCookie(int semid, int delta) {
  struct sembuf op = {0, static_cast<short>(delta), IPC_NOWAIT};
  if (::semop(semid, &op, 1) < 0) throw SysError(errno, "semop", "", "");
}

bool WaitUdevCookie(int semid, uint32_t timeout_ms) {
  struct timespec deadline;
  ::clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += static_cast<long>(timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  for (;;) {
    struct timespec now;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    struct timespec left = {deadline.tv_sec - now.tv_sec, deadline.tv_nsec - now.tv_nsec};
    if (left.tv_nsec < 0) {
      left.tv_sec--;
      left.tv_nsec += 1000000000L;
    }
    if (left.tv_sec < 0) {
      DestroyUdevCookie(semid);
      return false;
    }
    struct sembuf op = {0, 0, 0};  // wait for zero
    if (::semtimedop(semid, &op, 1, &left) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      DestroyUdevCookie(semid);
      return false;
    }
    int saved = errno;
    DestroyUdevCookie(semid);
    throw SysError(saved, "semtimedop", "", "");
  }
  DestroyUdevCookie(semid);
  return true;
}

void DestroyUdevCookie(int semid) { ::semctl(semid, 0, IPC_RMID); }

}  // namespace dmsnap
