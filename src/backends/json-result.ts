import type { CallToolResult } from '@modelcontextprotocol/client';

/** A JSON value as a tool result: its JSON text, and a plain object also as structured content. */
export function jsonResult(value: unknown, json: string = JSON.stringify(value)): CallToolResult {
  const structured = typeof value === 'object' && value !== null && !Array.isArray(value) ? { structuredContent: value as Record<string, unknown> } : {};
  return { content: [{ type: 'text', text: json }], ...structured };
}
