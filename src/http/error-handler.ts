import type { Context, Next } from 'koa';
import { internalError, isRegistryError, RegistryError, type ErrorCode } from '../oci/errors.js';
import type { RequestLogFields } from './request-log.js';

/** The code an outage or a loop is told with: that of what the request asked for. */
const SUBJECT_CODES: Record<string, ErrorCode> = { manifests: 'MANIFEST_UNKNOWN', blobs: 'BLOB_UNKNOWN', tags: 'NAME_UNKNOWN', referrers: 'MANIFEST_UNKNOWN' };
import type { Logger } from '../log.js';

/** Every failure becomes the distribution spec's error JSON with the right status. */
export function errorHandler(log: Logger) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
    } catch (err) {
      if (isClientAbort(err) && (ctx.req.destroyed || ctx.req.socket.destroyed)) {
        // The client went away mid-request: nothing to answer, nothing wrong here.
        ctx.state.error = 'client aborted the request';
        ctx.status = 400;
        return;
      }
      const error = toRegistryError(err);
      if (error.status >= 500 && !isRegistryError(err)) {
        log.error({ err, method: ctx.method, path: ctx.path.slice(0, 300) }, 'unexpected error');
      }
      ctx.state.error = error.logDetail ?? error.detail ?? error.message;
      if (error.outcome) ctx.state.cache = error.outcome;
      if (ctx.headerSent) return;
      ctx.status = error.status;
      for (const [name, value] of Object.entries(error.headers)) ctx.set(name, value);
      if (ctx.method === 'HEAD') return;
      ctx.body = error.toJSON(SUBJECT_CODES[(ctx.state as RequestLogFields).route ?? ''] ?? 'UNSUPPORTED');
    }
  };
}

function isClientAbort(err: unknown): boolean {
  const { code, message } = err as NodeJS.ErrnoException;
  return code === 'ECONNRESET' || code === 'ECONNABORTED' || code === 'ERR_STREAM_PREMATURE_CLOSE' || message === 'aborted';
}

function toRegistryError(err: unknown): RegistryError {
  if (isRegistryError(err)) return err;
  const status = (err as { status?: number }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new RegistryError(status, 'UNSUPPORTED', (err as Error).message);
  }
  return internalError();
}
