import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { writeWorkspace } from '../../src/cli/init.ts';
import { loadConfig } from '../../src/config/load.ts';
import { startTicketsApi, type TicketsApi } from '../../examples/tickets-api/server.ts';
import { refusalCode, tempDir, textOf } from '../helpers.ts';

// The workspace init writes, with the example tickets API: the native HTTP tools work as
// the demo shows them, and the API's two deliberate misbehaviours are contained.

const { dir, cleanup } = tempDir();
let api: TicketsApi;
let broker: Broker;
let auditFile: string;

before(async () => {
  api = await startTicketsApi({ keyFile: join(dir, 'ws/secrets/tickets-api-key') });
  const workspace = writeWorkspace(join(dir, 'ws'), false, { ticketsApiUrl: api.url });
  const config = loadConfig(workspace.config);
  assert.deepEqual(config.warnings, []);
  auditFile = config.audit.file;
  broker = new Broker(config, { logger: pino({ level: 'silent' }) });
  await broker.start();
});

after(async () => {
  await broker?.close();
  await api?.close();
  cleanup();
});

describe('the tickets example (native HTTP tools)', () => {
  it('lists, reads and creates tickets with the API key injected, which the agent never sees', async () => {
    const key = readFileSync(join(dir, 'ws/secrets/tickets-api-key'), 'utf8').trim();
    const listed = await broker.callTool('demo', 'tickets__list_tickets', { status: 'open' });
    assert.equal(refusalCode(listed), undefined, textOf(listed));
    assert.deepEqual(listed.structuredContent, { tickets: [{ id: 1, title: 'VPN drops every hour', status: 'open' }] });

    const ticket = await broker.callTool('demo', 'tickets__get_ticket', { id: 1 });
    // outputFields keep only what the manifest allows: the internal fields (assignee, the key) are gone.
    assert.deepEqual(Object.keys(ticket.structuredContent ?? {}).sort(), ['body', 'id', 'status', 'title']);
    assert.ok(!JSON.stringify(ticket).includes(key));
    assert.ok(!JSON.stringify(ticket).includes('example.internal'));

    const created = await broker.callTool('demo', 'tickets__create_ticket', { title: 'Printer jammed' });
    assert.deepEqual(created.structuredContent, { id: 3, status: 'open' });
  });

  it('the redirect to the cloud metadata address is refused, and audited with its reason', async () => {
    const result = await broker.callTool('demo', 'tickets__get_attachment', { id: 1 });
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    const records = readFileSync(auditFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const refusal = records.find((record) => record['event'] === 'egress.refused');
    assert.equal(refusal?.['reason'], 'redirect-denied');
    assert.equal(refusal?.['cause'], 'not-allowlisted');
    assert.equal(refusal?.['origin'], 'http://169.254.169.254');
    assert.equal(refusal?.['path'], '/tickets/{id}/attachment');
    // The broker keeps serving.
    assert.equal(refusalCode(await broker.callTool('demo', 'tickets__list_tickets', {})), undefined);
  });
});
