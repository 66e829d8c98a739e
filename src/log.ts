import { pino, type Logger } from 'pino';

export type { Logger };

/** Paths that may carry secrets; pino replaces them wherever they appear. */
const REDACT = [
  'authorization',
  'password',
  'token',
  '*.authorization',
  '*.password',
  '*.token',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'upstreams[*].endpoints[*].password',
  'upstreams[*].endpoints[*].username',
];

/** Log lines are written in batches of this many bytes, or after FLUSH_MS, whichever comes first. */
const BATCH_BYTES = 8 * 1024;
const FLUSH_MS = 250;

/**
 * A pino logger; `destination` is a stream, or a file path to append to.
 * Files and stdout are written in batches (one syscall per many lines, not per
 * request), flushed at least every 250 ms and on shutdown.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream | string): Logger {
  const batched = typeof destination === 'string' || destination === undefined;
  const stream = batched
    ? pino.destination({ ...(typeof destination === 'string' ? { dest: destination, mkdir: true } : {}), sync: false, minLength: BATCH_BYTES })
    : destination;
  const logger = pino(
    {
      level,
      base: { service: 'stevedore' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  );
  if (batched) {
    const timer = setInterval(() => {
      try {
        logger.flush();
      } catch {
        // a flush while the stream is still opening is retried on the next tick
      }
    }, FLUSH_MS);
    timer.unref();
  }
  return logger;
}
