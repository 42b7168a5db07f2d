/**
 * Argument validation: every public entry point checks its arguments here before
 * anything reaches the kernel, so that bad input fails the same way everywhere.
 */
import { InvalidArgumentError } from './errors';

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/** Throws InvalidArgumentError "NAME must be EXPECTED; got VALUE" unless ok. */
export function check(ok: boolean, name: string, expected: string, value: unknown): asserts ok {
  if (!ok) throw new InvalidArgumentError(`${name} must be ${expected}; got ${describe(value)}`);
}

/** Throws InvalidArgumentError (code ERR_INVALID_ARG_TYPE) unless value is a string. */
export function checkString(value: unknown, name: string): asserts value is string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(`${name} must be a string; got ${describe(value)}`, 'ERR_INVALID_ARG_TYPE');
  }
}

/** A path: a non-empty string without NUL bytes (the kernel would end it at the first). */
export function checkPath(value: unknown, name: string): asserts value is string {
  checkString(value, name);
  check(value.length > 0 && !value.includes('\0'), name, 'a non-empty path without NUL bytes', value);
}

/** A safe integer from min to max inclusive (by default any non-negative one). */
export function checkInteger(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  check(
    typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max,
    name,
    max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`,
    value,
  );
}
