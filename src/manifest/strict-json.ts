import { parse as parseTree, type AnyNode } from '@humanwhocodes/momoa';

export class StrictJsonError extends Error {
  readonly kind: 'syntax' | 'duplicate-key';
  constructor(kind: 'syntax' | 'duplicate-key', message: string) {
    super(message);
    this.kind = kind;
  }
}

/**
 * Parses JSON and refuses duplicate object keys. JSON.parse keeps the last of two equal
 * keys while other parsers keep the first, so a document with duplicates can mean
 * different things to the signer's tools and to the broker (RFC 8259 section 4 leaves it
 * undefined). The syntax tree comes from momoa, which reports every member; the value
 * itself is then built by JSON.parse from the same, now unambiguous, text.
 */
export function parseStrictJson(text: string): unknown {
  let tree: AnyNode;
  try {
    tree = parseTree(text, { mode: 'json' }).body;
  } catch (error) {
    // RangeError included: nesting deep enough to exhaust the stack is refused too.
    throw new StrictJsonError('syntax', `not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const duplicate = findDuplicateKey(tree, '');
  if (duplicate === 'too-deep') throw new StrictJsonError('syntax', `nested deeper than ${MAX_DEPTH} levels`);
  if (duplicate !== undefined) throw new StrictJsonError('duplicate-key', `duplicate key at ${duplicate}`);
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    // momoa is more lenient in places (a raw control character inside a string).
    throw new StrictJsonError('syntax', `not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** No manifest needs more; deeper documents only serve to exhaust recursive code downstream. */
export const MAX_DEPTH = 64;

/** The JSON pointer of the first repeated key, or 'too-deep'; depth first and iterative. */
function findDuplicateKey(root: AnyNode, rootPath: string): string | undefined {
  const stack: { node: AnyNode; path: string; depth: number }[] = [{ node: root, path: rootPath, depth: 0 }];
  while (stack.length > 0) {
    const { node, path, depth } = stack.pop()!;
    if (depth > MAX_DEPTH) return 'too-deep';
    if (node.type === 'Object') {
      const seen = new Set<string>();
      for (const member of node.members) {
        const key = member.name.type === 'String' ? member.name.value : member.name.name;
        const here = `${path}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
        if (seen.has(key)) return here;
        seen.add(key);
        stack.push({ node: member.value, path: here, depth: depth + 1 });
      }
    } else if (node.type === 'Array') {
      node.elements.forEach((element, index) => stack.push({ node: element.value, path: `${path}/${index}`, depth: depth + 1 }));
    }
  }
  return undefined;
}
