import { WardenError } from '../errors.ts';

/** How a native HTTP tool's manifest maps its arguments onto a request (the `http` of a tool). */
export interface RawHttpTemplate {
  readonly method: HttpMethod;
  readonly path: string;
  readonly query?: Readonly<Record<string, string>>;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: unknown;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Literal text and {argument} placeholders, in order. */
type Template = readonly (string | { readonly arg: string })[];

/** A body template: JSON in which a string that is exactly "{name}" stands for that argument's value. */
type BodyTemplate = { readonly arg: string } | { readonly literal: unknown } | { readonly object: readonly (readonly [string, BodyTemplate])[] } | { readonly array: readonly BodyTemplate[] };

export interface HttpRequestTemplate {
  readonly method: HttpMethod;
  readonly path: Template;
  readonly query: readonly (readonly [string, Template])[];
  readonly headers: readonly (readonly [string, Template])[];
  readonly body: BodyTemplate | undefined;
}

export interface BuiltRequest {
  readonly url: URL;
  readonly method: HttpMethod;
  /** Lower-case names; the credential headers are added by the backend, not here. */
  readonly headers: Record<string, string>;
  readonly body: string | undefined;
}

const PLACEHOLDER = /\{([A-Za-z0-9_.-]{1,64})\}/g;
/** Characters a path template may hold outside placeholders (RFC 3986 pchar and /), no ? or #. */
const PATH_LITERAL = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
/** Headers the request itself owns: a template may not set them. */
export const TRANSPORT_HEADERS = new Set(['host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect', 'proxy-authorization', 'proxy-connection', 'accept-encoding']);
const BODY_DEPTH = 32;

/**
 * Compiles a tool's request template once, at manifest load. Throws an Error saying what
 * is wrong: a placeholder naming no argument of the input schema, a path placeholder whose
 * argument is optional, a path with ? or # or a dot segment, a reserved header, a body on
 * a GET, braces that are not a placeholder.
 */
export function compileHttpTemplate(raw: RawHttpTemplate, inputSchema: Readonly<Record<string, unknown>>): HttpRequestTemplate {
  const properties = new Set(Object.keys(isRecord(inputSchema['properties']) ? inputSchema['properties'] : {}));
  const required = new Set(Array.isArray(inputSchema['required']) ? (inputSchema['required'] as unknown[]).map(String) : []);
  const known = (where: string) => (name: string) => {
    if (!properties.has(name)) throw new Error(`${where}: {${name}} is not a property of the input schema`);
  };

  const path = parseTemplate(raw.path, 'path');
  if (!raw.path.startsWith('/')) throw new Error('path must start with /');
  const literal = path.filter((part) => typeof part === 'string').join('');
  if (!PATH_LITERAL.test(literal)) throw new Error('path may hold only URL path characters outside placeholders (put the query string under query)');
  // A % that is not a complete escape could be completed by an argument (.%{v} with v = 2e).
  for (const part of path) {
    if (typeof part === 'string' && /%(?![0-9A-Fa-f]{2})/.test(part)) throw new Error('path: % must start an escape of two hex digits, as in %20');
  }
  // The URL parser also reads %2e as a dot: /a/%2e%2e/b would silently become /b.
  if (raw.path.split('/').some((segment) => ['.', '..'].includes(segment.replace(/%2e/gi, '.'))) || raw.path.includes('//')) {
    throw new Error('path may not have empty, . or .. segments (nor %2e forms of them)');
  }
  for (const part of path) {
    if (typeof part === 'string') continue;
    known('path')(part.arg);
    if (!required.has(part.arg)) throw new Error(`path: {${part.arg}} must be a required property of the input schema (a path cannot leave it out)`);
  }

  const query = Object.entries(raw.query ?? {}).map(([name, value]) => {
    const template = parseTemplate(value, `query ${name}`);
    for (const part of template) if (typeof part !== 'string') known(`query ${name}`)(part.arg);
    return [name, template] as const;
  });

  const headers = Object.entries(raw.headers ?? {}).map(([name, value]) => {
    const lower = name.toLowerCase();
    if (TRANSPORT_HEADERS.has(lower)) throw new Error(`header ${name} belongs to the request itself and cannot be set`);
    const template = parseTemplate(value, `header ${name}`);
    for (const part of template) {
      if (typeof part === 'string' && !/^[\x20-\x7e]*$/.test(part)) throw new Error(`header ${name}: only printable ASCII may be written`);
      if (typeof part !== 'string') known(`header ${name}`)(part.arg);
    }
    return [lower, template] as const;
  });
  const seen = new Set<string>();
  for (const [name] of headers) {
    if (seen.has(name)) throw new Error(`header ${name} is set twice`);
    seen.add(name);
  }

  let body: BodyTemplate | undefined;
  if (raw.body !== undefined) {
    if (raw.method === 'GET') throw new Error('a GET request has no body');
    body = compileBody(raw.body, known('body'), 0);
  }
  return { method: raw.method, path, query, headers, body };
}

function parseTemplate(text: string, where: string): Template {
  const parts: (string | { arg: string })[] = [];
  let last = 0;
  for (const match of text.matchAll(PLACEHOLDER)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    parts.push({ arg: match[1]! });
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  for (const part of parts) {
    if (typeof part === 'string' && /[{}]/.test(part)) throw new Error(`${where}: "{" and "}" may only enclose an argument name, as in {id}`);
  }
  return parts;
}

function compileBody(value: unknown, known: (name: string) => void, depth: number): BodyTemplate {
  if (depth > BODY_DEPTH) throw new Error(`body: nested deeper than ${BODY_DEPTH}`);
  if (typeof value === 'string') {
    const whole = /^\{([A-Za-z0-9_.-]{1,64})\}$/.exec(value);
    if (whole) {
      known(whole[1]!);
      return { arg: whole[1]! };
    }
    return { literal: value };
  }
  if (Array.isArray(value)) return { array: value.map((item) => compileBody(item, known, depth + 1)) };
  if (isRecord(value)) return { object: Object.entries(value).map(([key, item]) => [key, compileBody(item, known, depth + 1)] as const) };
  return { literal: value };
}

/**
 * Builds the request for one call from the validated arguments. Every argument is encoded
 * for the place it goes: a path segment is percent-encoded whole (so / ? # @ % cannot
 * structure the URL) and may not be empty, . or ..; query values go through
 * URLSearchParams; header values must be printable ASCII (no CR or LF). The result is
 * checked once more: same origin as the base URL, path under the base path.
 */
export function buildHttpRequest(baseUrl: string, template: HttpRequestTemplate, args: Readonly<Record<string, unknown>>): BuiltRequest {
  const base = new URL(baseUrl);
  const basePath = base.pathname.replace(/\/$/, '');
  const path = template.path.map((part) => (typeof part === 'string' ? part : pathSegment(part.arg, args[part.arg]))).join('');
  const url = new URL(`${base.origin}${basePath}${path}`);
  // The URL parser must take the path as built: anything it rewrites was not signed.
  if (url.pathname !== `${basePath}${path}`) throw invalid('the arguments would change the shape of the request path');

  for (const [name, parts] of template.query) {
    const lone = parts.length === 1 && typeof parts[0] !== 'string' ? parts[0]!.arg : undefined;
    if (lone !== undefined && Array.isArray(args[lone])) {
      for (const item of args[lone] as unknown[]) url.searchParams.append(name, scalar(lone, item, 'a query parameter'));
      continue;
    }
    const value = fill(parts, args, 'a query parameter');
    if (value !== undefined) url.searchParams.append(name, value);
  }

  const headers: Record<string, string> = Object.create(null);
  for (const [name, parts] of template.headers) {
    const value = fill(parts, args, 'a header');
    if (value === undefined) continue;
    if (!/^[\x20-\x7e]*$/.test(value)) throw invalid(`the value for header ${name} may hold only printable ASCII (no line breaks or control characters)`);
    headers[name] = value;
  }

  let body: string | undefined;
  if (template.body !== undefined) {
    const value = fillBody(template.body, args);
    if (value !== ABSENT) {
      body = JSON.stringify(value);
      headers['content-type'] = 'application/json';
    }
  }

  if (url.origin !== base.origin || !(url.pathname === basePath || url.pathname.startsWith(`${basePath}/`))) {
    throw invalid('the arguments would move the request outside the tool\'s base URL');
  }
  return { url, method: template.method, headers, body };
}

function pathSegment(name: string, value: unknown): string {
  const text = scalar(name, value, 'a path segment');
  if (text === '' || text === '.' || text === '..') throw invalid(`argument "${name}" cannot be empty, "." or ".." in a URL path`);
  // Encoded, a / is %2F and stays in one segment; but many servers decode %2F before they
  // resolve dot segments, so a value that would climb once decoded is refused.
  if (text.split(/[/\\]/).some((part) => part === '.' || part === '..')) {
    throw invalid(`argument "${name}" cannot hold "." or ".." between slashes in a URL path`);
  }
  return encodeURIComponent(text);
}

/** Joins literal parts and argument values; undefined when an argument it needs is absent. */
function fill(parts: Template, args: Readonly<Record<string, unknown>>, place: string): string | undefined {
  let text = '';
  for (const part of parts) {
    if (typeof part === 'string') {
      text += part;
      continue;
    }
    const value = args[part.arg];
    if (value === undefined) return undefined;
    text += scalar(part.arg, value, place);
  }
  return text;
}

function scalar(name: string, value: unknown, place: string): string {
  if (typeof value === 'string') {
    // A lone surrogate has no UTF-8 form: encoding would throw, or silently send U+FFFD.
    if (!value.isWellFormed()) throw invalid(`argument "${name}" holds a lone UTF-16 surrogate, which cannot go into ${place}`);
    return value;
  }
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'boolean') return String(value);
  if (value === undefined) throw invalid(`argument "${name}" is required in ${place}`);
  throw invalid(`argument "${name}" must be a string, number or boolean to go into ${place}`);
}

const ABSENT = Symbol('absent');

function fillBody(template: BodyTemplate, args: Readonly<Record<string, unknown>>): unknown {
  if ('arg' in template) return args[template.arg] === undefined ? ABSENT : args[template.arg];
  if ('literal' in template) return template.literal;
  if ('array' in template) return template.array.map((item) => fillBody(item, args)).filter((item) => item !== ABSENT);
  const object: Record<string, unknown> = {};
  for (const [key, item] of template.object) {
    const value = fillBody(item, args);
    // defineProperty: a key "__proto__" in the template is a plain member, not the prototype.
    if (value !== ABSENT) Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return object;
}

function invalid(message: string): WardenError {
  return new WardenError('WARDEN_ARGUMENTS_INVALID', message);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
