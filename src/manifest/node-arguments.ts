import { basename } from 'node:path';

/**
 * How Node reads a stdio server's arguments, as far as the pin check needs it: which of them
 * name a module Node loads, and what kind of name each is. Deliberately not Node's resolver:
 * what this cannot place is refused by the caller, with how to write it as an exact path.
 */

/** Options whose value (the next argument, or the text after '=') is a module Node loads first. */
const PRELOAD_OPTIONS = ['-r', '--require', '--import', '--loader', '--experimental-loader'] as const;

/** What Node may append to a module path that names no file (CommonJS tries .js, .json, .node). */
export const NODE_EXTENSIONS = ['.js', '.mjs', '.cjs', '.json', '.node'] as const;

/** Names of the Node executable (a file named otherwise is Node only if it is this broker's own). */
const NODE_NAMES = new Set(['node', 'nodejs']);

/** True when one of the executable's paths (as written, and with its links followed) is Node's. */
export function isNodeExecutable(paths: readonly string[], ownNode: string): boolean {
  return paths.some((path) => NODE_NAMES.has(basename(path)) || path === ownNode);
}

/** A module name Node takes from the arguments. */
export interface NodeModuleArgument {
  /** The argument that holds it, as written. */
  readonly arg: string;
  readonly specifier: string;
  /**
   * The value of -r, --require, --import, --loader or --experimental-loader, which Node
   * resolves like an import (a bare name is a package). Otherwise a plain argument, which
   * Node takes as a path when it is the script.
   */
  readonly preload: boolean;
}

/**
 * Every module name Node might load from these arguments: each preload option's value, and
 * every plain argument (not only the script: which one is the script depends on which
 * options take a value, so all are taken, erring on the side of checking too much).
 */
export function nodeModuleArguments(args: readonly string[]): NodeModuleArgument[] {
  const found: NodeModuleArgument[] = [];
  let options = true;
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    if (options && arg === '--') {
      options = false;
      continue;
    }
    const option = options ? PRELOAD_OPTIONS.find((name) => arg === name || arg.startsWith(`${name}=`)) : undefined;
    if (option !== undefined) {
      // "-r value": the value is also met as a plain argument on the next turn.
      const value = arg === option ? args[index + 1] : arg.slice(option.length + 1);
      if (value !== undefined) found.push({ arg: arg === option ? value : arg, specifier: value, preload: true });
    } else if (!options || !arg.startsWith('-')) {
      found.push({ arg, specifier: arg, preload: false });
    }
  }
  return found;
}

/** What a preload option's value names. */
export type PreloadSpecifier =
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'url' }
  | { readonly kind: 'package'; readonly name: string }
  | { readonly kind: 'builtin' }
  | { readonly kind: 'unknown'; readonly why: string };

/** Classifies a preload option's value the way Node's import and require read a specifier. */
export function classifyPreload(specifier: string): PreloadSpecifier {
  if (specifier.startsWith('file:')) return { kind: 'url' };
  // node:fs is built in; a data: URL's code is the argument itself, signed with the manifest.
  if (specifier.startsWith('node:') || specifier.startsWith('data:')) return { kind: 'builtin' };
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(specifier)) return { kind: 'unknown', why: 'is a URL that is not a file: URL' };
  if (specifier === '.' || specifier === '..' || specifier.startsWith('/') || specifier.startsWith('./') || specifier.startsWith('../')) return { kind: 'path', path: specifier };
  if (specifier.startsWith('#')) return { kind: 'unknown', why: 'is resolved through the "imports" of a package.json' };
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
  const valid = name.split('/').every((part) => part !== '' && part !== '.' && part !== '..' && !part.includes('\\')) && (!specifier.startsWith('@') || parts.length >= 2);
  if (!valid) return { kind: 'unknown', why: 'is not a package name' };
  return { kind: 'package', name };
}
