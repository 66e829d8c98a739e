// Canaries for the fuzz test: files with unique content around the cache
// directory, an inotify watch on them, and a TCP server no request may reach.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface CanaryFiles {
  /** The test's temp dir: the cache directory and the canaries live in it. */
  root: string;
  cacheDir: string;
  /** Unique strings, one per file; none may ever appear in a response. */
  tokens: string[];
  files: string[];
  /** Each file as a path from the cache directory (`../secret/canary.txt`). */
  relative: string[];
  /** The digest of a canary laid out like a cached blob, one level above the cache. */
  fakeBlobDigest: string;
  /** A watched file the test itself reads at the end, to prove the watch works. */
  control: string;
  remove(): void;
}

/** Canary files next to the cache directory (siblings, look-alikes of its layout) and deeper elsewhere. */
export function plantCanaries(): CanaryFiles {
  const root = mkdtempSync(join(tmpdir(), 'stevedore-fuzz-'));
  const cacheDir = join(root, 'cache');
  const tokens: string[] = [];
  const files: string[] = [];
  const put = (relative: string, token = `STEVEDORE-FUZZ-CANARY-${randomBytes(12).toString('hex')}`): string => {
    const file = join(root, relative);
    mkdirSync(dirname(file), { recursive: true });
    const content = `${token}\n`;
    writeFileSync(file, content);
    tokens.push(token);
    files.push(file);
    return content;
  };
  for (const name of ['canary-sibling.txt', 'index.db', 'instance-id', 'mirror.yml', 'secret/canary.txt', 'etc/passwd', 'elsewhere/deep/er/canary.txt', 'cache-evil/canary.txt', 'cachex']) put(name);
  // A "blob" with a valid digest, stored as the cache would store it but one level up.
  const blobToken = `STEVEDORE-FUZZ-CANARY-${randomBytes(12).toString('hex')}`;
  const hex = createHash('sha256').update(`${blobToken}\n`).digest('hex');
  put(`blobs/sha256/${hex.slice(0, 2)}/${hex}`, blobToken);
  const relative = files.map((f) => `../${f.slice(root.length + 1)}`);
  const control = join(root, 'control', 'control.txt');
  mkdirSync(dirname(control), { recursive: true });
  writeFileSync(control, 'control\n');
  return {
    root, cacheDir, tokens, files, relative, control,
    fakeBlobDigest: `sha256:${hex}`,
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface CanaryServer {
  host: string;
  connections(): number;
  stop(): Promise<void>;
}

/** A TCP server on loopback that counts every connection it accepts and drops it. */
export async function startCanaryServer(): Promise<CanaryServer> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = address && typeof address === 'object' ? address.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    connections: () => count,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface CanaryWatch {
  /** Events on watched paths so far, as `path EVENTS`. */
  events(): string[];
  /** Reads the control file and waits for its event: proof that the watch sees reads. */
  proveWorking(timeoutMs?: number): Promise<boolean>;
  stop(): Promise<void>;
}

export function inotifyAvailable(): boolean {
  return spawnSync('inotifywait', ['--help'], { stdio: 'ignore' }).error === undefined;
}

/**
 * Watches the canary files and every directory under the test's temp dir but
 * the cache directory, for opens, reads and listings, with inotifywait
 * (Debian package inotify-tools). Stopped by its PID.
 */
export async function watchCanaries(canaries: CanaryFiles): Promise<CanaryWatch> {
  const excluded = `^${canaries.cacheDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(/|$)`;
  const child = spawn('inotifywait', ['-m', '-r', '--exclude', excluded, '-e', 'open,access,close_nowrite,modify,attrib,moved_from,create,delete', '--format', '%w%f %e', canaries.root], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('inotifywait did not start');
  const lines: string[] = [];
  let out = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    const parts = out.split('\n');
    out = parts.pop() ?? '';
    lines.push(...parts.filter(Boolean));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`inotifywait did not establish its watches: ${err}`)), 10_000);
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
      if (err.includes('Watches established')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`inotifywait exited: ${err}`)));
  });
  const inCache = (line: string): boolean => line === canaries.cacheDir || line.startsWith(`${canaries.cacheDir}/`) || line.startsWith(`${canaries.cacheDir} `);
  return {
    events: () => lines.filter((l) => !inCache(l) && !l.startsWith(dirname(canaries.control))),
    async proveWorking(timeoutMs = 5_000) {
      readFileSync(canaries.control);
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (lines.some((l) => l.startsWith(canaries.control))) return true;
        await new Promise((r) => setTimeout(r, 20));
      }
      return false;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(pid, 'SIGTERM');
        await exited;
      }
    },
  };
}
