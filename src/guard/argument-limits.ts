/** Limits every call's arguments must meet, whatever the tool's schema says. */
export interface ArgumentLimits {
  readonly maxBytes: number;
  readonly maxDepth: number;
  readonly maxStringLength: number;
  readonly maxArrayLength: number;
  readonly maxObjectKeys: number;
}

export const DEFAULT_ARGUMENT_LIMITS: ArgumentLimits = {
  maxBytes: 256 * 1024, // 256 KiB of JSON
  maxDepth: 32, // nesting levels of objects and arrays
  maxStringLength: 64 * 1024, // characters in any one string
  maxArrayLength: 10_000, // items in any one array
  maxObjectKeys: 1000, // keys in any one object
};

/** Keys that reach Object.prototype in code that indexes plain objects; refused anywhere. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export interface LimitViolation {
  /** JSON pointer into the arguments. */
  readonly path: string;
  readonly rule: 'maxBytes' | 'maxDepth' | 'maxStringLength' | 'maxArrayLength' | 'maxObjectKeys' | 'forbiddenKey' | 'notJson';
  readonly message: string;
}

/**
 * Checks arguments against the global limits. Walks the value with an explicit stack (no
 * recursion, so no stack overflow on hostile nesting) and stops at the first violation.
 * Returns undefined when the arguments are within every limit.
 */
export function checkArgumentLimits(args: unknown, limits: ArgumentLimits): LimitViolation | undefined {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: args, path: '', depth: 0 }];
  let steps = 0;
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop()!;
    // Every value counts at least one byte, so a walk longer than maxBytes steps is oversized.
    if (++steps > limits.maxBytes) return { path: '', rule: 'maxBytes', message: `arguments are larger than ${limits.maxBytes} bytes` };
    if (typeof value === 'string') {
      if (value.length > limits.maxStringLength) {
        return { path: at(path), rule: 'maxStringLength', message: `string is longer than ${limits.maxStringLength} characters` };
      }
      continue;
    }
    if (value === null || typeof value === 'number' || typeof value === 'boolean') continue;
    if (typeof value !== 'object') return { path: at(path), rule: 'notJson', message: `a ${typeof value} is not a JSON value` };
    if (depth >= limits.maxDepth) return { path: at(path), rule: 'maxDepth', message: `nested deeper than ${limits.maxDepth} levels` };
    if (Array.isArray(value)) {
      if (value.length > limits.maxArrayLength) {
        return { path: at(path), rule: 'maxArrayLength', message: `array has more than ${limits.maxArrayLength} items` };
      }
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], path: `${path}/${i}`, depth: depth + 1 });
      continue;
    }
    const keys = Object.keys(value);
    if (keys.length > limits.maxObjectKeys) {
      return { path: at(path), rule: 'maxObjectKeys', message: `object has more than ${limits.maxObjectKeys} keys` };
    }
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i]!;
      const child = `${path}/${escapePointer(key)}`;
      if (FORBIDDEN_KEYS.has(key)) return { path: child, rule: 'forbiddenKey', message: `the key "${key}" is not allowed` };
      if (key.length > limits.maxStringLength) {
        return { path: at(path), rule: 'maxStringLength', message: `a key is longer than ${limits.maxStringLength} characters` };
      }
      stack.push({ value: (value as Record<string, unknown>)[key], path: child, depth: depth + 1 });
    }
  }
  const bytes = Buffer.byteLength(JSON.stringify(args), 'utf8');
  if (bytes > limits.maxBytes) return { path: '', rule: 'maxBytes', message: `arguments are ${bytes} bytes; the limit is ${limits.maxBytes}` };
  return undefined;
}

function at(path: string): string {
  return path === '' ? '/' : path;
}

/** RFC 6901: ~ becomes ~0 and / becomes ~1. */
export function escapePointer(key: string): string {
  return key.includes('~') || key.includes('/') ? key.replaceAll('~', '~0').replaceAll('/', '~1') : key;
}
