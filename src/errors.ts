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
  WARDEN_STATE_UNAVAILABLE: { exit: 9, summary: 'the state store (manifest history) cannot be opened or written; the broker does not start without it' },
  WARDEN_SIGNING_KEY: { exit: 10, summary: 'a publisher signing key cannot be read, is malformed, or would overwrite an existing key' },
  WARDEN_IDENTITY_KEY: { exit: 7, summary: 'the broker identity key (for identity tokens) cannot be read, written or used' },
  WARDEN_INIT_TARGET_EXISTS: { exit: 5, summary: 'init would overwrite an existing workspace file' },
  WARDEN_LISTEN_FAILED: { exit: 6, summary: 'the HTTP listener could not bind its address' },
  WARDEN_AUDIT_UNWRITABLE: { exit: 8, summary: 'the audit trail cannot be opened or written; the broker does not serve without it' },
  WARDEN_AGENT_UNKNOWN: { exit: 2, summary: 'the agent named on the command line is not in the config' },
  WARDEN_UNAUTHENTICATED: { exit: 1, summary: 'an HTTP request had no valid bearer token' },
  WARDEN_TOOL_NOT_FOUND: { exit: 1, summary: 'the tool does not exist or this agent may not use it (deliberately indistinguishable)' },
  WARDEN_ARGUMENTS_INVALID: { exit: 1, summary: 'the arguments break the tool\'s input schema or a global argument limit; the call was not sent' },
  WARDEN_SERVER_QUARANTINED: { exit: 1, summary: 'the live server no longer matches its signed manifest; its tools are withdrawn until a matching signed release is loaded' },
  WARDEN_SERVER_UNAVAILABLE: { exit: 1, summary: 'the downstream server is not connected (starting, restarting or failed)' },
  WARDEN_CREDENTIAL_MISSING: { exit: 1, summary: 'a credential a server needs has no value (unset variable, unreadable file); the server is not started' },
  WARDEN_DOWNSTREAM_TIMEOUT: { exit: 1, summary: 'the downstream server did not answer within the call timeout' },
  WARDEN_CALL_CANCELLED: { exit: 1, summary: 'the agent cancelled the call (or disconnected); the downstream call was cancelled too' },
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
