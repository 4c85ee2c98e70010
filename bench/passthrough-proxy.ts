// A bare pass-through MCP proxy built from the same SDK, with no checks at all: the
// baseline mcp-warden is compared with. It serves stdio and forwards tools/list and
// tools/call verbatim to one downstream stdio server.
//
//   node bench/passthrough-proxy.ts -- COMMAND [ARGS...]
import { Client, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { Server } from '@modelcontextprotocol/server';
import { serveStdio } from '@modelcontextprotocol/server/stdio';

const separator = process.argv.indexOf('--');
const [command, ...args] = separator === -1 ? [] : process.argv.slice(separator + 1);
if (!command) {
  process.stderr.write('usage: node bench/passthrough-proxy.ts -- COMMAND [ARGS...]\n');
  process.exit(2);
}

// Same negotiation as mcp-warden uses for an `era: auto` manifest.
const downstream = new Client({ name: 'passthrough', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
await downstream.connect(new StdioClientTransport({ command, args, stderr: 'ignore' }));

serveStdio(() => {
  const server = new Server({ name: 'passthrough', version: '1.0.0' }, { capabilities: { tools: {} } });
  server.setRequestHandler('tools/list', async (request) => downstream.listTools(request.params));
  server.setRequestHandler('tools/call', async (request) => (await downstream.callTool(request.params)) as CallToolResult);
  return server;
});
