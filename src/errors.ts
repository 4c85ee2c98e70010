// Every error mcp-warden raises or returns carries one of these codes. Tests assert the
// code, never the message. The table is the single place codes are defined; docs/errors.md
// and the README's exit-code table are written from it.

export const ERRORS = {
  WARDEN_USAGE: { exit: 2, summary: 'the command line is wrong (unknown verb, missing or bad option)' },
  WARDEN_CONFIG_UNREADABLE: { exit: 3, summary: 'the config file cannot be read or is not valid YAML/JSON' },
  WARDEN_CONFIG_INVALID: { exit: 3, summary: 'the config file does not match the config schema or breaks a rule' },
  WARDEN_MANIFEST_UNREADABLE: { exit: 4, summary: 'a manifest file cannot be read or is not valid YAML/JSON' },
  WARDEN_MANIFEST_INVALID: { exit: 4, summary: 'a manifest does not match the manifest schema or breaks a rule' },
  WARDEN_MANIFEST_REJECTED: { exit: 4, summary: 'a signed manifest failed verification (the reason says which check); its server is not loaded' },
  WARDEN_ARTIFACT_UNREADABLE: { exit: 4, summary: 'manifest pin could not digest a file, folder or package (missing, unreadable, a link leaving a pinned folder, not the registry release); the message says which' },
  WARDEN_STATE_UNAVAILABLE: { exit: 9, summary: 'the state store (manifest history, approvals, idempotency records, kill switch) cannot be opened or written; the broker does not start without it, and refuses calls that need it' },
  WARDEN_SIGNING_KEY: { exit: 10, summary: 'a publisher signing key cannot be read, is malformed, or would overwrite an existing key' },
  WARDEN_APPROVAL_NOT_PENDING: { exit: 11, summary: 'approvals approve/deny named an approval that does not exist or is no longer pending (decided, used or expired)' },
  WARDEN_RELOAD_REFUSED: { exit: 3, summary: 'a changed config was not applied (invalid, or it changes a setting that needs a restart); the broker keeps the previous one' },
  WARDEN_IDENTITY_KEY: { exit: 7, summary: 'the broker identity key (for identity tokens) cannot be read, written or used' },
  WARDEN_INIT_TARGET_EXISTS: { exit: 5, summary: 'init would overwrite an existing workspace file' },
  WARDEN_LISTEN_FAILED: { exit: 6, summary: 'the HTTP listener could not bind its address' },
  WARDEN_AUDIT_UNWRITABLE: { exit: 8, summary: 'the audit trail cannot be opened or written; the broker does not serve without it' },
  WARDEN_AGENT_UNKNOWN: { exit: 2, summary: 'the agent named on the command line is not in the config' },
  WARDEN_UNAUTHENTICATED: { exit: 1, summary: 'an HTTP request had no valid bearer token' },
  WARDEN_INSUFFICIENT_SCOPE: { exit: 1, summary: 'a grant covers the tool only for access tokens with OAuth scopes this session\'s token does not carry; the message names them' },
  WARDEN_TOOL_NOT_FOUND: { exit: 1, summary: 'the tool does not exist or this agent may not use it (deliberately indistinguishable)' },
  WARDEN_PROMPT_NOT_FOUND: { exit: 1, summary: 'the prompt does not exist or this agent may not get it (deliberately indistinguishable)' },
  WARDEN_RESOURCE_NOT_FOUND: { exit: 1, summary: 'the resource does not exist, or no grant of this agent covers its URI (deliberately indistinguishable)' },
  WARDEN_RESOURCE_URI_INVALID: { exit: 1, summary: 'the resource URI is refused before any grant is tried: empty, too long, no scheme, control characters, or . / .. segments and encoded separators that could climb out of a granted path' },
  WARDEN_RESOURCE_AMBIGUOUS: { exit: 1, summary: 'the URI is granted on more than one server, so the broker cannot tell which to read it from; the security team narrows the resource grants' },
  WARDEN_ARGUMENTS_INVALID: { exit: 1, summary: 'the arguments break the tool\'s input schema or a global argument limit; the call was not sent' },
  WARDEN_KILL_SWITCH: { exit: 1, summary: 'the kill switch is on: every call is refused until an operator turns it off' },
  WARDEN_READ_ONLY_MODE: { exit: 1, summary: 'the broker is in read-only mode: only read tools may be called' },
  WARDEN_RATE_LIMITED: { exit: 1, summary: 'a rate or concurrency limit refused the call; the message says which and when to retry' },
  WARDEN_APPROVAL_PENDING: { exit: 1, summary: 'the call waits for a person\'s approval; call again with the same arguments once it is approved' },
  WARDEN_APPROVAL_DENIED: { exit: 1, summary: 'a person (or the host\'s user) refused the call' },
  WARDEN_APPROVAL_EXPIRED: { exit: 1, summary: 'nobody answered the approval request in time; the call was refused' },
  WARDEN_APPROVAL_UNAVAILABLE: { exit: 1, summary: 'the call needs the user\'s approval and the agent\'s host cannot ask for it; the rule refuses it' },
  WARDEN_IDEMPOTENCY_CONFLICT: { exit: 1, summary: 'the idempotency key was already used for a call with other arguments' },
  WARDEN_OUTCOME_UNKNOWN: { exit: 1, summary: 'an identical write is in flight elsewhere or its outcome was lost (broker stopped during it); it is not repeated' },
  WARDEN_SERVER_QUARANTINED: { exit: 1, summary: 'the live server no longer matches its signed manifest, or what a stdio server runs differs from its pins (it is not started); its tools are withdrawn until a matching signed release is loaded' },
  WARDEN_SERVER_UNAVAILABLE: { exit: 1, summary: 'the downstream server is not connected (starting, restarting or failed)' },
  WARDEN_CREDENTIAL_MISSING: { exit: 1, summary: 'a credential a server needs has no value (unset variable, unreadable file); the server is not started' },
  WARDEN_DOWNSTREAM_TIMEOUT: { exit: 1, summary: 'the downstream server did not answer within the call timeout' },
  WARDEN_CALL_CANCELLED: { exit: 1, summary: 'the agent cancelled the call (or disconnected); the downstream call was cancelled too' },
  WARDEN_EGRESS_DENIED: { exit: 1, summary: 'the broker\'s egress policy refused an outbound request (destination not allowlisted, private address, redirect to a refused destination, too many redirects); nothing was sent there' },
  WARDEN_RESPONSE_TOO_LARGE: { exit: 1, summary: 'an HTTP API\'s response (body or headers) is over the egress size cap; reading stopped at the cap' },
  WARDEN_SANDBOX_LIMIT: { exit: 1, summary: 'sandboxed code (a code tool, or code mode) went over a limit (CPU time, memory, wall time, input, output, tool calls) and was stopped; the message says which' },
  WARDEN_SANDBOX_CRASHED: { exit: 1, summary: 'the sandbox worker running the code died; the broker replaced it and carries on, and only this call failed' },
  WARDEN_SERVER_REQUEST_DENIED: { exit: 1, summary: 'a downstream server asked the host something during a call (sampling, elicitation) and the broker refused it: no grant lets that server ask this agent, the host cannot answer that kind, the request could not be tied to one call, or it was malformed or over the size cap; the server got an error, the host saw nothing' },
  WARDEN_CALL_EXPIRED: { exit: 1, summary: 'a retried call carried the answer to a server\'s question the broker no longer holds (answered already, not answered in time, or the broker restarted); the call was ended; make it again' },
  WARDEN_DOWNSTREAM_ERROR: { exit: 1, summary: 'the downstream server answered with a protocol error or an invalid result' },
  WARDEN_INTERNAL: { exit: 1, summary: 'a broker check failed unexpectedly; the call was refused (fail closed)' },
} as const;

export type WardenErrorCode = keyof typeof ERRORS;

export class WardenError extends Error {
  readonly code: WardenErrorCode;
  /** Extra facts for logs and the audit trail; never shown to an agent. */
  readonly detail: Readonly<Record<string, unknown>> | undefined;

  constructor(code: WardenErrorCode, message: string, detail?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, options);
    this.name = 'WardenError';
    this.code = code;
    this.detail = detail;
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }
}

export function isWardenError(value: unknown): value is WardenError {
  return value instanceof WardenError;
}
