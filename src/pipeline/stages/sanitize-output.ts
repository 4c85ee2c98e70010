import { maskSecrets } from '../../guard/detect-secrets.ts';
import { cleanText, noRedactions, sanitizeResult } from '../../guard/sanitize-output.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * The credential forms, plus this call's own secrets (an identity token: already
 * base64url, so looked for as it is), longest first so no shorter form splits a longer.
 */
function formsFor(credentials: readonly string[], callSecrets: readonly string[] | undefined): readonly string[] {
  if (!callSecrets || callSecrets.length === 0) return credentials;
  return [...credentials, ...callSecrets].sort((a, b) => b.length - a.length);
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
  const outcome = await next();
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
