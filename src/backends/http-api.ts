import type { CallToolResult } from '@modelcontextprotocol/client';
import type { Dispatcher } from 'undici';
import { writeOrLog, type AuditTrail } from '../audit/trail.ts';
import type { CredentialSource } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import { checkRequest, EgressRefusal, findEgressRefusal, type EgressPolicy, type EgressReason } from '../guard/egress-rules.ts';
import type { Logger } from '../log.ts';
import type { HttpApiTransport, Manifest } from '../manifest/types.ts';
import { BROKER_INFO } from '../version.ts';
import { resolveCredentials, type ResolvedCredential } from './credentials.ts';
import { ExpiryWatch } from './expiry-watch.ts';
import { jsonResult } from './json-result.ts';
import { buildHttpRequest } from './http-request.ts';
import type { BackendState, Quarantine, ToolBackend, ToolCall } from './types.ts';

export interface HttpApiBackendOptions {
  readonly server: string;
  readonly manifest: Manifest;
  readonly credentialSources?: ReadonlyMap<string, CredentialSource>;
  readonly logger: Logger;
  readonly audit: AuditTrail;
  /** The broker's egress-controlled dispatcher and the policy it enforces, as in force now. */
  readonly egress: () => { readonly dispatcher: Dispatcher; readonly policy: EgressPolicy };
  /** How often the manifest's expiry is checked, besides at every call. */
  readonly recheckMs?: number;
  /** Called when the server's tools disappear for agents (its manifest expired). */
  readonly onToolsChanged?: () => void;
}

/** Where the broker's identity token goes, when the server asks for one (the request's _meta for MCP servers). */
export const IDENTITY_HEADER = 'mcp-warden-identity';
const IDENTITY_META_KEY = 'dev.mcp-warden/identity';
/** Longest excerpt of an error response's body shown to the agent. */
const ERROR_EXCERPT_CHARS = 1024;
const USER_AGENT = `${BROKER_INFO.name}/${BROKER_INFO.version}`;
/** Errors that mean no connection was made: the request was certainly not sent. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * A plain HTTP API served as native tools: each call becomes the request its signed
 * template describes, sent through the broker's egress-controlled dispatcher with the
 * credentials injected as headers, and its response becomes the tool result (then
 * sanitised by the pipeline like any other). Refusals are WardenErrors; an egress
 * refusal is also audited, with its reason.
 */
export class HttpApiBackend implements ToolBackend {
  readonly server: string;
  readonly #options: HttpApiBackendOptions;
  readonly #transport: HttpApiTransport;
  /** The signed manifest's expiry, checked on every call. */
  readonly #expiry: ExpiryWatch;
  readonly #credentialValues = new Set<string>();
  #credentials: readonly ResolvedCredential[] | undefined;
  #state: BackendState = 'starting';

  constructor(options: HttpApiBackendOptions) {
    if (options.manifest.transport.type !== 'http-api') throw new WardenError('WARDEN_INTERNAL', `server "${options.server}" is not an HTTP API`);
    this.server = options.server;
    this.#options = options;
    this.#transport = options.manifest.transport;
    this.#expiry = new ExpiryWatch(options);
  }

  get state(): BackendState {
    return this.#state;
  }

  get quarantine(): Quarantine | undefined {
    return this.#expiry.quarantine;
  }

  get credentialValues(): ReadonlySet<string> {
    return this.#credentialValues;
  }

  /** Nothing to connect to: reads the credentials and is ready. A credential missing now is read again at each call. */
  async start(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#expiry.start();
    try {
      this.#loadCredentials();
    } catch (error) {
      this.#state = 'down';
      const reason = error instanceof Error ? error.message : String(error);
      this.#options.logger.warn({ server: this.server, reason }, 'HTTP API credentials are not available');
      writeOrLog(this.#options.audit, { event: 'server.state', server: this.server, state: 'down', reason }, this.#options.logger);
      return;
    }
    this.#state = 'ready';
    writeOrLog(this.#options.audit, { event: 'server.state', server: this.server, state: 'ready', kind: 'http-api', manifest: this.#options.manifest.name, serial: this.#options.manifest.serial }, this.#options.logger);
  }

  async close(): Promise<void> {
    this.#state = 'closed';
    this.#expiry.stop();
  }

  async callTool(call: ToolCall): Promise<CallToolResult> {
    this.#expiry.check();
    if (this.#expiry.quarantine) {
      throw new WardenError('WARDEN_SERVER_QUARANTINED', `server "${this.server}" is quarantined: its signed manifest expired; the publisher must sign a new release`, { server: this.server, reason: 'expired' });
    }
    if (this.#state === 'closed') throw new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" is stopped`, { server: this.server });
    let credentials: readonly ResolvedCredential[];
    try {
      credentials = this.#loadCredentials();
    } catch (error) {
      // Where the value was looked for (a file path, a variable) is for the operator only.
      const where = error instanceof WardenError ? error.message : String(error);
      throw new WardenError('WARDEN_CREDENTIAL_MISSING', `server "${this.server}": a credential it needs is not available, so nothing was sent; the operator can see which in the audit trail`, { server: this.server, reason: where });
    }
    if (this.#state === 'down') this.#state = 'ready';
    const template = this.#options.manifest.httpTemplates.get(call.tool);
    if (!template) throw new WardenError('WARDEN_INTERNAL', `server "${this.server}" has no request template for tool "${call.tool}"`, { server: this.server, tool: call.tool });
    const built = buildHttpRequest(this.#transport.baseUrl, template, call.args);
    // Credentials go only to the API's own origin, never to one a redirect names.
    const home = built.url.origin;
    const secretHeaders: Record<string, string> = Object.create(null);
    for (const { credential, value } of credentials) if (credential.header) secretHeaders[credential.header.toLowerCase()] = `${credential.prefix}${value}`;
    const identity = call.meta?.[IDENTITY_META_KEY];
    if (typeof identity === 'string') secretHeaders[IDENTITY_HEADER] = identity;

    // The dispatcher checks this again; checked here first so that a refused request is
    // refused before onSend, which uses up an approval and marks a write in flight.
    const refused = checkRequest(this.#options.egress().policy, built.url, built.method);
    if (refused) throw this.#egressRefused(refused, call, template.path, 0);

    call.onSend?.();
    const deadline = AbortSignal.timeout(call.timeoutMs);
    const signal = call.signal ? AbortSignal.any([call.signal, deadline]) : deadline;
    let url = built.url;
    let response: Dispatcher.ResponseData | undefined;
    let hop = 0;
    // The policy in force at each hop: a redirect answered after a reload obeys the new rules.
    let { dispatcher, policy } = this.#options.egress();
    try {
      for (; ; hop++) {
        if (hop > 0) {
          ({ dispatcher, policy } = this.#options.egress());
          const again = checkRequest(policy, url, built.method);
          if (again) throw this.#egressRefused(again, call, template.path, hop);
        }
        try {
          response = await dispatcher.request({
            origin: url.origin,
            path: `${url.pathname}${url.search}`,
            method: built.method,
            headers: { 'user-agent': USER_AGENT, accept: 'application/json, text/*;q=0.9', ...built.headers, ...(url.origin === home ? secretHeaders : {}) },
            ...(built.body === undefined ? {} : { body: built.body }),
            signal,
          });
        } catch (error) {
          const refusal = findEgressRefusal(error);
          // Refused before a connection to the first destination: nothing was sent.
          if (refusal) throw this.#egressRefused(refusal, call, template.path, hop, hop === 0);
          throw error;
        }
        const location = headerValue(response.headers, 'location');
        if (response.statusCode < 300 || response.statusCode > 399 || location === undefined || built.method !== 'GET' || policy.maxRedirects === 0) break;
        await response.body.dump().catch(() => undefined);
        if (hop + 1 > policy.maxRedirects) {
          throw this.#egressRefused(new EgressRefusal('too-many-redirects', url.origin, `more than ${policy.maxRedirects} redirects`), call, template.path, hop);
        }
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" answered a redirect to an invalid URL`, { server: this.server });
        }
        url = next;
      }
      return await this.#toResult(response!, url.origin, policy, call, template.path, hop);
    } catch (error) {
      await response?.body.dump().catch(() => undefined);
      if (error instanceof WardenError) throw error;
      throw this.#translate(error, call, deadline, hop, url.origin, template.path);
    }
  }

  async #toResult(response: Dispatcher.ResponseData, origin: string, policy: EgressPolicy, call: ToolCall, templatePath: unknown, hop: number): Promise<CallToolResult> {
    const encoding = headerValue(response.headers, 'content-encoding');
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
      throw new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" answered with content-encoding ${printable(encoding)}, which the broker does not decode`, { server: this.server });
    }
    const declared = Number(headerValue(response.headers, 'content-length'));
    if (Number.isFinite(declared) && declared > policy.maxResponseBytes) {
      throw this.#egressRefused(new EgressRefusal('too-large', origin, `the response is ${declared} bytes; the limit is ${policy.maxResponseBytes}`), call, templatePath, hop);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      // Stop reading at the cap: an endless or huge body costs no more than the cap.
      if (size > policy.maxResponseBytes) {
        response.body.destroy();
        throw this.#egressRefused(new EgressRefusal('too-large', origin, `the response is over ${policy.maxResponseBytes} bytes`), call, templatePath, hop);
      }
      chunks.push(chunk);
    }
    const text = new TextDecoder('utf-8').decode(Buffer.concat(chunks, size));
    const status = response.statusCode;
    const type = (headerValue(response.headers, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (status < 200 || status > 299) {
      const excerpt = text.length > ERROR_EXCERPT_CHARS ? `${text.slice(0, ERROR_EXCERPT_CHARS)}...` : text;
      return { content: [{ type: 'text', text: `HTTP ${status}${status >= 300 && status <= 399 ? ' (redirects are not followed for this request)' : ''}${excerpt === '' ? '' : `: ${excerpt}`}` }], isError: true };
    }
    // No content (204, 205, or an empty body), whatever type it claims: an empty result.
    if (status === 204 || status === 205 || size === 0) return { content: [{ type: 'text', text: '' }] };
    if (type === 'application/json' || type.endsWith('+json')) {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" answered invalid JSON`, { server: this.server, status });
      }
      return jsonResult(value);
    }
    if (type === '' || type.startsWith('text/')) return { content: [{ type: 'text', text }] };
    throw new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" answered ${printable(type)}, which is not text or JSON; binary answers are not passed to agents`, { server: this.server, status });
  }

  /** Audits a refused request and turns it into the agent's refusal. A refusal after a redirect is reported as redirect-denied. */
  #egressRefused(refusal: EgressRefusal, call: ToolCall, templatePath: unknown, hop: number, notSent = false): WardenError {
    const reason: EgressReason = hop > 0 && refusal.reason !== 'too-large' && refusal.reason !== 'too-many-redirects' ? 'redirect-denied' : refusal.reason;
    writeOrLog(
      this.#options.audit,
      {
        event: 'egress.refused',
        correlationId: call.correlationId,
        agent: call.agent,
        server: this.server,
        tool: call.tool,
        reason,
        ...(reason !== refusal.reason ? { cause: refusal.reason } : {}),
        // The template, not the filled path, and no message (a refusal's message names the
        // path it refused): argument values never reach the audit trail.
        method: this.#options.manifest.httpTemplates.get(call.tool)?.method,
        path: pathText(templatePath),
        ...(refusal.origin === '' ? {} : { origin: refusal.origin }),
        ...(refusal.address === undefined ? {} : { address: refusal.address, range: refusal.range }),
        hop,
      },
      this.#options.logger,
    );
    const code = reason === 'too-large' ? 'WARDEN_RESPONSE_TOO_LARGE' : 'WARDEN_EGRESS_DENIED';
    const message =
      reason === 'too-large'
        ? `server "${this.server}": ${refusal.message}; ask for less (a narrower query, fewer items)`
        : hop > 0
          ? `server "${this.server}": the API answered with a redirect the broker's egress policy refuses (${reason}${reason === refusal.reason ? '' : `: ${refusal.reason}`}); it was not followed`
          : `server "${this.server}": the broker's egress policy refuses this request (${reason}); it was not sent`;
    return new WardenError(code, message, { server: this.server, egress: reason, ...(reason !== refusal.reason ? { cause: refusal.reason } : {}), ...(notSent ? { notSent } : {}) });
  }

  #translate(error: unknown, call: ToolCall, deadline: AbortSignal, hop: number, origin: string, templatePath: unknown): WardenError {
    if (call.signal?.aborted) return new WardenError('WARDEN_CALL_CANCELLED', 'the agent cancelled the call', { server: this.server });
    if (deadline.aborted) return new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', `server "${this.server}" did not answer within ${call.timeoutMs} ms`, { server: this.server });
    const code = (error as { code?: unknown }).code;
    if (code === 'UND_ERR_HEADERS_OVERFLOW') {
      return this.#egressRefused(new EgressRefusal('too-large', origin, `the response headers are over ${this.#options.egress().policy.maxHeaderBytes} bytes`), call, templatePath, hop);
    }
    const network = typeof code === 'string' ? code : 'error';
    if (CONNECT_ERRORS.has(network)) {
      // No connection to the first destination: nothing was sent, so a write may be retried.
      return new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" cannot be reached (${network}); retry later`, { server: this.server, network, ...(hop === 0 ? { notSent: true } : {}) });
    }
    if (['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE'].includes(network)) {
      return new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" dropped the connection (${network}); the request may have been received`, { server: this.server, network });
    }
    return new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" failed the call (${printable(network)})`, { server: this.server, network });
  }

  #loadCredentials(): readonly ResolvedCredential[] {
    if (this.#credentials) return this.#credentials;
    const credentials = resolveCredentials(this.server, this.#options.manifest.credentials, this.#options.credentialSources);
    for (const { value } of credentials) this.#credentialValues.add(value);
    this.#credentials = credentials;
    return credentials;
  }
}

function headerValue(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function pathText(template: unknown): string | undefined {
  if (!Array.isArray(template)) return undefined;
  return template.map((part: string | { arg: string }) => (typeof part === 'string' ? part : `{${part.arg}}`)).join('');
}

function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, 200);
}
