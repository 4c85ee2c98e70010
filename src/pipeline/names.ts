/** A tool name from the agent, made safe to echo into messages and logs. */
export function printableName(name: string): string {
  const clean = name.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 128 ? `${clean.slice(0, 128)}…` : clean;
}
