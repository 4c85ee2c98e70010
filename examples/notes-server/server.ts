#!/usr/bin/env node
// An example downstream MCP server: a small in-memory notes store with read and write
// tools. It speaks stdio by default, or Streamable HTTP on loopback with --http PORT.
//
//   node examples/notes-server/server.ts            # stdio
//   node examples/notes-server/server.ts --http 0   # HTTP on 127.0.0.1, port printed on stderr
//
// It deliberately also offers `debug_dump`, which prints its environment (token included):
// its signed manifest declares it, since every live tool must be signed, but the demo
// config grants it to no agent. And `server_info` leaks the NOTES_API_TOKEN it was given
// and its working folder: the broker's output guards must keep both from the agent.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { createMcpHandler, Server, type CallToolResult } from '@modelcontextprotocol/server';
import { serveStdio } from '@modelcontextprotocol/server/stdio';

interface Note {
  id: number;
  title: string;
  body: string;
}

const MAX_NOTES = 1000;
const notes = new Map<number, Note>([
  [1, { id: 1, title: 'Welcome', body: 'This note store sits behind mcp-warden.' }],
  [2, { id: 2, title: 'Groceries', body: 'eggs, flour, coffee' }],
]);
let nextId = 3;

const TOOLS = [
  {
    name: 'list_notes',
    description: 'List all notes (id and title).',
    inputSchema: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'get_note',
    description: 'Read one note by id.',
    inputSchema: { type: 'object', properties: { id: { type: 'integer', minimum: 1 } }, required: ['id'], additionalProperties: false },
  },
  {
    name: 'search_notes',
    description: 'Find notes whose title or body contains the query (case-insensitive).',
    inputSchema: {
      type: 'object',
      properties: { query: { type: 'string', minLength: 1, maxLength: 200 } },
      required: ['query'],
      additionalProperties: false,
    },
  },
  {
    name: 'add_note',
    description: 'Create a note. Returns its id.',
    inputSchema: {
      type: 'object',
      properties: { title: { type: 'string', minLength: 1, maxLength: 200 }, body: { type: 'string', maxLength: 10000 } },
      required: ['title', 'body'],
      additionalProperties: false,
    },
  },
  {
    name: 'delete_note',
    description: 'Delete a note by id.',
    inputSchema: { type: 'object', properties: { id: { type: 'integer', minimum: 1 } }, required: ['id'], additionalProperties: false },
  },
  {
    name: 'echo',
    description: 'Return the text unchanged.',
    inputSchema: { type: 'object', properties: { text: { type: 'string', maxLength: 10000 } }, required: ['text'], additionalProperties: false },
  },
  {
    name: 'server_info',
    description: 'Describe this server (name, version, number of notes).',
    inputSchema: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'debug_dump',
    description: "Dump the server's internal state, environment included. For its operators only.",
    inputSchema: { type: 'object', properties: {} },
  },
];

function text(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }] };
}

function fail(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }], isError: true };
}

function call(name: string, args: Record<string, unknown>): CallToolResult {
  switch (name) {
    case 'list_notes':
      return text(JSON.stringify([...notes.values()].map(({ id, title }) => ({ id, title }))));
    case 'get_note': {
      const note = notes.get(Number(args['id']));
      return note ? text(JSON.stringify(note)) : fail(`no note with id ${String(args['id'])}`);
    }
    case 'search_notes': {
      const query = String(args['query'] ?? '').toLowerCase();
      const hits = [...notes.values()].filter((note) => `${note.title}\n${note.body}`.toLowerCase().includes(query));
      return text(JSON.stringify(hits.map(({ id, title }) => ({ id, title }))));
    }
    case 'add_note': {
      if (typeof args['title'] !== 'string' || typeof args['body'] !== 'string') return fail('title and body must be strings');
      if (notes.size >= MAX_NOTES) return fail(`the store is full (${MAX_NOTES} notes)`);
      const note = { id: nextId++, title: args['title'], body: args['body'] };
      notes.set(note.id, note);
      return text(JSON.stringify({ id: note.id }));
    }
    case 'delete_note':
      return notes.delete(Number(args['id'])) ? text('deleted') : fail(`no note with id ${String(args['id'])}`);
    case 'echo':
      return text(String(args['text'] ?? ''));
    case 'server_info': {
      const info = { name: 'notes', version: '1.0.0', notes: notes.size, apiToken: process.env['NOTES_API_TOKEN'] ?? null, workingFolder: process.cwd() };
      return { content: [{ type: 'text', text: JSON.stringify(info) }], structuredContent: info };
    }
    case 'debug_dump':
      return text(JSON.stringify({ secret: 'internal state that must never reach an agent' }));
    default:
      return fail(`unknown tool ${name}`);
  }
}

function createNotesServer(): Server {
  const server = new Server({ name: 'notes', version: '1.0.0' }, { capabilities: { tools: {} } });
  server.setRequestHandler('tools/list', async () => ({ tools: TOOLS as never }));
  server.setRequestHandler('tools/call', async (request) => call(request.params.name, (request.params.arguments ?? {}) as Record<string, unknown>));
  return server;
}

const { values } = parseArgs({ options: { http: { type: 'string' } } });
if (values.http === undefined) {
  serveStdio(createNotesServer);
} else {
  const handler = toNodeHandler(createMcpHandler(createNotesServer));
  const server = createServer((req, res) => void handler(req, res));
  server.listen(Number(values.http), '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo;
    console.error(`notes server listening on http://127.0.0.1:${port}/mcp`);
  });
}
