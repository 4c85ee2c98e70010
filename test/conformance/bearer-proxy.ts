// A loopback HTTP proxy that adds one header, Authorization: Bearer <token>, to every request
// and forwards everything else unchanged: method, target, every other header as sent (Host
// and Origin included, so the broker's DNS-rebinding checks see what the client sent), the
// body as a stream, and the response as a stream (SSE stays SSE, flushed as it comes). It
// exists because the conformance suite has no option to send a token.
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not to the message. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

export interface BearerProxy {
  readonly port: number;
  /** Where requests go; requests before it is set get 503. */
  target: { host: string; port: number } | undefined;
  close(): Promise<void>;
}

/** Headers as sent (raw, so duplicates stay duplicates), minus hop-by-hop ones and any Authorization. */
function forwardedHeaders(raw: readonly string[], drop: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (!drop(name.toLowerCase())) out.push(name, raw[i + 1]!);
  }
  return out;
}

export async function startBearerProxy(token: string): Promise<BearerProxy> {
  const proxy: BearerProxy = { port: 0, target: undefined, close: async () => undefined };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const target = proxy.target;
    if (!target) return void res.writeHead(503).end();
    const headers = forwardedHeaders(req.rawHeaders, (name) => HOP_BY_HOP.has(name) || name === 'authorization');
    headers.push('Authorization', `Bearer ${token}`);
    const upstream = request({ host: target.host, port: target.port, method: req.method, path: req.url, headers, setHost: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage ?? '', forwardedHeaders(answer.rawHeaders, (name) => HOP_BY_HOP.has(name)));
      res.flushHeaders();
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    });
    // The client going away ends the upstream request too (the broker then cancels the call).
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(proxy, {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
