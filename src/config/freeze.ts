/**
 * Freezes a loaded document all the way down, so no later code can change policy in place.
 * Functions (compiled validators keep state between calls) and Map contents are not
 * reached; catalog entries are frozen where they are built.
 */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !(value instanceof Map) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Reflect.ownKeys(value)) {
      deepFreeze((value as Record<PropertyKey, unknown>)[key]);
    }
  }
  return value;
}
