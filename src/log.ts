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

type Sink = ReturnType<typeof pino.destination>;

/**
 * Collects the lines logged during one event-loop turn and hands them to the
 * file in one write: under load that is one syscall per turn instead of one
 * per request, and when idle a line still reaches the file at once.
 */
class TurnBatcher {
  private lines: string[] = [];
  private scheduled = false;

  constructor(private readonly sink: Sink) {}

  write(line: string): boolean {
    this.lines.push(line);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
    return true;
  }

  flush(callback?: (err?: Error) => void): void {
    this.drain();
    this.sink.flush(callback);
  }

  flushSync(): void {
    this.drain();
    this.sink.flushSync();
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    const text = this.lines.length === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.sink.write(text);
  };
}

/** A pino logger; `destination` is a stream, or a file path to append to (stdout when absent). */
export function createLogger(level: string, destination?: NodeJS.WritableStream | string): Logger {
  let stream: NodeJS.WritableStream | TurnBatcher;
  if (typeof destination === 'string' || destination === undefined) {
    const batcher = new TurnBatcher(pino.destination({ ...(typeof destination === 'string' ? { dest: destination, mkdir: true } : {}), sync: false }));
    // Lines of the last turn must not be lost to process.exit.
    process.once('exit', () => batcher.flushSync());
    stream = batcher;
  } else {
    stream = destination;
  }
  return pino(
    {
      level,
      base: { service: 'stevedore' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  );
}
