import type { ExposedDefinition } from '../catalog/build.ts';
import type { SandboxSettings } from '../config/types.ts';

/** The description stays well under what hosts accept for one tool. */
const MAX_DESCRIPTION_CHARS = 32 * 1024;
/** Schemas nest at most this deep in a type; deeper is `unknown`. */
const MAX_DEPTH = 4;
const MAX_UNION = 20;
const MAX_COMMENT_CHARS = 200;
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** One tool a code-mode run may call: where it sits under `tools`, and what the agent sees of it. */
export interface BoundTool {
  readonly server: string;
  readonly tool: string;
  readonly definition: ExposedDefinition;
}

/**
 * warden__run_code's description for one agent: how to write the code, the limits, and
 * the agent's own tools as a TypeScript declaration of `tools`, typed from the schemas
 * the agent sees. Every text in it comes from the signed manifests and the config.
 */
export function describeCodeMode(tools: readonly BoundTool[], settings: SandboxSettings): string {
  const { limits, codeMode } = settings;
  const intro = [
    'Runs JavaScript that calls your tools, so that intermediate results need not pass through the conversation.',
    'Write the body of an async function: call a tool with `await tools.<server>.<tool>(args)` (a name with a dash: tools.server["get-sum"](args)) and `return` the result, which must be JSON.',
    'A call resolves to the tool\'s structured result when it has one, otherwise to its text. A refused or failed call throws an Error whose `code` says why (for example WARDEN_APPROVAL_PENDING or WARDEN_RATE_LIMITED; TOOL_ERROR when the tool itself failed).',
    'Each call is checked exactly as if you made it directly: your grants, approvals, rate limits, the audit trail.',
    'console.log output comes back with the result. There is no network, file, timer, module, require or process.',
    `Limits per run: ${limits.cpuMs} ms of CPU, ${limits.memoryMb} MB of memory, ${limits.wallMs / 1000} s in all, ${codeMode.maxCalls} tool calls (${codeMode.concurrency} at a time), ${limits.outputBytes} bytes of result.`,
  ].join('\n');
  const servers = new Map<string, BoundTool[]>();
  for (const tool of tools) servers.set(tool.server, [...(servers.get(tool.server) ?? []), tool]);
  let body = '';
  const left: string[] = [];
  for (const [server, members] of servers) {
    let block = `  ${property(server)}: {\n`;
    for (const member of members) {
      const comment = firstLine(member.definition.description);
      const input = typeOf(member.definition.inputSchema, 0);
      const output = member.definition.outputSchema ? typeOf(member.definition.outputSchema, 0) : 'unknown';
      block += `${comment ? `    /** ${comment} */\n` : ''}    ${property(member.tool)}(args: ${input}): Promise<${output}>;\n`;
    }
    block += '  };\n';
    if (intro.length + body.length + block.length > MAX_DESCRIPTION_CHARS) {
      for (const member of members) left.push(`tools${access(server)}${access(member.tool)}`);
      continue;
    }
    body += block;
  }
  const more = left.length > 0 ? `\n${alsoAvailable(left, MAX_DESCRIPTION_CHARS - intro.length - body.length)}` : '';
  if (tools.length === 0) return `${intro}\n\nYou have no tools to call from code right now.`;
  return `${intro}\n\nYour tools:\ndeclare const tools: {\n${body}};${more}`;
}

/** The tools left out for length, named as code reaches them, as many as fit in `room` characters. */
function alsoAvailable(names: readonly string[], room: number): string {
  let line = '(Also available, not described here for length:';
  let shown = 0;
  for (const name of names) {
    const rest = names.length - shown - 1;
    // Room for this name and, if any are left after it, for the count of those.
    if (line.length + name.length + 2 + (rest > 0 ? 24 : 2) > room) break;
    line += `${shown === 0 ? ' ' : ', '}${name}`;
    shown++;
  }
  const hidden = names.length - shown;
  return `${line}${hidden > 0 ? `${shown === 0 ? '' : ','} and ${hidden} more` : ''}.)`;
}

/** A member access that is valid JavaScript for any name. */
function access(name: string): string {
  return IDENTIFIER.test(name) ? `.${name}` : `[${JSON.stringify(name)}]`;
}

function property(name: string): string {
  return IDENTIFIER.test(name) ? name : JSON.stringify(name);
}

function firstLine(text: string): string {
  const line = text.split('\n')[0]!.trim();
  const short = line.length > MAX_COMMENT_CHARS ? `${line.slice(0, MAX_COMMENT_CHARS - 1)}…` : line;
  // A description cannot end the comment it is put in.
  return short.replaceAll('*/', '*\\/');
}

/** A TypeScript type for a JSON Schema, as far as one reads simply; `unknown` beyond that. */
function typeOf(schema: unknown, depth: number): string {
  if (depth > MAX_DEPTH || typeof schema !== 'object' || schema === null || Array.isArray(schema)) return 'unknown';
  const s = schema as Record<string, unknown>;
  if ('const' in s) return literal(s['const']);
  if (Array.isArray(s['enum'])) return union(s['enum'].map(literal));
  for (const key of ['anyOf', 'oneOf']) {
    const options = s[key];
    if (Array.isArray(options)) return union(options.map((option) => typeOf(option, depth + 1)));
  }
  const type = s['type'];
  if (Array.isArray(type)) return union(type.map((name) => typeOf({ ...s, type: name }, depth)));
  switch (type) {
    case 'string':
      return 'string';
    case 'number':
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      const item = typeOf(s['items'], depth + 1);
      return item.includes(' ') ? `Array<${item}>` : `${item}[]`;
    }
    case 'object':
      return objectType(s, depth);
    default:
      return 'unknown';
  }
}

function objectType(schema: Record<string, unknown>, depth: number): string {
  const properties = schema['properties'];
  if (typeof properties !== 'object' || properties === null) return schema['additionalProperties'] === false ? '{}' : 'Record<string, unknown>';
  const required = new Set(Array.isArray(schema['required']) ? schema['required'].filter((name): name is string => typeof name === 'string') : []);
  const members = Object.entries(properties).map(([name, value]) => `${property(name)}${required.has(name) ? '' : '?'}: ${typeOf(value, depth + 1)}`);
  return members.length === 0 ? '{}' : `{ ${members.join('; ')} }`;
}

function literal(value: unknown): string {
  if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) return JSON.stringify(value);
  return 'unknown';
}

function union(types: string[]): string {
  const unique = [...new Set(types)];
  if (unique.length === 0 || unique.length > MAX_UNION || unique.includes('unknown')) return 'unknown';
  return unique.join(' | ');
}
