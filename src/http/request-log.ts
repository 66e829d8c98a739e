import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from '../log.js';

/** Fields the handlers fill in for the access log line. */
export interface RequestLogFields {
  repo?: string;
  reference?: string;
  digest?: string;
  upstream?: string;
  cache?: string;
  error?: unknown;
}

/** One structured line per request, written when the response is finished or aborted. */
export function requestLog(log: Logger) {
  return async (ctx: Context, next: Next): Promise<void> => {
    const started = performance.now();
    const reqId = randomUUID();
    const socket = ctx.req.socket;
    const bytesBefore = socket.bytesWritten;
    ctx.state.reqId = reqId;
    ctx.set('X-Request-Id', reqId);
    ctx.res.once('close', () => {
      const fields = ctx.state as RequestLogFields;
      log.info(
        {
          reqId,
          method: ctx.method,
          path: ctx.path.length > 300 ? `${ctx.path.slice(0, 300)}…` : ctx.path,
          repo: fields.repo,
          reference: fields.reference,
          digest: fields.digest,
          upstream: fields.upstream,
          cache: fields.cache,
          status: ctx.status,
          bytes: socket.bytesWritten - bytesBefore,
          ms: Math.round(performance.now() - started),
          client: ctx.ip,
          aborted: !ctx.res.writableFinished || undefined,
          error: fields.error,
        },
        'request',
      );
    });
    await next();
  };
}
