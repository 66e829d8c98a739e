// Starts a real Debian `docker-registry` (CNCF distribution 2.8.x) on loopback
// with throwaway filesystem storage, for integration and end-to-end tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';

export interface RegistryProxyOptions {
  remoteurl: string;
  username?: string;
  password?: string;
}

/** distribution's own S3 driver instead of the filesystem (for the benchmark's peer). */
export interface RegistryS3Options {
  endpoint: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
  region: string;
  rootDirectory?: string;
}

export interface StartRegistryOptions {
  proxy?: RegistryProxyOptions;
  s3?: RegistryS3Options;
  /** Binary to run; defaults to $STEVEDORE_REGISTRY_BIN or `docker-registry` on PATH. */
  binary?: string;
  /** How long to wait for `GET /v2/` to answer 200. */
  readyTimeoutMs?: number;
}

export interface RegistryHandle {
  url: string;
  port: number;
  pid: number;
  /** Temp dir holding config.yml, registry.log and data/. Removed by stop(). */
  dir: string;
  logFile: string;
  /** The registry's stdout+stderr so far, for assertion messages. */
  readLog(): Promise<string>;
  stop(): Promise<void>;
}

/** Asks the kernel for a free loopback port by binding port 0 and releasing it. */
export async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      const { port } = addr;
      srv.close(() => resolve(port));
    });
  });
}

// YAML double-quoted scalar; JSON string syntax is a subset of it.
const q = (s: string): string => JSON.stringify(s);

function configYaml(dataDir: string, port: number, proxy?: RegistryProxyOptions, s3?: RegistryS3Options): string {
  const storage = s3
    ? ['  s3:', `    accesskey: ${q(s3.accessKey)}`, `    secretkey: ${q(s3.secretKey)}`, `    region: ${q(s3.region)}`, `    regionendpoint: ${q(s3.endpoint)}`, `    bucket: ${q(s3.bucket)}`, '    secure: false', '    v4auth: true', `    rootdirectory: ${q(s3.rootDirectory ?? '/peer')}`]
    : ['  filesystem:', `    rootdirectory: ${q(dataDir)}`];
  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    ...storage,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    // A fixed secret silences the startup warning; it only signs upload state.
    `  secret: ${q('stevedore-test-secret')}`,
  ];
  if (proxy) {
    lines.push('proxy:', `  remoteurl: ${q(proxy.remoteurl)}`);
    if (proxy.username !== undefined) lines.push(`  username: ${q(proxy.username)}`);
    if (proxy.password !== undefined) lines.push(`  password: ${q(proxy.password)}`);
  }
  return lines.join('\n') + '\n';
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  // Bounded by the deadline and by an iteration cap as a belt-and-braces guard.
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`docker-registry exited early (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      const res = await request(`${url}/v2/`, { method: 'GET', headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200) return;
      lastErr = new Error(`GET /v2/ answered ${res.statusCode}`);
    } catch (err) {
      lastErr = err;
    }
    await sleep(50);
  }
  throw new Error(`docker-registry at ${url} not ready within ${timeoutMs} ms: ${String(lastErr)}`);
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  const ac = new AbortController();
  const exited = new Promise<boolean>((resolve) => child.once('exit', () => resolve(true)));
  const timedOut = sleep(ms, false, { signal: ac.signal }).catch(() => false);
  const result = await Promise.race([exited, timedOut]);
  ac.abort();
  return result;
}

/** Kills by PID: SIGTERM, then SIGKILL if it has not exited within graceMs. */
async function killChild(child: ChildProcess, graceMs: number): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  if (await waitExit(child, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitExit(child, 2000);
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RegistryHandle> {
  const binary = opts.binary ?? process.env['STEVEDORE_REGISTRY_BIN'] ?? 'docker-registry';
  const dir = await mkdtemp(join(tmpdir(), 'stevedore-registry-'));
  const configFile = join(dir, 'config.yml');
  const logFile = join(dir, 'registry.log');
  const dataDir = join(dir, 'data');

  // The port may be taken between probe and bind by another process; retry a few times.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    await writeFile(configFile, configYaml(dataDir, port, opts.proxy, opts.s3));
    const log = createWriteStream(logFile, { flags: 'a' });
    // Go's AWS SDK panics at start on a CA-bundle variable it cannot load; a plain-HTTP gateway needs none.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'AWS_CA_BUNDLE'));
    const child = spawn(binary, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env });
    // Access log goes to stdout, app log to stderr: keep both for debugging.
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
    spawnError.catch(() => undefined);
    try {
      await Promise.race([waitReady(url, child, opts.readyTimeoutMs ?? 15_000), spawnError]);
    } catch (err) {
      lastErr = err;
      await killChild(child, 2000);
      log.end();
      continue;
    }
    const pid = child.pid;
    if (pid === undefined) throw new Error('docker-registry has no pid');
    let stopped = false;
    return {
      url,
      port,
      pid,
      dir,
      logFile,
      readLog: () => readFile(logFile, 'utf8').catch(() => ''),
      async stop(): Promise<void> {
        if (stopped) return;
        stopped = true;
        await killChild(child, 5000);
        await new Promise<void>((resolve) => log.end(resolve));
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  // Surface the registry's own complaint before the temp dir goes away.
  const logTail = (await readFile(logFile, 'utf8').catch(() => '')).slice(-2000);
  await rm(dir, { recursive: true, force: true });
  throw new Error(`could not start docker-registry: ${String(lastErr)}\n${logTail}`);
}
