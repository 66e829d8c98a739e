/** The distribution-spec's error codes: the only ones a body may carry. */
export const SPEC_ERROR_CODES = [
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN',
  'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
] as const;
export type ErrorCode = (typeof SPEC_ERROR_CODES)[number];

/**
 * The one error type for registry errors. Each condition has one constructor,
 * so call sites never spell status codes or JSON by hand. A condition of the
 * mirror or its upstream (an outage, a loop) has no code of its own in the
 * spec's table: it is told with the code of what was asked for, given when
 * the body is written, and its status and message say what happened.
 */
export class RegistryError extends Error {
  /** How the mirror answered, for logs and metrics (for example `notfound_cached`). */
  outcome: string | undefined;
  /** Detail for the mirror's own log only, never sent to the client. */
  logDetail: string | undefined;

  constructor(
    readonly status: number,
    /** Undefined: the code of the resource asked for (see toJSON). */
    readonly code: ErrorCode | undefined,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'RegistryError';
  }

  /** The distribution-spec error body; `subject` is the code of what the request asked for. */
  toJSON(subject: ErrorCode = 'UNSUPPORTED'): { errors: { code: ErrorCode; message: string; detail?: unknown }[] } {
    const entry: { code: ErrorCode; message: string; detail?: unknown } = { code: this.code ?? subject, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return { errors: [entry] };
  }
}

/** A copy of a remembered error, marked with how it was served. */
export function withOutcome(error: RegistryError, outcome: string): RegistryError {
  const copy = new RegistryError(error.status, error.code, error.message, error.detail, error.headers);
  copy.outcome = outcome;
  return copy;
}

/** Attaches detail meant for the operator's log, not for the client. */
export function withLogDetail(error: RegistryError, detail: string): RegistryError {
  error.logDetail = detail;
  return error;
}

export const isRegistryError = (err: unknown): err is RegistryError => err instanceof RegistryError;

export const nameInvalid = (detail: string): RegistryError =>
  new RegistryError(400, 'NAME_INVALID', 'invalid repository name', detail);

export const nameUnknown = (name: string, detail?: string): RegistryError =>
  new RegistryError(404, 'NAME_UNKNOWN', 'repository name not known to registry', detail ?? name);

export const digestInvalid = (detail: string): RegistryError =>
  new RegistryError(400, 'DIGEST_INVALID', 'provided digest is invalid', detail);

export const manifestInvalid = (detail: string): RegistryError =>
  new RegistryError(400, 'MANIFEST_INVALID', 'manifest invalid', detail);

export const manifestUnknown = (reference: string, detail?: string): RegistryError =>
  new RegistryError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', detail ?? reference);

export const blobUnknown = (digest: string): RegistryError =>
  new RegistryError(404, 'BLOB_UNKNOWN', 'blob unknown to registry', digest);

export const rangeNotSatisfiable = (size: number): RegistryError =>
  new RegistryError(416, 'BLOB_UNKNOWN', 'requested range not satisfiable', { size }, {
    'content-range': `bytes */${size}`,
  });

export const unsupported = (detail: string): RegistryError =>
  new RegistryError(405, 'UNSUPPORTED', 'the operation is unsupported', detail);

/** A query parameter the API defines, with a value it cannot take (a tag list's `n`, say). */
export const invalidParameter = (detail: string): RegistryError =>
  new RegistryError(400, 'UNSUPPORTED', 'invalid query parameter', detail);

export const tooLarge = (detail: string): RegistryError =>
  new RegistryError(413, 'SIZE_INVALID', 'content too large', detail);

export const tooManyRequests = (retryAfterSeconds?: number, detail?: string): RegistryError =>
  new RegistryError(
    429,
    'TOOMANYREQUESTS',
    'too many requests',
    detail,
    retryAfterSeconds !== undefined ? { 'retry-after': String(retryAfterSeconds) } : {},
  );

export const unauthorized = (detail: string, headers: Record<string, string> = {}): RegistryError =>
  new RegistryError(401, 'UNAUTHORIZED', 'authentication required', detail, headers);

export const denied = (detail: string): RegistryError =>
  new RegistryError(403, 'DENIED', 'requested access to the resource is denied', detail);

/** The upstream could not be reached or answered with a server error. */
export const unavailable = (detail: string): RegistryError =>
  new RegistryError(503, undefined, 'upstream registry unavailable', detail);

export const badGateway = (detail: string): RegistryError =>
  new RegistryError(502, undefined, 'upstream registry answered badly', detail);

/** A path under /v2/ that the pull API does not define. */
export const routeUnknown = (path: string): RegistryError =>
  new RegistryError(404, 'UNSUPPORTED', 'no such route in the registry API', path.slice(0, 200));

/** A request came back to a mirror it already passed through. */
export const loopDetected = (detail: string): RegistryError =>
  new RegistryError(508, undefined, 'loop detected between mirrors', detail);

/** A request claims to have passed through more mirrors than any sane tree has. */
export const mirrorChainTooLong = (hops: number, max: number): RegistryError =>
  new RegistryError(400, 'UNSUPPORTED', 'too many mirrors in the chain', `the request passed ${hops} mirrors; at most ${max} are allowed`);

/** The client took too long to send its request (slowloris). */
export const requestTimeout = (detail: string): RegistryError =>
  new RegistryError(408, 'UNSUPPORTED', 'request timed out', detail);

export const headersTooLarge = (detail: string): RegistryError =>
  new RegistryError(431, 'SIZE_INVALID', 'request headers too large', detail);

/** Not HTTP we can parse. */
export const malformedRequest = (detail: string): RegistryError =>
  new RegistryError(400, 'UNSUPPORTED', 'malformed HTTP request', detail);

/** A failure of the mirror itself. */
export const internalError = (): RegistryError => new RegistryError(500, undefined, 'internal error', 'see the mirror logs');

/** A tag that cannot name any manifest: the spec's pattern refuses it. */
export const tagInvalid = (detail: string): RegistryError => new RegistryError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', detail);
