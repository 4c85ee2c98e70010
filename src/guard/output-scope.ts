/**
 * Scope constraints: a tool's manifest may list the fields of its structured output an
 * agent may see, as JSON pointers (RFC 6901) where a `*` segment stands for every array
 * item or object member. Everything else is dropped. Compiled once, at load, into a tree.
 */

interface ScopeNode {
  /** The whole value at this point is selected. */
  whole: boolean;
  readonly children: Map<string, ScopeNode>;
}

export type OutputScope = (value: unknown) => unknown;

export class ScopeError extends Error {}

const MAX_SEGMENTS = 32;

export function compileOutputScope(pointers: readonly string[]): OutputScope {
  const root: ScopeNode = { whole: false, children: new Map() };
  for (const pointer of pointers) {
    if (pointer === '') {
      root.whole = true;
      continue;
    }
    if (!pointer.startsWith('/')) throw new ScopeError(`"${pointer}" is not a JSON pointer (it must start with /)`);
    const segments = pointer.slice(1).split('/');
    if (segments.length > MAX_SEGMENTS) throw new ScopeError(`"${pointer}" has more than ${MAX_SEGMENTS} segments`);
    let node = root;
    for (const raw of segments) {
      if (/~[^01]|~$/.test(raw)) throw new ScopeError(`"${pointer}" has an invalid ~ escape`);
      const segment = raw.replaceAll('~1', '/').replaceAll('~0', '~');
      let child = node.children.get(segment);
      if (!child) {
        child = { whole: false, children: new Map() };
        node.children.set(segment, child);
      }
      node = child;
    }
    node.whole = true;
  }
  return (value) => project(value, root);
}

/** Recursion depth is bounded by the pointers' length (at most 32), not by the value. */
function project(value: unknown, node: ScopeNode): unknown {
  if (node.whole) return value;
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    value.forEach((item, index) => {
      const child = node.children.get(String(index)) ?? node.children.get('*');
      if (!child) return;
      const projected = project(item, child);
      if (projected !== undefined) out.push(projected);
    });
    return out;
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const child = node.children.get(key) ?? node.children.get('*');
      if (!child) continue;
      const projected = project(item, child);
      if (projected !== undefined) Object.defineProperty(out, key, { value: projected, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  // A scalar where the scope expects an object or array: nothing of it is selected.
  return undefined;
}
