import type { ArgumentValidator } from '../guard/argument-schema.ts';
import type { OutputScope } from '../guard/output-scope.ts';
import type { HttpRequestTemplate, RawHttpTemplate } from '../backends/http-request.ts';
import type { LaunchPins } from './artifacts.ts';

/** A tool as its owner declared it in a manifest. */
export interface ManifestTool {
  readonly name: string;
  readonly title?: string;
  readonly description: string;
  /** read: no side effects; write: changes something; destructive: loses something for good. */
  readonly access: 'read' | 'write' | 'destructive';
  /** A write the owner signs as safe to repeat: the broker does not deduplicate its calls. */
  readonly idempotent?: boolean;
  readonly inputSchema: Readonly<Record<string, unknown>>;
  readonly outputSchema?: Readonly<Record<string, unknown>>;
  /** Scope constraint: the only output fields an agent may see, as JSON pointers. */
  readonly outputFields?: readonly string[];
  /** This tool's call timeout, ms; capped by the config's maximum. */
  readonly timeoutMs?: number;
  /** Cap on the result text, bytes; can only tighten the config's limit. */
  readonly maxResultBytes?: number;
  /** The annotations the live server must send (pinned); agents see the hints derived from access and idempotent. */
  readonly annotations?: Readonly<ToolAnnotations>;
  /** http-api servers only: the request this tool makes (compiled into Manifest.httpTemplates). */
  readonly http?: RawHttpTemplate;
  /** sandbox servers only: the limits this code tool asks for, each capped by the config's sandbox.maxLimits. */
  readonly sandbox?: Readonly<Partial<SandboxLimitSettings>>;
}

/** A prompt as its owner declared it: pinned, field for field, against what the live server lists. */
export interface ManifestPrompt {
  readonly name: string;
  readonly title?: string;
  readonly description?: string;
  readonly arguments?: readonly { readonly name: string; readonly title?: string; readonly description?: string; readonly required?: boolean }[];
}

/** Limits of one sandboxed run, as the config and manifests set them. */
export interface SandboxLimitSettings {
  readonly memoryMb: number;
  readonly cpuMs: number;
  readonly wallMs: number;
  readonly inputBytes: number;
  readonly outputBytes: number;
  readonly consoleBytes: number;
}

export interface ToolAnnotations {
  readonly title?: string;
  readonly readOnlyHint?: boolean;
  readonly destructiveHint?: boolean;
  readonly idempotentHint?: boolean;
  readonly openWorldHint?: boolean;
}

/** A credential the server needs: its name, and where the broker puts its value. */
export interface ManifestCredential {
  readonly name: string;
  /** stdio: the environment variable set in the child. */
  readonly env?: string;
  /** http and http-api: the request header set on every request, its value `prefix + value`. */
  readonly header?: string;
  readonly prefix: string;
  /** http: the value is the TLS client certificate (PEM: certificate chain and private key). */
  readonly clientCertificate?: true;
}

export type Era = 'auto' | 'legacy' | 'modern';

export interface StdioTransport {
  readonly type: 'stdio';
  /** Absolute path, resolved once at load; never looked up again at spawn time (its links are followed at every spawn). */
  readonly command: string;
  readonly args: readonly string[];
  /** Absolute working directory (its links are followed at every spawn). */
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly era: Era;
  /** What runs, pinned; checked before every spawn. Paths absolute, a '..' kept (applied after the links before it). */
  readonly pins: LaunchPins;
}

export interface HttpTransport {
  readonly type: 'http';
  readonly url: string;
  readonly era: Era;
  /** Base64 SHA-256 of the SubjectPublicKeyInfo the server's certificate must have, one of them; empty: no pin. */
  readonly spki: readonly string[];
}

/** A plain HTTP API whose tools the broker performs itself (native HTTP tools). */
export interface HttpApiTransport {
  readonly type: 'http-api';
  /** scheme://host[:port][/path], without query, fragment or user information. */
  readonly baseUrl: string;
}

/** Code tools: a JavaScript module the broker runs in its sandbox workers. */
export interface SandboxTransport {
  readonly type: 'sandbox';
  /** Absolute path of the module file, resolved at load. */
  readonly module: string;
  /** The SHA-256 the signed manifest pins; the file matched it when loaded. */
  readonly sha256: string;
}

export interface Manifest {
  /** Compiled input-schema validators, by tool name; compiled once, at load. */
  readonly validators: ReadonlyMap<string, ArgumentValidator>;
  /** Compiled output-schema validators, for tools that declare an outputSchema. */
  readonly outputValidators: ReadonlyMap<string, ArgumentValidator>;
  /** Compiled scope constraints, for tools that declare outputFields. */
  readonly outputScopes: ReadonlyMap<string, OutputScope>;
  /** http-api servers: each tool's compiled request template. */
  readonly httpTemplates: ReadonlyMap<string, HttpRequestTemplate>;
  readonly file: string;
  /** Publisher namespace and server, e.g. acme.crm. */
  readonly name: string;
  readonly version: string;
  /** Release counter; never goes down for a name (rollback protection). */
  readonly serial: number;
  readonly issuedAt: string;
  readonly expiresAt: string;
  readonly description?: string;
  /** The server's instructions as signed; the live server's must be identical. */
  readonly instructions?: string;
  /** Hex SHA-256 of the signed payload; empty for a manifest that was never signed (signing only). */
  readonly digest: string;
  /** The keys that signed it, as verification established; empty for an unsigned source. */
  readonly signers: readonly { readonly keyId: string; readonly publisher: string }[];
  readonly transport: StdioTransport | HttpTransport | HttpApiTransport | SandboxTransport;
  /** sandbox servers: the module's text, read and checked against its pinned SHA-256 at load; what runs is this, never the file read again. */
  readonly moduleSource?: string;
  readonly tools: readonly ManifestTool[];
  /** MCP servers only; empty when the manifest declares none (then the live server must offer none). */
  readonly prompts: readonly ManifestPrompt[];
  readonly credentials: readonly ManifestCredential[];
}
