#!/usr/bin/env node
// A downstream MCP server that offers every tool, resource, prompt and behaviour the server
// scenarios of the official conformance suite (@modelcontextprotocol/conformance) ask for:
// the same names, contents and side effects. It speaks stdio by default, so it can sit
// behind the broker like any downstream server, or Streamable HTTP on loopback with
// --http PORT, so the suite can be pointed at it directly.
//
//   node examples/conformance-server/server.ts            # stdio
//   node examples/conformance-server/server.ts --http 0   # HTTP on 127.0.0.1, URL printed on stderr
//   npx @modelcontextprotocol/conformance server --url http://127.0.0.1:PORT/mcp   # the suite, against --http
//
// Sampling and elicitation are written once, as input_required results: a 2026-07-28
// client answers them in-band and retries, and for a 2025-era connection the SDK turns
// them into real sampling/createMessage and elicitation/create requests to the client.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { localhostHostValidation, localhostOriginValidation, NodeStreamableHTTPServerTransport, toNodeHandler } from '@modelcontextprotocol/node';
import {
  classifyInboundRequest,
  createMcpHandler,
  inputRequired,
  inputResponse,
  isInitializeRequest,
  ProtocolError,
  ProtocolErrorCode,
  ResourceNotFoundError,
  Server,
  type CallToolResult,
  type ElicitInputParams,
  type EventStore,
  type GetPromptResult,
  type InputRequiredResult,
  type JSONRPCMessage,
  type ReadResourceResult,
  type ServerContext,
} from '@modelcontextprotocol/server';
import { serveStdio } from '@modelcontextprotocol/server/stdio';
import { DEFAULTS_FORM, ENUMS_FORM, USER_FORM } from './forms.ts';

// A 1x1 red PNG and a minimal WAV: the scenarios only check that data and mimeType are there.
const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV_BASE64 = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';
const LOGGER = 'conformance-server';
const WATCHED_URI = 'test://watched-resource';
const TEMPLATE_URI = 'test://template/{id}/data';
const TEMPLATE_PATTERN = /^test:\/\/template\/([^/]+)\/data$/;

const NO_ARGUMENTS = { type: 'object', properties: {} } as const;

const TOOLS = [
  { name: 'test_simple_text', description: 'Returns one text block.', inputSchema: NO_ARGUMENTS },
  { name: 'test_image_content', description: 'Returns one PNG image block.', inputSchema: NO_ARGUMENTS },
  { name: 'test_audio_content', description: 'Returns one WAV audio block.', inputSchema: NO_ARGUMENTS },
  { name: 'test_embedded_resource', description: 'Returns one embedded text resource.', inputSchema: NO_ARGUMENTS },
  { name: 'test_multiple_content_types', description: 'Returns text, image and embedded resource blocks together.', inputSchema: NO_ARGUMENTS },
  { name: 'test_tool_with_logging', description: 'Sends three info log messages, 50 ms apart, while it runs.', inputSchema: NO_ARGUMENTS },
  { name: 'test_tool_with_progress', description: 'Reports progress 0, 50 and 100 of 100, 50 ms apart, when the call carries a progress token.', inputSchema: NO_ARGUMENTS },
  { name: 'test_error_handling', description: 'Always fails with an isError result.', inputSchema: NO_ARGUMENTS },
  {
    name: 'test_sampling',
    description: 'Asks the client to sample an LLM completion for the prompt and returns the answer.',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } }, required: ['prompt'] },
  },
  {
    name: 'test_elicitation',
    description: 'Asks the user, through the client, for a username and an e-mail address.',
    inputSchema: { type: 'object', properties: { message: { type: 'string', description: 'The message to show the user' } }, required: ['message'] },
  },
  { name: 'test_elicitation_sep1034_defaults', description: 'Elicits a form whose string, integer, number, enum and boolean fields all have defaults (SEP-1034).', inputSchema: NO_ARGUMENTS },
  { name: 'test_elicitation_sep1330_enums', description: 'Elicits a form with every enum shape: untitled, titled, legacy enumNames, and both multi-selects (SEP-1330).', inputSchema: NO_ARGUMENTS },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features ($schema, $defs, additionalProperties) in its input schema (SEP-1613).',
    // Advertised verbatim: the scenario checks that these keywords survive tools/list.
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
  },
  { name: 'test_reconnection', description: 'Over Streamable HTTP, closes the response stream mid-call so the client must resume it (SEP-1699).', inputSchema: NO_ARGUMENTS },
  // Not asked for by the suite: reports progress and a log message after the user has answered.
  {
    name: 'test_elicitation_then_report',
    description: 'Asks the user to confirm, then reports progress (with a progress token) and one info log message, and returns the answer.',
    inputSchema: NO_ARGUMENTS,
  },
  // Not asked for by the suite: gives a subscription something to report.
  { name: 'test_update_watched_resource', description: `Changes ${WATCHED_URI} and notifies the connections subscribed to it.`, inputSchema: NO_ARGUMENTS },
];

const RESOURCES = [
  { uri: 'test://static-text', name: 'static-text', title: 'Static Text Resource', description: 'A static text resource.', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', title: 'Static Binary Resource', description: 'A static binary resource (a PNG image).', mimeType: 'image/png' },
  { uri: WATCHED_URI, name: 'watched-resource', title: 'Watched Resource', description: 'Changes when test_update_watched_resource runs; subscribe to hear about it.', mimeType: 'text/plain' },
];

const RESOURCE_TEMPLATES = [
  { uriTemplate: TEMPLATE_URI, name: 'template', title: 'Resource Template', description: 'JSON data for any id, substituted into the content.', mimeType: 'application/json' },
];

const PROMPTS = [
  { name: 'test_simple_prompt', title: 'Simple Test Prompt', description: 'A prompt without arguments.' },
  {
    name: 'test_prompt_with_arguments',
    title: 'Prompt With Arguments',
    description: 'A prompt with two required arguments, substituted into its text.',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ],
  },
  {
    name: 'test_prompt_with_embedded_resource',
    title: 'Prompt With Embedded Resource',
    description: 'A prompt that embeds a resource with the given URI.',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
  },
  { name: 'test_prompt_with_image', title: 'Prompt With Image', description: 'A prompt with image content.' },
];

// What completion/complete offers, by argument; filtered by the typed prefix.
const COMPLETIONS: Record<string, readonly string[]> = {
  'ref/prompt:test_prompt_with_arguments:arg1': ['paris', 'park', 'party', 'test', 'testing'],
  'ref/prompt:test_prompt_with_arguments:arg2': ['alpha', 'beta', 'gamma'],
  [`ref/resource:${TEMPLATE_URI}:id`]: ['1', '2', '3', '123'],
};

/** The connections that subscribed to something (a stdio process, an HTTP session), and to what. */
const subscriptions = new Map<Server, Set<string>>();
let watchedVersion = 1;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function text(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }] };
}

function fail(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }], isError: true };
}

/** Elicits once under `key`; on re-entry reports what the user did. */
function elicit(ctx: ServerContext, key: string, params: ElicitInputParams, label: string): CallToolResult | InputRequiredResult {
  const answer = inputResponse(ctx.mcpReq.inputResponses, key);
  if (answer.kind === 'missing') return inputRequired({ inputRequests: { [key]: inputRequired.elicit(params) } });
  if (answer.kind !== 'elicit') return fail(`expected an elicitation answer, got ${answer.kind}`);
  return text(`${label}: action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`);
}

async function callTool(name: string, args: Record<string, unknown>, ctx: ServerContext, server: Server): Promise<CallToolResult | InputRequiredResult> {
  switch (name) {
    case 'test_simple_text':
      return text('This is a simple text response for testing.');
    case 'test_image_content':
      return { content: [{ type: 'image', data: PNG_BASE64, mimeType: 'image/png' }] };
    case 'test_audio_content':
      return { content: [{ type: 'audio', data: WAV_BASE64, mimeType: 'audio/wav' }] };
    case 'test_embedded_resource':
      return { content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }] };
    case 'test_multiple_content_types':
      return {
        content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: PNG_BASE64, mimeType: 'image/png' },
          { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: JSON.stringify({ test: 'data', value: 123 }) } },
        ],
      };
    case 'test_tool_with_logging': {
      // ctx.mcpReq.log honours the level the client set (logging/setLevel, or _meta on 2026-07-28).
      const messages = ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
      for (const [index, message] of messages.entries()) {
        if (index > 0) await sleep(50);
        await ctx.mcpReq.log('info', message, LOGGER);
      }
      return text('Tool with logging executed successfully');
    }
    case 'test_tool_with_progress': {
      // Progress only under the caller's own token; without one the call just takes as long.
      const progressToken = ctx.mcpReq._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` } });
        }
        if (progress < 100) await sleep(50);
      }
      return text(`Progress reported under token ${JSON.stringify(progressToken ?? null)}`);
    }
    case 'test_elicitation_then_report': {
      const answer = inputResponse(ctx.mcpReq.inputResponses, 'confirm');
      if (answer.kind === 'missing') {
        return inputRequired({ inputRequests: { confirm: inputRequired.elicit({ message: 'Go on?', requestedSchema: { type: 'object', properties: { go: { type: 'boolean' } }, required: ['go'] } }) } });
      }
      if (answer.kind !== 'elicit') return fail(`expected an elicitation answer, got ${answer.kind}`);
      const progressToken = ctx.mcpReq._meta?.progressToken;
      if (progressToken !== undefined) await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, progress: 1, total: 2 } });
      await ctx.mcpReq.log('info', 'Reported after the answer', LOGGER);
      if (progressToken !== undefined) await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, progress: 2, total: 2 } });
      return text(`Reported after: action=${answer.action}`);
    }
    case 'test_error_handling':
      return fail('This tool intentionally returns an error for testing');
    case 'test_sampling': {
      const prompt = args['prompt'];
      if (typeof prompt !== 'string') return fail('prompt must be a string');
      const answer = inputResponse(ctx.mcpReq.inputResponses, 'completion');
      if (answer.kind === 'missing') {
        return inputRequired({
          inputRequests: { completion: inputRequired.createMessage({ messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens: 100 }) },
        });
      }
      if (answer.kind !== 'sampling') return fail(`expected a sampling answer, got ${answer.kind}`);
      const blocks = Array.isArray(answer.result.content) ? answer.result.content : [answer.result.content];
      const reply = blocks.map((block) => (block.type === 'text' ? block.text : `[${block.type}]`)).join('\n');
      return text(`LLM response: ${reply}`);
    }
    case 'test_elicitation': {
      const message = args['message'];
      if (typeof message !== 'string') return fail('message must be a string');
      return elicit(ctx, 'user', {
        message,
        requestedSchema: USER_FORM,
      }, 'User response');
    }
    case 'test_elicitation_sep1034_defaults':
      return elicit(ctx, 'defaults', {
        message: 'Please review and update the form fields with defaults',
        requestedSchema: DEFAULTS_FORM,
      }, 'Elicitation completed');
    case 'test_elicitation_sep1330_enums':
      return elicit(ctx, 'enums', {
        message: 'Please select options from the enum fields',
        requestedSchema: ENUMS_FORM,
      }, 'Elicitation completed');
    case 'json_schema_2020_12_tool':
      return text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`);
    case 'test_reconnection':
      // Only a resumable HTTP stream can be closed; on stdio the call simply completes.
      ctx.http?.closeSSE?.();
      await sleep(100);
      return text('Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.');
    case 'test_update_watched_resource': {
      watchedVersion += 1;
      let notified = 0;
      for (const [peer, uris] of subscriptions) {
        if (!uris.has(WATCHED_URI)) continue;
        notified += 1;
        await peer.sendResourceUpdated({ uri: WATCHED_URI }).catch(() => undefined);
      }
      // A 2026-07-28 client subscribes with subscriptions/listen, which the SDK's entry
      // answers: the update goes out through this instance, and the entry delivers it to the
      // listen streams whose filter names the URI.
      if (ctx.mcpReq.envelope !== undefined) await server.sendResourceUpdated({ uri: WATCHED_URI }).catch(() => undefined);
      return text(`${WATCHED_URI} is now at version ${watchedVersion}; ${notified} subscribed connection(s) notified`);
    }
    default:
      return fail(`unknown tool ${name}`);
  }
}

function readResource(uri: string): ReadResourceResult {
  switch (uri) {
    case 'test://static-text':
      return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
    case 'test://static-binary':
      return { contents: [{ uri, mimeType: 'image/png', blob: PNG_BASE64 }] };
    case WATCHED_URI:
      return { contents: [{ uri, mimeType: 'text/plain', text: `Watched resource content, version ${watchedVersion}` }] };
  }
  const id = TEMPLATE_PATTERN.exec(uri)?.[1];
  if (id !== undefined) {
    return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
  }
  throw new ResourceNotFoundError(uri);
}

function getPrompt(name: string, args: Record<string, string>): GetPromptResult {
  const required = (key: string): string => {
    const value = args[key];
    if (value === undefined) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `prompt ${name} needs the argument ${key}`);
    return value;
  };
  switch (name) {
    case 'test_simple_prompt':
      return { messages: [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } }] };
    case 'test_prompt_with_arguments':
      return { messages: [{ role: 'user', content: { type: 'text', text: `Prompt with arguments: arg1='${required('arg1')}', arg2='${required('arg2')}'` } }] };
    case 'test_prompt_with_embedded_resource':
      return {
        messages: [
          { role: 'user', content: { type: 'resource', resource: { uri: required('resourceUri'), mimeType: 'text/plain', text: 'Embedded resource content for testing.' } } },
          { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } },
        ],
      };
    case 'test_prompt_with_image':
      return {
        messages: [
          { role: 'user', content: { type: 'image', data: PNG_BASE64, mimeType: 'image/png' } },
          { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } },
        ],
      };
    default:
      throw new ProtocolError(ProtocolErrorCode.InvalidParams, `unknown prompt ${name}`);
  }
}

function createConformanceServer(): Server {
  const server = new Server(
    { name: 'conformance', version: '1.0.0' },
    {
      // logging also registers the SDK's own logging/setLevel handler.
      capabilities: { tools: { listChanged: true }, resources: { subscribe: true, listChanged: true }, prompts: { listChanged: true }, logging: {}, completions: {} },
    },
  );
  // A connection enters `subscriptions` on its first subscribe (most never do: each 2026-07-28
  // request gets an instance of its own) and leaves it when it closes.
  server.onclose = () => void subscriptions.delete(server);

  server.setRequestHandler('tools/list', async () => ({ tools: TOOLS as never }));
  server.setRequestHandler('tools/call', async (request, ctx) => callTool(request.params.name, (request.params.arguments ?? {}) as Record<string, unknown>, ctx, server));
  server.setRequestHandler('resources/list', async () => ({ resources: RESOURCES }));
  server.setRequestHandler('resources/templates/list', async () => ({ resourceTemplates: RESOURCE_TEMPLATES }));
  server.setRequestHandler('resources/read', async (request) => readResource(request.params.uri));
  server.setRequestHandler('resources/subscribe', async (request) => {
    const uris = subscriptions.get(server) ?? new Set<string>();
    subscriptions.set(server, uris.add(request.params.uri));
    return {};
  });
  server.setRequestHandler('resources/unsubscribe', async (request) => {
    subscriptions.get(server)?.delete(request.params.uri);
    return {};
  });
  server.setRequestHandler('prompts/list', async () => ({ prompts: PROMPTS }));
  server.setRequestHandler('prompts/get', async (request) => getPrompt(request.params.name, request.params.arguments ?? {}));
  server.setRequestHandler('completion/complete', async (request) => {
    const { ref, argument } = request.params;
    const key = ref.type === 'ref/prompt' ? `ref/prompt:${ref.name}:${argument.name}` : `ref/resource:${ref.uri}:${argument.name}`;
    const values = (COMPLETIONS[key] ?? []).filter((value) => value.startsWith(argument.value));
    return { completion: { values, total: values.length, hasMore: false } };
  });
  return server;
}

const MAX_SESSIONS = 100;
const MAX_EVENTS = 1000;
const MAX_BODY_BYTES = 1024 * 1024;

/** Keeps the last events of every stream so a client can resume one with Last-Event-ID (SEP-1699). */
function createEventStore(): EventStore {
  const events = new Map<string, { streamId: string; message: JSONRPCMessage }>();
  let sequence = 0;
  return {
    async storeEvent(streamId, message) {
      const eventId = `${streamId}::${String(++sequence).padStart(12, '0')}`;
      events.set(eventId, { streamId, message });
      // Oldest first: Map keeps insertion order.
      for (const oldest of events.keys()) {
        if (events.size <= MAX_EVENTS) break;
        events.delete(oldest);
      }
      return eventId;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.split('::', 1)[0] ?? lastEventId;
      for (const [eventId, event] of events) {
        if (event.streamId === streamId && eventId > lastEventId) await send(eventId, event.message);
      }
      return streamId;
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function answer(res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new RangeError(`request bodies are limited to ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

/**
 * Streamable HTTP on 127.0.0.1. 2025-era clients get a session each (sampling, elicitation,
 * logging levels and subscriptions need one to reach back to them); 2026-07-28 requests go
 * to the SDK's per-request handler. Host and Origin must be loopback (DNS rebinding).
 */
function serveHttp(port: number): void {
  const validateHost = localhostHostValidation();
  const validateOrigin = localhostOriginValidation();
  const modern = toNodeHandler(createMcpHandler(createConformanceServer));
  const sessions = new Map<string, NodeStreamableHTTPServerTransport>();
  const eventStore = createEventStore();

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if ((req.url ?? '').split('?', 1)[0] !== '/mcp') return answer(res, 404, -32000, 'The MCP endpoint is /mcp.');
    const sessionId = header(req, 'mcp-session-id');
    if (req.method !== 'POST') {
      const transport = sessionId === undefined ? undefined : sessions.get(sessionId);
      if (!transport) return answer(res, sessionId === undefined ? 400 : 404, -32000, sessionId === undefined ? 'Mcp-Session-Id required' : 'Session not found');
      return transport.handleRequest(req, res);
    }
    let body: unknown;
    try {
      body = await readJson(req);
    } catch (error) {
      return answer(res, 400, -32700, `Parse error: ${error instanceof Error ? error.message : String(error)}`);
    }
    const inbound = classifyInboundRequest({
      httpMethod: 'POST',
      protocolVersionHeader: header(req, 'mcp-protocol-version'),
      mcpMethodHeader: header(req, 'mcp-method'),
      body,
    });
    if (inbound.kind !== 'legacy') return modern(req, res, body);
    if (sessionId !== undefined) {
      const transport = sessions.get(sessionId);
      if (!transport) return answer(res, 404, -32001, 'Session not found');
      return transport.handleRequest(req, res, body);
    }
    if (!isInitializeRequest(body)) return answer(res, 400, -32000, 'Bad Request: Mcp-Session-Id required');
    // Bounded: the oldest session goes when a new one would pass the limit.
    for (const [oldest, transport] of sessions) {
      if (sessions.size < MAX_SESSIONS) break;
      sessions.delete(oldest);
      void transport.close();
    }
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore,
      retryInterval: 1000,
      onsessioninitialized: (id) => void sessions.set(id, transport),
      onsessionclosed: (id) => void sessions.delete(id),
    });
    const server = createConformanceServer();
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  };

  const http = createServer((req, res) => {
    if (!validateHost(req, res) || !validateOrigin(req, res)) return;
    route(req, res).catch((error: unknown) => {
      console.error('conformance server: request failed:', error);
      if (!res.headersSent) answer(res, 500, -32603, 'Internal server error');
      else res.destroy();
    });
  });
  http.listen(port, '127.0.0.1', () => {
    const { port: bound } = http.address() as AddressInfo;
    console.error(`conformance server listening on http://127.0.0.1:${bound}/mcp`);
  });
}

const { values } = parseArgs({ options: { http: { type: 'string' } } });
if (values.http === undefined) {
  serveStdio(createConformanceServer);
} else {
  serveHttp(Number(values.http));
}
