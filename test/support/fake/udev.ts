/**
 * udev cookies (libdevmapper's protocol with 95-dm-notify.rules): a SysV semaphore per
 * cookie, raised before an ioctl that may send a uevent and lowered by udev once it has
 * processed that uevent.
 */
import { makeSyscallError, type NativeUdevCookie } from '../../../lib/native';
import { EAGAIN, EIDRM, EINVAL } from './constants';
import type { FakeState } from './model';

/** `dmsetup udevcomplete COOKIE` run by udev: decrements the cookie's semaphore. */
export function udevComplete(s: FakeState, base: number): void {
  for (const [semid, semBase] of s.cookieBases) {
    if (semBase !== base) continue;
    const value = s.system.semaphores.get(semid);
    if (value !== undefined && value > 0) {
      s.system.semaphores.set(semid, value - 1);
      checkCookie(s, semid);
    }
  }
}

const semError = (errno: number, syscall: string) => makeSyscallError({ errno, syscall });

function checkCookie(s: FakeState, semid: number): void {
  if (s.system.semaphores.get(semid) !== 0) return;
  const pending = s.cookieWaiters.get(semid);
  if (!pending?.length) return;
  destroyCookie(s, semid, false);
  for (const waiter of pending) waiter.done(true);
}

export function destroyCookie(s: FakeState, semid: number, wakeWaiters: boolean): void {
  s.system.semaphores.delete(semid);
  s.cookieBases.delete(semid);
  const pending = s.cookieWaiters.get(semid) ?? [];
  s.cookieWaiters.delete(semid);
  if (wakeWaiters) for (const waiter of pending) waiter.done(semError(EIDRM, 'semtimedop'));
}

export function udevCookieCreate(s: FakeState): NativeUdevCookie {
  const used = new Set(s.cookieBases.values());
  while (used.has(s.nextCookieBase)) s.nextCookieBase = (s.nextCookieBase % 0xffff) + 1;
  const base = s.nextCookieBase;
  s.nextCookieBase = (s.nextCookieBase % 0xffff) + 1;
  const semid = s.nextSemid++;
  s.system.semaphores.set(semid, 0);
  s.cookieBases.set(semid, base);
  return { base, semid };
}

export function udevCookieAdd(s: FakeState, semid: number, delta: 1 | -1): void {
  const value = s.system.semaphores.get(semid);
  if (value === undefined) throw semError(EINVAL, 'semop');
  if (value + delta < 0) throw semError(EAGAIN, 'semop'); // IPC_NOWAIT
  s.system.semaphores.set(semid, value + delta);
  checkCookie(s, semid);
}

export function udevCookieWait(s: FakeState, semid: number, timeoutMs: number): Promise<boolean> {
  const value = s.system.semaphores.get(semid);
  if (value === undefined) return Promise.reject(semError(EINVAL, 'semtimedop'));
  if (value === 0) {
    destroyCookie(s, semid, false);
    return Promise.resolve(true);
  }
  return new Promise<boolean>((resolve, reject) => {
    const waiter = {
      done: (result: boolean | Error) => {
        clearTimeout(timer);
        if (result instanceof Error) reject(result);
        else resolve(result);
      },
    };
    const timer = setTimeout(() => {
      const pending = s.cookieWaiters.get(semid) ?? [];
      pending.splice(pending.indexOf(waiter), 1);
      destroyCookie(s, semid, true);
      resolve(false);
    }, timeoutMs);
    s.cookieWaiters.set(semid, [...(s.cookieWaiters.get(semid) ?? []), waiter]);
  });
}
