import { accessSync, closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { describeSchemaErrors } from '../config/schema-errors.ts';
import { deepFreeze } from '../config/freeze.ts';
import { findInvisible } from '../guard/invisible.ts';
import manifestSchema from './manifest.schema.json' with { type: 'json' };
import { ManifestRejection } from './rejections.ts';
import type { TrustPolicy } from './trust.ts';
import type { Era, Manifest, ManifestCredential, ManifestPrompt, ManifestTool } from './types.ts';
import { checkManifestPolicy, verifyEnvelope } from './verify.ts';
import { compileArgumentSchema, type ArgumentValidator } from '../guard/argument-schema.ts';
import { compileOutputScope, type OutputScope } from '../guard/output-scope.ts';
import { compileHttpTemplate, type HttpRequestTemplate } from '../backends/http-request.ts';
import { readModuleFile } from './module-file.ts';
import { absolutePath, argumentProblems, type LaunchPins } from './artifacts.ts';

const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats.default(ajv, ['date-time']);
const validateManifest = ajv.compile(manifestSchema);

/** A signed manifest is small; anything larger is refused before it is parsed. */
export const MAX_SIGNED_MANIFEST_BYTES = 2 * 1024 * 1024; // 2 MiB

interface RawManifest {
  name: string;
  version: string;
  serial: number;
  issuedAt: string;
  expiresAt: string;
  description?: string;
  instructions?: string;
  transport:
    | { type: 'stdio'; command: string; args?: string[]; cwd?: string; env?: Record<string, string>; era?: Era; pins: RawPins }
    | { type: 'http'; url: string; era?: Era; tls?: { spki?: string[] } }
    | { type: 'http-api'; baseUrl: string }
    | { type: 'sandbox'; module: string; sha256: string };
  tools: ManifestTool[];
  prompts?: ManifestPrompt[];
  credentials?: { name: string; env?: string; header?: string; prefix?: string; clientCertificate?: true }[];
}

interface RawPins {
  command: string;
  files?: { path: string; sha256: string }[];
  directories?: { path: string; sha256: string }[];
  packages?: { path: string; package: string; integrity: string; sha256: string }[];
  data?: string[];
}

/** Headers the transport itself owns; a credential may not set them. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']);

export interface LoadOptions {
  /** The time validity is judged at, ms since the epoch. */
  readonly now?: number;
  /** Where a bare stdio command is looked up. Default: the broker's PATH. */
  readonly searchPath?: string | undefined;
}

/**
 * Loads one signed manifest, every check in order: size, signatures and threshold,
 * payload type, duplicate keys, canonical form (verifyEnvelope); schema and rules
 * (buildManifest); namespace, revocation and validity (checkManifestPolicy). Rollback and
 * equivocation need the state store and are the caller's last step. Any failure is a
 * ManifestRejection whose reason says which check refused.
 */
export function loadSignedManifest(file: string, trust: TrustPolicy, options: LoadOptions = {}): Manifest {
  const now = options.now ?? Date.now();
  const bytes = readCapped(file);
  const verified = verifyEnvelope(bytes, trust, now);
  const manifest = buildManifest(verified.document, file, { resolveCommand: true, searchPath: options.searchPath ?? process.env['PATH'], digest: verified.digest, signers: verified.signers });
  checkManifestPolicy(manifest, verified, trust, now);
  return manifest;
}

function readCapped(file: string): Buffer {
  let fd: number | undefined;
  try {
    // Non-blocking, then only a regular file: a FIFO or device must not hang the broker.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ManifestRejection('unreadable', 'not a regular file');
    const size = stat.size;
    if (size > MAX_SIGNED_MANIFEST_BYTES) throw new ManifestRejection('too-large', `the file is ${size} bytes; the limit is ${MAX_SIGNED_MANIFEST_BYTES}`);
    // Read at most one byte past the limit: a file that grows meanwhile is still capped.
    const buffer = Buffer.alloc(Math.min(size, MAX_SIGNED_MANIFEST_BYTES) + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, length);
      if (n === 0) break;
      length += n;
    }
    if (length > MAX_SIGNED_MANIFEST_BYTES) throw new ManifestRejection('too-large', `the file is over ${MAX_SIGNED_MANIFEST_BYTES} bytes`);
    return buffer.subarray(0, length);
  } catch (error) {
    if (error instanceof ManifestRejection) throw error;
    throw new ManifestRejection('unreadable', `cannot read the file (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export interface BuildOptions {
  /**
   * The broker loading it: resolve a stdio command to an absolute path, and read a code
   * tool's module and check it against its pinned SHA-256. False when only signing.
   */
  readonly resolveCommand: boolean;
  readonly searchPath?: string | undefined;
  readonly digest?: string;
  readonly signers?: Manifest['signers'];
  /** The folder relative paths (cwd, module) are resolved against. Default: the file's folder. */
  readonly base?: string;
}

/**
 * Checks a manifest document against the published schema and the rules a schema cannot
 * say (no invisible characters anywhere, one definition per tool, annotations that agree
 * with the access class, schemas that compile, credentials that fit the transport), and
 * returns it compiled and frozen. Used by the broker on a verified payload and by
 * `manifest sign` before signing.
 */
export function buildManifest(data: unknown, file: string, options: BuildOptions): Manifest {
  if (!validateManifest(data)) {
    const problems = describeSchemaErrors(validateManifest.errors);
    throw new ManifestRejection('invalid-manifest', `invalid manifest:\n  ${problems.join('\n  ')}`, { problems });
  }
  for (const field of ['issuedAt', 'expiresAt'] as const) {
    // ajv's date-time accepts a leap second (23:59:60), which Date.parse does not.
    if (Number.isNaN(Date.parse(String((data as Record<string, unknown>)[field])))) {
      throw new ManifestRejection('invalid-manifest', `at /${field}: "${String((data as Record<string, unknown>)[field])}" is not a time this broker can compare; write it without a leap second`);
    }
  }
  const hidden = findInvisibleText(data, '');
  if (hidden) throw new ManifestRejection('invisible-characters', `at ${hidden.path}: ${hidden.character} is an invisible or control character; names, titles and descriptions must be plain visible text`, hidden);
  const raw = data as unknown as RawManifest;
  const invalid = (path: string, why: string) => new ManifestRejection('invalid-manifest', `at ${path}: ${why}`, { path });

  const validators = new Map<string, ArgumentValidator>();
  const outputValidators = new Map<string, ArgumentValidator>();
  const outputScopes = new Map<string, OutputScope>();
  const httpTemplates = new Map<string, HttpRequestTemplate>();
  const isHttpApi = raw.transport.type === 'http-api';
  const isSandbox = raw.transport.type === 'sandbox';
  raw.tools.forEach((tool, index) => {
    if (validators.has(tool.name)) throw invalid(`/tools/${index}/name`, `tool "${tool.name}" is declared twice`);
    const conflict = annotationConflict(tool);
    if (conflict) throw invalid(`/tools/${index}/annotations`, conflict);
    validators.set(tool.name, compileOrExplain(tool.inputSchema, `/tools/${index}/inputSchema`));
    if (tool.outputSchema) outputValidators.set(tool.name, compileOrExplain(tool.outputSchema, `/tools/${index}/outputSchema`, false));
    if (tool.outputFields) {
      try {
        outputScopes.set(tool.name, compileOutputScope(tool.outputFields));
      } catch (error) {
        throw invalid(`/tools/${index}/outputFields`, (error as Error).message);
      }
    }
    if (isHttpApi !== (tool.http !== undefined)) {
      throw invalid(`/tools/${index}`, isHttpApi ? 'a tool of an http-api server needs http: the request it makes (method and path)' : 'http applies to tools of an http-api server only');
    }
    if (isSandbox && tool.access !== 'read') {
      throw invalid(`/tools/${index}/access`, 'a code tool runs with no network, files or state, so it changes nothing: declare access: read');
    }
    if (!isSandbox && tool.sandbox !== undefined) throw invalid(`/tools/${index}/sandbox`, 'sandbox limits apply to tools of a sandbox server only');
    if (tool.http) {
      try {
        httpTemplates.set(tool.name, compileHttpTemplate(tool.http, tool.inputSchema));
      } catch (error) {
        throw invalid(`/tools/${index}/http`, (error as Error).message);
      }
    }
  });

  const prompts = raw.prompts ?? [];
  const promptNames = new Set<string>();
  prompts.forEach((prompt, index) => {
    if (promptNames.has(prompt.name)) throw invalid(`/prompts/${index}/name`, `prompt "${prompt.name}" is declared twice`);
    promptNames.add(prompt.name);
    const argumentNames = new Set<string>();
    (prompt.arguments ?? []).forEach((argument, position) => {
      if (argumentNames.has(argument.name)) throw invalid(`/prompts/${index}/arguments/${position}/name`, `argument "${argument.name}" is declared twice`);
      argumentNames.add(argument.name);
    });
  });
  if (prompts.length > 0 && (raw.transport.type === 'http-api' || raw.transport.type === 'sandbox')) {
    throw invalid('/prompts', 'prompts come from an MCP server (stdio or http transport)');
  }

  const base = options.base ?? dirname(resolve(file));
  let transport: Manifest['transport'];
  if (raw.transport.type === 'stdio') {
    const cwd = resolve(base, raw.transport.cwd ?? '.');
    const pins = launchPins(raw.transport.pins, cwd);
    const args = raw.transport.args ?? [];
    const command = options.resolveCommand ? resolveCommand(raw.transport.command, cwd, options.searchPath) : raw.transport.command;
    transport = {
      type: 'stdio',
      command,
      args,
      cwd,
      env: codeFreeEnv(toPlainRecord(raw.transport.env ?? {})),
      // Over stdio, auto and modern make the SDK start the server a second time, briefly,
      // to probe its era (with the same environment, credentials included): legacy unless
      // the manifest asks.
      era: raw.transport.era ?? 'legacy',
      pins,
    };
    if (options.resolveCommand) {
      // Paths are followed as the server will follow them (links, then '..'; Node's module
      // forms when the command is Node). The broker checks again before every start.
      const problems = argumentProblems(args, cwd, pins, command);
      if (problems.length > 0) {
        const unpinned = [...new Set(problems.map((problem) => problem.arg))];
        throw new ManifestRejection('artifact-unpinned', `at /transport/args: ${problems.map((problem) => `"${problem.arg}" ${problem.why}`).join('; ')}`, { unpinned });
      }
    }
  } else if (raw.transport.type === 'http') {
    const url = parseUrl(raw.transport.url, '/transport/url');
    transport = { type: 'http', url: url.href, era: raw.transport.era ?? 'auto', spki: raw.transport.tls?.spki ?? [] };
    if (url.protocol !== 'https:' && transport.spki.length > 0) throw invalid('/transport/tls', 'a public-key pin needs an https URL');
  } else if (raw.transport.type === 'http-api') {
    const url = parseUrl(raw.transport.baseUrl, '/transport/baseUrl');
    if (url.search !== '' || url.hash !== '' || raw.transport.baseUrl.includes('?') || raw.transport.baseUrl.includes('#')) {
      throw invalid('/transport/baseUrl', 'a base URL has no query or fragment; put query parameters under each tool\'s http.query');
    }
    transport = { type: 'http-api', baseUrl: url.href.replace(/\/$/, '') };
  } else {
    transport = { type: 'sandbox', module: resolve(base, raw.transport.module), sha256: raw.transport.sha256 };
  }
  // What runs is the text read here, checked against the signed digest; the file is not read again.
  let moduleSource: string | undefined;
  if (transport.type === 'sandbox' && options.resolveCommand) {
    const module = readModuleFile(transport.module);
    if (module.sha256 !== transport.sha256) {
      throw new ManifestRejection('module-modified', `the module ${transport.module} has SHA-256 ${module.sha256}; the signed manifest pins ${transport.sha256}. The publisher must sign a release for the changed file`, { module: transport.module, sha256: module.sha256 });
    }
    moduleSource = module.source;
  }

  const credentials = checkCredentials(raw, transport);
  raw.tools.forEach((tool, index) => {
    for (const header of Object.keys(tool.http?.headers ?? {})) {
      if (credentials.some((credential) => credential.header?.toLowerCase() === header.toLowerCase())) {
        throw invalid(`/tools/${index}/http/headers`, `header ${header} carries a credential; the broker sets it`);
      }
    }
  });

  const manifest: Manifest = {
    file: resolve(file),
    name: raw.name,
    version: raw.version,
    serial: raw.serial,
    issuedAt: raw.issuedAt,
    expiresAt: raw.expiresAt,
    ...(raw.description === undefined ? {} : { description: raw.description }),
    ...(raw.instructions === undefined ? {} : { instructions: raw.instructions }),
    transport,
    ...(moduleSource === undefined ? {} : { moduleSource }),
    tools: raw.tools,
    prompts,
    credentials,
    validators,
    outputValidators,
    outputScopes,
    httpTemplates,
    digest: options.digest ?? '',
    signers: options.signers ?? [],
  };
  return deepFreeze(manifest);
}

/**
 * The launch pins with their paths made absolute (relative to the server's cwd). A '..' is
 * kept: the broker resolves it after the links before it, as the kernel does, when it checks.
 */
function launchPins(raw: RawPins, cwd: string): LaunchPins {
  const seen = new Set<string>();
  const place = <T extends { path: string }>(list: T[] | undefined, key: string): T[] =>
    (list ?? []).map((pin, index) => {
      const path = absolutePath(cwd, pin.path);
      if (seen.has(path)) throw new ManifestRejection('invalid-manifest', `at /transport/pins/${key}/${index}/path: ${pin.path} is pinned twice`, { path: pin.path });
      seen.add(path);
      return { ...pin, path };
    });
  const data = (raw.data ?? []).map((path) => resolve(cwd, path));
  return { command: raw.command, files: place(raw.files, 'files'), directories: place(raw.directories, 'directories'), packages: place(raw.packages, 'packages'), data };
}

function parseUrl(text: string, path: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ManifestRejection('invalid-manifest', `at ${path}: not a valid URL`, { path });
  }
  if (url.username !== '' || url.password !== '') throw new ManifestRejection('invalid-manifest', `at ${path}: credentials must not be written into the URL`, { path });
  return url;
}

/**
 * Every text of a manifest reaches a model or a person reading it: tool names, titles,
 * descriptions, instructions, and every key and string inside the schemas (property
 * names and their descriptions included). None may hide characters.
 */
function findInvisibleText(root: unknown, rootPath: string): { path: string; character: string } | undefined {
  // Iterative: a deeply nested schema cannot exhaust the stack.
  const stack: { value: unknown; path: string }[] = [{ value: root, path: rootPath }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (typeof value === 'string') {
      const character = findInvisible(value.replaceAll('\n', ' ').replaceAll('\t', ' '));
      if (character) return { path, character };
    } else if (Array.isArray(value)) {
      value.forEach((item, index) => stack.push({ value: item, path: `${path}/${index}` }));
    } else if (typeof value === 'object' && value !== null) {
      for (const [key, item] of Object.entries(value)) {
        const here = `${path}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
        const inKey = findInvisible(key);
        if (inKey) return { path: here, character: inKey };
        stack.push({ value: item, path: here });
      }
    }
  }
  return undefined;
}

/** Annotations the agent sees must not contradict the access class the policy enforces. */
function annotationConflict(tool: ManifestTool): string | undefined {
  const hints = tool.annotations;
  if (!hints) return undefined;
  if (tool.access === 'read' && hints.readOnlyHint === false) return 'a read tool cannot say readOnlyHint: false';
  if (tool.access === 'read' && hints.destructiveHint === true) return 'a read tool cannot say destructiveHint: true';
  if (tool.access !== 'read' && hints.readOnlyHint === true) return `a ${tool.access} tool cannot say readOnlyHint: true`;
  if (tool.access === 'write' && hints.destructiveHint === true) return 'a write tool cannot say destructiveHint: true; declare it access: destructive';
  if (tool.access === 'destructive' && hints.destructiveHint === false) return 'a destructive tool cannot say destructiveHint: false';
  if (tool.idempotent === true && hints.idempotentHint === false) return 'an idempotent tool cannot say idempotentHint: false';
  return undefined;
}

function checkCredentials(raw: RawManifest, transport: Manifest['transport']): ManifestCredential[] {
  const names = new Set<string>();
  const targets = new Set<string>();
  return (raw.credentials ?? []).map((credential, index) => {
    const fail = (why: string) => new ManifestRejection('invalid-manifest', `at /credentials/${index}: ${why}`, { path: `/credentials/${index}` });
    if (transport.type === 'sandbox') throw fail('a code tool runs with no network and gets no credentials');
    if (names.has(credential.name)) throw fail(`credential "${credential.name}" is declared twice`);
    names.add(credential.name);
    if (transport.type === 'stdio') {
      if (credential.clientCertificate) throw fail('clientCertificate applies to Streamable HTTP servers (type: http)');
      if (credential.header !== undefined || credential.prefix !== undefined) throw fail('header and prefix apply to http servers; a stdio server gets its credentials as environment variables (env)');
      const env = credential.env ?? credential.name;
      // A value from the config must never decide what code the server loads.
      if (LOADER_VARIABLE.test(env)) throw fail(`environment variable "${env}" makes the runtime load code; a credential cannot set it`);
      if (env in transport.env) throw fail(`environment variable "${env}" is also set in /transport/env; a credential cannot share it`);
      if (targets.has(env)) throw fail(`environment variable "${env}" is used by two credentials`);
      targets.add(env);
      return { name: credential.name, env, prefix: '' };
    }
    if (credential.clientCertificate) {
      if (transport.type !== 'http') throw fail('clientCertificate applies to Streamable HTTP servers (type: http)');
      if (credential.header !== undefined || credential.prefix !== undefined || credential.env !== undefined) throw fail('a client certificate is not sent in a header or the environment; remove header, prefix and env');
      if (!transport.url.startsWith('https:')) throw fail('a client certificate needs an https URL');
      if (targets.has('tls client certificate')) throw fail('only one credential can be the client certificate');
      targets.add('tls client certificate');
      return { name: credential.name, prefix: '', clientCertificate: true };
    }
    if (credential.env !== undefined) throw fail('env applies to stdio servers; an http server gets its credentials as request headers (header)');
    if (credential.header === undefined) throw fail('an http server\'s credential needs a header, e.g. header: Authorization, prefix: "Bearer "');
    const header = credential.header.toLowerCase();
    if (RESERVED_HEADERS.has(header)) throw fail(`header "${credential.header}" belongs to the transport and cannot carry a credential`);
    if (targets.has(header)) throw fail(`header "${credential.header}" is used by two credentials`);
    targets.add(header);
    return { name: credential.name, header: credential.header, prefix: credential.prefix ?? '' };
  });
}

function compileOrExplain(schema: Readonly<Record<string, unknown>>, path: string, closed = true): ArgumentValidator {
  try {
    return compileArgumentSchema(schema, { closeObjects: closed });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ManifestRejection('invalid-manifest', `at ${path}: the schema does not compile: ${reason}`, { path });
  }
}

/**
 * Resolves the executable once, at load, so a PATH change later cannot redirect a spawn.
 * A bare name is looked up on the broker's PATH; a relative path is taken from cwd.
 */
export function resolveCommand(command: string, cwd: string, searchPath: string | undefined): string {
  const candidates = isAbsolute(command)
    ? [command]
    : command.includes('/')
      ? [resolve(cwd, command)]
      : (searchPath ?? '').split(delimiter).filter((dir) => isAbsolute(dir)).map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not this one; try the next directory
    }
  }
  throw new ManifestRejection('invalid-manifest', `at /transport/command: "${command}" is not an executable file${isAbsolute(command) || command.includes('/') ? '' : ' on PATH'}`, { command });
}

function toPlainRecord(source: Record<string, string>): Record<string, string> {
  const target: Record<string, string> = Object.create(null);
  for (const [key, value] of Object.entries(source)) target[key] = value;
  return target;
}

/**
 * Environment variables through which a runtime loads code or libraries (Node, the
 * dynamic linker, Python, Perl, Ruby, the JVM, shells). What they name is not a launch
 * argument, so no pin would cover it: a manifest may not set them.
 */
const LOADER_VARIABLE = /^(?:NODE_OPTIONS|NODE_PATH|NODE_REPL_EXTERNAL_MODULE|LD_[A-Z_]+|DYLD_[A-Z_]+|PYTHON(?:PATH|STARTUP|HOME|USERBASE|INSPECT)|PERL5LIB|PERL5OPT|PERLLIB|RUBYLIB|RUBYOPT|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|BASH_ENV|ENV)$/;

function codeFreeEnv(env: Record<string, string>): Record<string, string> {
  for (const name of Object.keys(env)) {
    if (LOADER_VARIABLE.test(name)) {
      throw new ManifestRejection('artifact-unpinned', `at /transport/env/${name}: this variable makes the runtime load code the broker cannot pin; load it through a pinned launch argument instead (for example "--import ./hook.mjs" with the file pinned)`, {
        path: `/transport/env/${name}`,
      });
    }
  }
  return env;
}
