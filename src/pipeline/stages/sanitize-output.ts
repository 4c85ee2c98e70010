import { maskSecrets } from '../../guard/detect-secrets.ts';
import { cleanText, noRedactions, sanitizeResult } from '../../guard/sanitize-output.ts';
import { cleanStrings } from '../../guard/sanitize-server-request.ts';
import { printableName } from '../names.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * The credential forms, plus this call's own secrets (an identity token: already
 * base64url, so looked for as it is), longest first so no shorter form splits a longer.
 */
export function formsFor(credentials: readonly string[], callSecrets: readonly string[] | undefined): readonly string[] {
  if (!callSecrets || callSecrets.length === 0) return credentials;
  return [...credentials, ...callSecrets].sort((a, b) => b.length - a.length);
}

/** Log messages passed on per call; later ones are counted in the audit record, not sent. */
const MAX_LOGS_PER_CALL = 1000;
/** Largest log message's data passed on, in bytes of JSON; a larger one is replaced by a note. */
const MAX_LOG_BYTES = 16 * 1024;
const MAX_LOGGER_NAME = 128;

/** A log message's data: every string cleaned; over the cap, a note saying so. */
async function cleanLogData(data: unknown, forms: readonly string[]): Promise<unknown> {
  const withheld = (bytes: number) => `[log message of ${bytes} bytes withheld by mcp-warden: over ${MAX_LOG_BYTES} bytes]`;
  // Measured before cleaning too, so an oversized message costs no scan.
  const raw = Buffer.byteLength(JSON.stringify(data) ?? '', 'utf8');
  if (raw > MAX_LOG_BYTES) return withheld(raw);
  const cleaned = await cleanStrings(data, { secretForms: forms, maxTextBytes: MAX_LOG_BYTES }, noRedactions());
  const bytes = Buffer.byteLength(JSON.stringify(cleaned) ?? '', 'utf8');
  return bytes > MAX_LOG_BYTES ? withheld(bytes) : cleaned;
}

/** Longest progress message passed on, and the most of one that is scanned, in characters. */
const MAX_PROGRESS_MESSAGE = 1000;
const MAX_PROGRESS_SCANNED = 16 * 1024;

/**
 * Wraps dispatch: what comes back from a tool is untrusted input to the model. Results
 * are rebuilt from the fields an agent may see and cleaned (escapes, invisible characters,
 * every injected credential in any common encoding, detected secrets, size cap); refusal texts, which can
 * carry a downstream's error message, are cleaned too. The audit record gets the counts.
 */
export const sanitizeOutput: StageFactory = ({ config, secretForms }) => async (ctx, next) => {
  const forward = ctx.onProgress;
  /** The progress messages still being cleaned, in order; undefined when the agent asked for none. */
  let queue: Promise<void> | undefined;
  if (forward) {
    // Progress messages come from the server too: cleaned like results (detection before
    // the cut, so no part of a secret survives it), and forwarded in the order they came.
    queue = Promise.resolve();
    ctx.onProgress = ({ progress, total, message }) => {
      queue = queue!
        .then(async () => {
          if (message === undefined) return forward({ progress, ...(total === undefined ? {} : { total }) });
          const forms = formsFor(secretForms(), ctx.callSecrets);
          const clean = await maskSecrets(cleanText(message.slice(0, MAX_PROGRESS_SCANNED), forms, noRedactions()), { detected: 0 });
          forward({ progress, ...(total === undefined ? {} : { total }), message: clean.slice(0, MAX_PROGRESS_MESSAGE) });
        })
        // A message that cannot be cleaned is not forwarded, and must not become an
        // unhandled rejection (which would end the process) nor stop the ones after it.
        .catch(() => undefined);
    };
  }
  const log = ctx.onLog;
  let logs = 0;
  let withheldLogs = 0;
  if (log) {
    // Log messages from the server: every string cleaned like a result, a size cap per
    // message and a count per call, in order with the progress messages.
    queue ??= Promise.resolve();
    ctx.onLog = (message) => {
      if (logs >= MAX_LOGS_PER_CALL) {
        withheldLogs++;
        return;
      }
      logs++;
      queue = queue!
        .then(async () => {
          const forms = formsFor(secretForms(), ctx.callSecrets);
          const data = await cleanLogData(message.data, forms);
          log({ level: message.level, data, ...(message.logger === undefined ? {} : { logger: printableName(message.logger).slice(0, MAX_LOGGER_NAME) }) });
        })
        .catch(() => undefined);
    };
  }
  const outcome = await next();
  if (logs > 0) ctx.facts['logMessages'] = withheldLogs > 0 ? { forwarded: logs, withheld: withheldLogs } : { forwarded: logs };
  // Progress that came before the result goes out before it: wait for the messages still
  // being cleaned (a forward after the result is written is lost, the stream being closed).
  if (queue) await queue;
  // A question for the user carries only the agent's own arguments; nothing came from a tool.
  if (outcome.kind === 'ask-user') return outcome;
  const forms = formsFor(secretForms(), ctx.callSecrets);
  if (outcome.kind === 'refused') {
    const counts = noRedactions();
    const message = await maskSecrets(cleanText(outcome.message, forms, counts), counts);
    if (counts.credential + counts.detected + counts.invisible > 0) ctx.facts['redactions'] = counts;
    return refuse(outcome.code, message, outcome.hints);
  }
  const maxTextBytes = Math.min(config.limits.maxResultBytes, ctx.tool?.tool.maxResultBytes ?? Number.POSITIVE_INFINITY);
  const { result, redactions } = await sanitizeResult(outcome.result, { secretForms: forms, maxTextBytes });
  if (redactions.credential + redactions.detected + redactions.invisible + redactions.truncatedBytes > 0) ctx.facts['redactions'] = redactions;
  return { kind: 'result', result };
};
