// npm start: serve the bundled demo workspace over Streamable HTTP on 127.0.0.1:7070, with
// the example tickets API (native HTTP tools) on 127.0.0.1:7071.
// The workspace is exactly what `mcp-warden init demo-workspace` writes; it is created on
// first start and reused after that (delete the folder to start afresh).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_TICKETS_API_URL, writeWorkspace } from '../src/cli/init.ts';
import { startTicketsApi, type TicketsApi } from '../examples/tickets-api/server.ts';
import { main, reportError } from '../src/cli/main.ts';
import { packageRoot } from '../src/paths.ts';

const workspace = join(packageRoot(), 'demo-workspace');
const config = join(workspace, 'warden.yaml');
try {
  if (!existsSync(config)) {
    writeWorkspace(workspace, false);
    process.stderr.write(`mcp-warden: wrote the demo workspace to ${workspace}\n`);
  } else if (!existsSync(join(workspace, 'keys', 'demo-publisher.pub'))) {
    // Written by a version without signed manifests: every manifest in it would be refused.
    process.stderr.write(`mcp-warden: ${workspace} predates signed manifests; delete it and run npm start again to write a new one\n`);
    process.exit(1);
  }
} catch (error) {
  process.exit(reportError(error));
}
// The tickets API the workspace's tickets__* tools call (a workspace written before it
// existed has no key for it: those tools then answer that the API cannot be reached).
let tickets: TicketsApi | undefined;
const ticketsKey = join(workspace, 'secrets', 'tickets-api-key');
if (existsSync(ticketsKey)) {
  try {
    tickets = await startTicketsApi({ keyFile: ticketsKey, port: Number(new URL(DEFAULT_TICKETS_API_URL).port) });
    process.stderr.write(`mcp-warden: the example tickets API listens on ${tickets.url}\n`);
  } catch (error) {
    process.stderr.write(`mcp-warden: the example tickets API could not start (${(error as NodeJS.ErrnoException).code ?? String(error)}); the tickets tools will be unavailable\n`);
  }
}
process.stderr.write(
  [
    `mcp-warden: config ${config}`,
    `mcp-warden: agent "demo" authenticates with: Authorization: Bearer $(cat ${join(workspace, 'demo-agent.token')})`,
    'mcp-warden: stop with Ctrl-C. In another terminal, `npm run demo` runs a scripted agent.',
    '',
  ].join('\n'),
);
process.exitCode = await main(['serve', '--config', config, '--http', ...process.argv.slice(2)]);
await tickets?.close();
