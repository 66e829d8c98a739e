import { pino, type Logger } from 'pino';
import sonicBoom from 'sonic-boom';

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

// sonic-boom is CommonJS: its class comes as a property of the module.
const { SonicBoom } = sonicBoom;
type Sink = InstanceType<typeof SonicBoom>;

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

  /** Hands the lines so far to the current file, then opens the path again (logrotate moved the file away). */
  reopen(): void {
    this.drain();
    this.sink.reopen();
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    const text = this.lines.length === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.sink.write(text);
  };
}

/** Log bytes held in memory while the destination cannot take them (a full disk); beyond, lines are dropped. */
const MAX_BUFFERED = 16 * 1024 * 1024;

/**
 * A file or stdout as a log destination that never takes the process down: a
 * write error (ENOSPC on the log disk, say) is reported once on stderr, lines
 * wait in a bounded buffer and are dropped beyond it, and writing resumes when
 * the destination takes bytes again.
 */
function resilientSink(path: string | undefined): { sink: Sink; failing(): boolean } {
  // SonicBoom itself rather than pino.destination(), which would add an exit hook that
  // flushes synchronously and, on a destination that fails with ENOSPC, retries forever.
  const sink = new SonicBoom({ ...(path ? { dest: path, mkdir: true } : { fd: 1 }), sync: false, maxLength: MAX_BUFFERED });
  const name = path ?? 'standard output';
  let failing = false;
  let dropped = 0;
  const report = (line: string): void => {
    try {
      process.stderr.write(`${JSON.stringify({ level: 50, time: new Date().toISOString(), service: 'stevedore', msg: line, dropped })}\n`);
    } catch {
      // stderr is gone too: nothing left to tell
    }
  };
  sink.on('error', (err: NodeJS.ErrnoException) => {
    if (failing) return;
    failing = true;
    report(`cannot write log lines to ${name} (${err.code ?? err.message}); keeping up to ${MAX_BUFFERED} bytes of them and dropping the rest until it works again`);
  });
  sink.on('drop', () => (dropped += 1));
  sink.on('write', () => {
    if (!failing) return;
    failing = false;
    report(`writing log lines to ${name} again`);
  });
  return { sink, failing: () => failing };
}

/** A batched, resilient sink on a file path (stdout when absent). */
function fileStream(path: string | undefined): TurnBatcher {
  const { sink, failing } = resilientSink(path);
  const batcher = new TurnBatcher(sink);
  // Lines of the last turn must not be lost to process.exit; a failing destination
  // would make the synchronous flush retry forever, so those lines are given up.
  process.once('exit', () => {
    if (!failing()) batcher.flushSync();
  });
  return batcher;
}

/** A pino logger; `destination` is a stream, or a file path to append to (stdout when absent). */
export function createLogger(level: string, destination?: NodeJS.WritableStream | string): Logger {
  return pinoOn(level, typeof destination === 'string' || destination === undefined ? fileStream(destination) : destination);
}

/**
 * A pino logger appending to the file at `path`, and `reopen()` to open the
 * path again after logrotate renamed the file (on SIGHUP): later lines go to
 * a new file of that name, the earlier ones stay in the renamed one.
 */
export function createReopenableLogger(level: string, path: string): { log: Logger; reopen(): void } {
  const stream = fileStream(path);
  return { log: pinoOn(level, stream), reopen: () => stream.reopen() };
}

function pinoOn(level: string, stream: NodeJS.WritableStream | TurnBatcher): Logger {
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
