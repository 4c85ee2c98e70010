import type { ArgumentLimits } from '../guard/argument-limits.ts';
import type { CatalogTool } from '../catalog/build.ts';
import type { Manifest, SandboxLimitSettings } from '../manifest/types.ts';
import type { Grant, Matcher } from '../policy/grants.ts';
import type { PromptGrant, ResourceGrant, ServerRequestGrant } from '../policy/surface-grants.ts';
import type { CatalogPrompt } from '../catalog/prompts.ts';
import type { RateLimit } from '../guard/rate-limits.ts';
import type { RejectionReason } from '../manifest/rejections.ts';
import type { TrustPolicy } from '../manifest/trust.ts';
import type { EgressPolicy } from '../guard/egress-rules.ts';
import type { JSONWebKeySet } from 'jose';

/** A server whose manifest was refused: it does not exist for agents. */
export interface RejectedServer {
  readonly file: string;
  readonly reason: RejectionReason;
  readonly message: string;
}

export interface AgentPolicy {
  readonly name: string;
  /** SHA-256 of the bearer token; absent means the agent may connect over stdio only. */
  readonly tokenSha256?: Buffer;
  /** The value of the access token's subject claim (http.oauth.subjectClaim) that names this agent; unique across agents. */
  readonly oauthSubject?: string;
  readonly grants: readonly Grant[];
  /** Which exposed prompts (<server>__<prompt>) the agent may list and get. */
  readonly promptGrants: readonly PromptGrant[];
  /** Which resources (by server and URI pattern) the agent may list and read. */
  readonly resourceGrants: readonly ResourceGrant[];
  /** Which servers may ask this agent's host for sampling or elicitation during a call. */
  readonly serverRequestGrants: readonly ServerRequestGrant[];
  /** rateLimits.perAgent with this agent's own rateLimit over it. */
  readonly rateLimit: RateLimit;
}

/** Rate and concurrency limits, compiled at load. */
export interface RateLimits {
  /** Calls in flight at once, all agents together. */
  readonly concurrent: number;
  readonly perAgent: RateLimit;
  readonly perTool: RateLimit;
  /** Per-tool overrides; the first whose patterns match a tool replaces perTool for it. */
  readonly tools: readonly { readonly index: number; readonly patterns: readonly string[]; readonly matchers: readonly Matcher[]; readonly limit: RateLimit }[];
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** The metrics and health listener (Prometheus /metrics, /healthz, /readyz). */
export interface MetricsSettings {
  /** The config has a metrics section; serve --metrics turns it on too. */
  readonly enabled: boolean;
  readonly listen: ListenAddress;
  /** Listening where other machines can connect was asked for explicitly. */
  readonly allowNonLoopback: boolean;
  /** Host header names accepted besides IP addresses and localhost (DNS-rebinding defence). */
  readonly allowedHosts: readonly string[];
}

export interface SandboxSettings {
  /** Worker processes for code tools. */
  readonly workers: number;
  readonly warmIsolates: number;
  readonly workerMemoryMb: number;
  /** Each run's limits, unless a code tool asks for others. */
  readonly limits: SandboxLimitSettings;
  /** The most a code tool may ask for. */
  readonly maxLimits: SandboxLimitSettings;
  readonly codeMode: { readonly workers: number; readonly maxCalls: number; readonly concurrency: number };
}

/** The broker as an OAuth 2.1 resource server (http.oauth), checked at load. */
export interface OAuthSettings {
  /** The tokens' iss, compared exactly. */
  readonly issuer: string;
  /** This broker's resource identifier (RFC 8707): the audience its tokens must carry. */
  readonly resource: string;
  /** Where the protected-resource metadata document is, as clients derive it from the resource (RFC 9728 section 3.1). */
  readonly metadataUrl: string;
  readonly authorizationServers: readonly string[];
  /** The identity provider's signing keys: fetched from a URL, or read from a file at load. */
  readonly keys: { readonly url: string } | { readonly file: string; readonly jwks: JSONWebKeySet };
  /** Asymmetric signature algorithms only. */
  readonly algorithms: readonly string[];
  readonly clockSkewSeconds: number;
  /** The claim whose value names the agent (agents.<name>.oauthSubject). */
  readonly subjectClaim: string;
  readonly jwksTimeoutMs: number;
  readonly jwksCooldownMs: number;
  readonly jwksCacheMs: number;
}

/** Where a credential's value comes from. */
export type CredentialSource = { readonly env: string } | { readonly file: string };

export interface WardenConfig {
  readonly file: string;
  /** SHA-256 of the config file's text, as loaded; audited with every accepted change. */
  readonly sha256: string;
  readonly dir: string;
  /** Servers whose signed manifest was accepted, by server key. */
  readonly servers: ReadonlyMap<string, Manifest>;
  /** Servers whose manifest was refused, by server key, with the reason. */
  readonly rejected: ReadonlyMap<string, RejectedServer>;
  readonly trust: TrustPolicy;
  readonly state: { readonly dir: string };
  readonly pinning: { readonly recheckMs: number };
  readonly agents: ReadonlyMap<string, AgentPolicy>;
  readonly catalog: ReadonlyMap<string, CatalogTool>;
  /** Every prompt of an accepted manifest, by exposed name (<server>__<prompt>). */
  readonly prompts: ReadonlyMap<string, CatalogPrompt>;
  readonly audit: {
    readonly file: string;
    /** The checkpoint signing key (PKCS#8 PEM); its public key is `<keyFile>.pub`. */
    readonly keyFile: string;
    readonly rotateBytes: number;
    readonly checkpointEvery: number;
    readonly checkpointMs: number;
    readonly fsyncMs: number;
    /** 0: arguments are recorded by digest only. */
    readonly argumentPreviewBytes: number;
  };
  readonly http: {
    readonly listen: ListenAddress;
    readonly allowedHosts: readonly string[];
    readonly allowedOrigins: readonly string[];
    readonly maxBodyBytes: number;
    /** Agents may also authenticate with an OAuth access token (a JWT) from this identity provider. */
    readonly oauth?: OAuthSettings;
  };
  readonly metrics: MetricsSettings;
  /** Servers that get a per-call identity token, by server key. */
  readonly identityTokens: ReadonlyMap<string, { readonly audience: string; readonly lifetimeSeconds: number }>;
  readonly identity: { readonly keyFile: string; readonly issuer: string };
  /** Streamable HTTP servers' TLS settings from the config (a CA to trust instead of the default set), by server key. */
  readonly serverTls: ReadonlyMap<string, { readonly ca?: string }>;
  /** The roots each MCP server is told when it asks for roots/list, by server key (none when absent). */
  readonly roots: ReadonlyMap<string, readonly { readonly uri: string; readonly name?: string }[]>;
  /** By server key, then credential name. */
  readonly credentials: ReadonlyMap<string, ReadonlyMap<string, CredentialSource>>;
  readonly limits: {
    readonly callTimeoutMs: number;
    readonly maxCallTimeoutMs: number;
    /** How long a server's sampling or elicitation request waits for the host's answer. */
    readonly answerTimeoutMs: number;
    /** Largest server request (sampling, elicitation) and answer, in bytes of JSON. */
    readonly maxServerRequestBytes: number;
    readonly connectTimeoutMs: number;
    readonly breaker: { readonly timeouts: number; readonly cooldownMs: number };
    readonly maxResultBytes: number;
    readonly arguments: ArgumentLimits;
  };
  readonly rateLimits: RateLimits;
  /** Where outbound requests may go; compiled at load. */
  readonly egress: EgressPolicy;
  /** Code tools and code mode: the worker pools and each run's limits. */
  readonly sandbox: SandboxSettings;
  readonly approvals: { readonly waitMs: number; readonly expireMs: number };
  readonly idempotency: { readonly windowMs: number };
  readonly log: { readonly level: string };
  /** Things that are legal but probably wrong (a grant matching no tool). */
  readonly warnings: readonly string[];
}
