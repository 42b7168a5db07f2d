// flock(2) on a descriptor opened by JavaScript: advisory locks that the kernel drops
// when the process dies, however it dies.
#pragma once

namespace dmsnap {

// Tries to take (exclusive) or drop the lock without blocking. Returns false when
// another open file description holds it. Throws SysError otherwise.
bool TryLockFile(int fd);
void UnlockFile(int fd);

}  // namespace dmsnap
