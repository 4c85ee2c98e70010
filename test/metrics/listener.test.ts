import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { WardenError } from '../../src/errors.ts';
import { startMetricsListener, type MetricsListener } from '../../src/metrics/listener.ts';
import { get, raw } from './scrape.ts';

const BODY = '# HELP mcp_warden_ready 1 when ready.\n# TYPE mcp_warden_ready gauge\nmcp_warden_ready 1\n';
let scrapes = 0;
let listener: MetricsListener;

before(async () => {
  const source = {
    scrape: async () => {
      scrapes++;
      return { contentType: 'text/plain; version=0.0.4; charset=utf-8', text: BODY };
    },
    ready: () => true,
  };
  listener = await startMetricsListener(source, { host: '127.0.0.1', port: 0 }, { allowedHosts: ['Prometheus.Internal'], logger: pino({ level: 'silent' }) });
});

after(async () => {
  await listener?.close();
});

/** The listener still answers. */
async function stillUp(): Promise<void> {
  const answer = await get(listener.url, '/healthz');
  assert.equal(answer.status, 200);
  assert.equal(answer.body, 'ok\n');
}

describe('metrics listener', () => {
  it('serves GET and HEAD of /metrics in the Prometheus text format', async () => {
    const answer = await get(listener.url, '/metrics');
    assert.equal(answer.status, 200);
    assert.equal(answer.body, BODY);
    assert.equal(answer.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(answer.headers['x-content-type-options'], 'nosniff');
    const head = await get(listener.url, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], String(Buffer.byteLength(BODY)));
  });

  it('answers 404 for every other path, and scrapes nothing for it', async () => {
    const before = scrapes;
    for (const path of ['/', '/metric', '/metrics/', '/METRICS', '//metrics', '/healthz/', '/readyz/../metrics', '/%6detrics', '/debug/pprof', 'http://127.0.0.1/metrics', '*']) {
      const answer = await get(listener.url, path);
      assert.equal(answer.status, 404, path);
      assert.equal(answer.body, 'not found\n', path);
    }
    assert.equal(scrapes, before);
    await stillUp();
  });

  it('answers 405 with Allow for any method but GET and HEAD', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT']) {
      for (const path of ['/metrics', '/healthz', '/readyz']) {
        const answer = method === 'CONNECT' ? await viaRaw(`CONNECT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`) : await get(listener.url, path, method);
        assert.equal(answer.status, 405, `${method} ${path}`);
        if (method !== 'CONNECT') assert.equal(answer.headers['allow'], 'GET, HEAD');
      }
    }
    await stillUp();
  });

  it('survives oversized URLs and headers', async () => {
    const long = await get(listener.url, `/metrics?${'a'.repeat(6000)}`);
    assert.equal(long.status, 200, 'a query string is ignored');
    assert.equal((await get(listener.url, `/${'m'.repeat(6000)}`)).status, 404);
    assert.equal((await viaRaw(`GET /${'x'.repeat(64 * 1024)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)).status, 431);
    assert.equal((await viaRaw(`GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`)).status, 431);
    const many = Array.from({ length: 200 }, (_, i) => `X-H${i}: v\r\n`).join('');
    assert.equal((await viaRaw(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${many}\r\n`)).status, 431, 'too many headers');
    await stillUp();
  });

  it('survives garbage', async () => {
    const garbage: (string | Buffer)[] = [
      Buffer.from([0, 1, 2, 3, 255, 254, 13, 10, 13, 10]),
      'NOT HTTP AT ALL\r\n\r\n',
      'GET /metrics HTTP/9.9\r\n\r\n',
      'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n',
      'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n',
      'GET /metrics HTTP/1.1\r\nHo st: x\r\n\r\n',
      'GET\x00/metrics HTTP/1.1\r\n\r\n',
      '\r\n\r\n\r\n',
    ];
    for (const bytes of garbage) {
      const answer = await raw(listener.url, bytes);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      assert.ok(status === 0 || (status >= 400 && status < 500), `${JSON.stringify(String(bytes))} got ${answer.slice(0, 40)}`);
    }
    await stillUp();
  });

  it('refuses a Host that DNS rebinding could send, and two Host headers', async () => {
    assert.equal((await viaRaw('GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n')).status, 403);
    assert.equal((await viaRaw('GET /metrics HTTP/1.1\r\nHost: localhost.evil.example:9464\r\n\r\n')).status, 403);
    assert.equal((await viaRaw('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n')).status, 400);
    for (const host of ['127.0.0.1:9464', 'localhost:9464', 'LOCALHOST', '[::1]:9464', '10.0.0.7', 'prometheus.internal:9464']) {
      assert.equal((await viaRaw(`GET /metrics HTTP/1.1\r\nHost: ${host}\r\n\r\n`)).status, 200, host);
    }
    assert.equal((await viaRaw('GET /metrics HTTP/1.0\r\n\r\n')).status, 200, 'no Host: not a browser');
    await stillUp();
  });

  it('an address it cannot bind is WARDEN_LISTEN_FAILED', async () => {
    const port = Number(new URL(listener.url).port);
    await assert.rejects(
      startMetricsListener({ scrape: async () => ({ contentType: 'text/plain', text: '' }), ready: () => true }, { host: '127.0.0.1', port }, { allowedHosts: [], logger: pino({ level: 'silent' }) }),
      (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_LISTEN_FAILED',
    );
  });

  it('a scrape that fails answers 500 without details, and the next one works', async () => {
    let fail = true;
    const flaky = await startMetricsListener(
      {
        scrape: async () => {
          if (fail) throw new Error('/secret/path exploded');
          return { contentType: 'text/plain; version=0.0.4; charset=utf-8', text: BODY };
        },
        ready: () => {
          throw new Error('cannot tell');
        },
      },
      { host: '127.0.0.1', port: 0 },
      { allowedHosts: [], logger: pino({ level: 'silent' }) },
    );
    try {
      const failed = await get(flaky.url, '/metrics');
      assert.equal(failed.status, 500);
      assert.equal(failed.body, 'error\n');
      fail = false;
      assert.equal((await get(flaky.url, '/metrics')).status, 200);
      assert.equal((await get(flaky.url, '/readyz')).status, 503, 'a readiness check that throws is not ready');
    } finally {
      await flaky.close();
    }
  });
});

/** A raw request's status line. */
async function viaRaw(request: string): Promise<{ status: number; headers: Record<string, string> }> {
  const answer = await raw(listener.url, request);
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? 0), headers: {} };
}
