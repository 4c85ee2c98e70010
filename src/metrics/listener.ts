import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenAddress } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import type { Logger } from '../log.ts';

/** What the listener answers from. */
export interface MetricsSource {
  scrape(): Promise<{ readonly contentType: string; readonly text: string }>;
  /** The broker can serve calls now. */
  ready(): boolean;
}

export interface MetricsListener {
  /** e.g. http://127.0.0.1:9464 */
  readonly url: string;
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export const METRICS_PATH = '/metrics';
export const HEALTH_PATH = '/healthz';
export const READY_PATH = '/readyz';

/** Request line and headers together, bytes; a longer request gets 431 from Node. */
const MAX_HEADER_BYTES = 8 * 1024; // 8 KiB
/** Scrapers and probes are few; more connections than this wait in the kernel's queue. */
const MAX_CONNECTIONS = 64;

/**
 * The metrics and health listener, apart from the agents' one: GET or HEAD of /metrics
 * (Prometheus text format), /healthz (the process serves) and /readyz (the broker can
 * serve calls). Anything else is 404 or 405, and nothing a request contains can stop it.
 * Health answers are one word: no version, config, name or reason. The Host header
 * must be an IP address, localhost or a configured name, so a web page cannot read the
 * metrics through DNS rebinding.
 */
export async function startMetricsListener(source: MetricsSource, listen: ListenAddress, options: { readonly allowedHosts: readonly string[]; readonly logger: Logger }): Promise<MetricsListener> {
  const { logger } = options;
  const allowedHosts = new Set(['localhost', ...options.allowedHosts.map((host) => host.trim().toLowerCase())]);

  const server: Server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      logger.error({ err: error instanceof Error ? error.message : String(error) }, 'metrics request failed');
      if (!res.headersSent) send(req, res, 500, 'error\n');
      else res.destroy();
    });
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // Compared as text, never parsed: a hostile target cannot throw.
    const path = (req.url ?? '').split('?', 1)[0];
    if (path !== METRICS_PATH && path !== HEALTH_PATH && path !== READY_PATH) return send(req, res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(req, res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    if (countHeader(req.rawHeaders, 'host') > 1) return send(req, res, 400, 'bad request\n');
    if (!hostAllowed(req.headers.host, allowedHosts)) return send(req, res, 403, 'forbidden\n');
    if (path === HEALTH_PATH) return send(req, res, 200, 'ok\n');
    if (path === READY_PATH) return isReady(source) ? send(req, res, 200, 'ok\n') : send(req, res, 503, 'not ready\n');
    const { contentType, text } = await source.scrape();
    send(req, res, 200, text, { 'Content-Type': contentType });
  };

  server.maxHeadersCount = 50; // more is 431, like an oversized header
  // CONNECT never reaches the request handler; it is answered like any other method.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    answerAndClose(socket, '405 Method Not Allowed\r\nAllow: GET, HEAD');
  });
  server.maxConnections = MAX_CONNECTIONS;
  // Node's own answer to a malformed request, without its reason phrase details.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    answerAndClose(socket, error.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(new WardenError('WARDEN_LISTEN_FAILED', `cannot listen for metrics on ${listen.host}:${listen.port}: ${error.code ?? error.message}`, { listen })));
    server.listen(listen.port, listen.host, () => resolve());
  });
  server.on('error', (error) => logger.error({ err: error.message }, 'metrics listener error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    address,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function send(req: IncomingMessage, res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** A bare answer on a socket the HTTP parser gave up on, then the socket is closed. */
function answerAndClose(socket: Duplex, status: string): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
}

function isReady(source: MetricsSource): boolean {
  try {
    return source.ready();
  } catch {
    return false;
  }
}

/**
 * DNS rebinding (a page on a name the attacker controls, resolved to this address) always
 * sends that name as Host. An IP address, localhost or a configured name cannot be such a
 * name; no Host at all (HTTP/1.0) is not a browser.
 */
function hostAllowed(header: string | undefined, allowed: ReadonlySet<string>): boolean {
  if (header === undefined) return true;
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]{1,253}))(?::\d{1,5})?$/.exec(header);
  if (!match) return false;
  if (match[1] !== undefined) return isIP(match[1]) === 6;
  const name = match[2]!.toLowerCase();
  return isIP(name) === 4 || allowed.has(name);
}

function countHeader(rawHeaders: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count++;
  return count;
}
