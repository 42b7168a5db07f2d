// The udev cookie protocol of libdevmapper: a SysV semaphore whose key is
// (DM_COOKIE_MAGIC << 16) | base. Its value counts uevents still being processed; udev's
// 95-dm-notify.rules runs `dmsetup udevcomplete COOKIE`, which decrements it.
#pragma once

#include <cstdint>

namespace dmsnap {

struct UdevCookie {
  uint32_t base;  // the low 16 bits of the cookie; the caller ORs in (udev flags << 16)
  int semid;
};

// Creates a fresh semaphore with value 0 under an unused key. Throws SysError.
UdevCookie CreateUdevCookie();

// Adds +1 (before an ioctl that may send a uevent) or -1 (when it sent none).
void AddToUdevCookie(int semid, int delta);

// Waits until the value is 0 or timeout_ms passes, then removes the semaphore.
// Returns false on timeout. Throws SysError for other failures (after removing it).
bool WaitUdevCookie(int semid, uint32_t timeout_ms);

void DestroyUdevCookie(int semid);

}  // namespace dmsnap
