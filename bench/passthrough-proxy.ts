// A bare pass-through MCP proxy built from the same SDK as mcp-warden, with no checks at
// all: the baseline mcp-warden is compared with. It serves stdio and forwards tools/list
// and tools/call verbatim to one downstream stdio server (by default the example notes
// server), reached the way mcp-warden reaches it with manifests/notes.manifest.yaml
// (`era: legacy`).
//
//   node bench/passthrough-proxy.ts [-- COMMAND [ARGS...]]
//
// On stderr it prints one line, `passthrough: downstream era <legacy|modern>`, once the
// downstream is connected. It exits when its stdin closes or its downstream goes away.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { Server } from '@modelcontextprotocol/server';
import { serveStdio } from '@modelcontextprotocol/server/stdio';

const separator = process.argv.indexOf('--');
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [command, ...args] = separator === -1 ? [process.execPath, join(root, 'examples/notes-server/server.ts')] : process.argv.slice(separator + 1);
if (!command) {
  process.stderr.write('usage: node bench/passthrough-proxy.ts [-- COMMAND [ARGS...]]\n');
  process.exit(2);
}

// The same negotiation mcp-warden uses downstream for the notes manifest (era: legacy).
const downstream = new Client({ name: 'passthrough', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
await downstream.connect(new StdioClientTransport({ command, args, stderr: 'ignore' }));
let stopping = false;
downstream.onclose = () => {
  if (stopping) return;
  process.stderr.write('passthrough: downstream closed\n');
  process.exit(1);
};
// Like mcp-warden: when the client closes our stdin, close the downstream and exit.
process.stdin.on('end', () => {
  stopping = true;
  void downstream.close().finally(() => process.exit(0));
});
process.stderr.write(`passthrough: downstream era ${downstream.getProtocolEra() ?? 'unknown'}\n`);

serveStdio(() => {
  const server = new Server({ name: 'passthrough', version: '1.0.0' }, { capabilities: { tools: {} } });
  server.setRequestHandler('tools/list', async (request) => downstream.listTools(request.params));
  // Cancellation follows the caller's request downstream, as it does through mcp-warden.
  server.setRequestHandler('tools/call', async (request, ctx) => (await downstream.callTool(request.params, { signal: ctx.mcpReq.signal })) as CallToolResult);
  return server;
});
