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

/** A pino logger; `destination` is a stream, or a file path to append to. */
export function createLogger(level: string, destination?: NodeJS.WritableStream | string): Logger {
  return pino(
    {
      level,
      base: { service: 'stevedore' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    typeof destination === 'string'
      ? pino.destination({ dest: destination, mkdir: true, sync: false })
      : (destination ?? pino.destination({ sync: false })),
  );
}
