// Starts Stevedore for tests: in-process (for fault tests that read internals
// and logs), or as a child process stopped by its PID (for end-to-end tests).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { Agent, request } from 'undici';
import { validateConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startStevedore, type Stevedore } from '../../src/stevedore.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/**
 * How child processes run Stevedore: the built artifact (`node dist/cli.js`,
 * as shipped) when the test command asks for it with TEST_ARTIFACT=dist,
 * else the sources through tsx (one test file run by hand, no build needed).
 */
export const RUNS_DIST = process.env.TEST_ARTIFACT === 'dist';

/** The command line that runs the `stevedore` CLI. */
export function cliCommand(compiled = RUNS_DIST): string[] {
  if (compiled && !existsSync(join(repoRoot, 'dist/cli.js'))) throw new Error('dist/cli.js is missing: run npm run build');
  return compiled ? [join(repoRoot, 'dist/cli.js')] : ['--import', 'tsx', join(repoRoot, 'src/cli.ts')];
}

export interface EndpointSpec {
  url: string;
  username?: string;
  password?: string;
  passwordFile?: string;
  mirror?: boolean;
}

export interface UpstreamSpec {
  registry: string;
  /** One URL, several, or full endpoint entries. */
  url: string | (string | EndpointSpec)[];
  username?: string;
  password?: string;
  timeouts?: { connect?: string; headers?: string; body?: string };
  /** Any other upstream keys (allow, deny, rateLimit, tagTtl, maxConcurrentFetches…). */
  settings?: Record<string, unknown>;
}

export interface MirrorOptions {
  upstreams: UpstreamSpec[];
  warmup?: Record<string, unknown>[];
  auditLog?: string;
  cache?: Record<string, string | number | boolean>;
  health?: Record<string, unknown>;
  instanceId?: string;
  defaultRegistry?: string;
  /** Reuse a cache directory (to test restarts); a fresh temp dir otherwise. */
  dir?: string;
  /** Further top-level config keys (auth, tls, limits…). */
  extra?: Record<string, unknown>;
  /** The mirror's clock for tag TTLs and stale windows (in-process mirrors only). */
  clock?: { now(): number };
}

export interface TestMirror {
  url: string;
  dir: string;
  stevedore: Stevedore;
  /** Parsed JSON log lines written so far. */
  logs(): Record<string, unknown>[];
  rawLogs(): string;
  stop(): Promise<void>;
}

function rawConfig(options: MirrorOptions, dir: string): Record<string, unknown> {
  return {
    listen: '127.0.0.1:0',
    logLevel: 'debug',
    defaultRegistry: options.defaultRegistry ?? options.upstreams[0]?.registry,
    cache: { dir, ...options.cache },
    // Probes stay out of the way unless a test asks for them.
    health: { probeInterval: '1h', ...options.health },
    ...(options.instanceId ? { instanceId: options.instanceId } : {}),
    ...(options.warmup ? { warmup: options.warmup } : {}),
    ...(options.auditLog ? { auditLog: options.auditLog } : {}),
    upstreams: options.upstreams.map((u) => ({
      registry: u.registry,
      endpoints: (Array.isArray(u.url) ? u.url : [u.url]).map((e) =>
        typeof e === 'string' ? { url: e, username: u.username ?? '', password: u.password ?? '' } : { username: '', password: '', ...e },
      ),
      timeouts: { connect: '2s', headers: '10s', body: '10s', ...u.timeouts },
      ...u.settings,
    })),
    ...options.extra,
  };
}

export async function startMirror(options: MirrorOptions): Promise<TestMirror> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'stevedore-cache-'));
  const config = validateConfig(rawConfig(options, dir));
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  const log = createLogger('debug', sink);
  const stevedore = await startStevedore(config, log, { clock: options.clock });
  return {
    url: stevedore.url,
    dir,
    stevedore,
    rawLogs: () => text,
    logs: () => text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>),
    async stop() {
      await stevedore.close();
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The test's environment minus STEVEDORE_* (test knobs would read as config keys) and the
 * proxy variables (loopback upstreams are reached directly unless a test passes a proxy): the config file decides.
 */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('STEVEDORE_') && !/^(https?|all|no)_proxy$/i.test(name)));
}

export interface MirrorProcess {
  url: string;
  pid: number;
  dir: string;
  logFile: string;
  /** The config file it runs with, for CLI commands against the same cache. */
  configFile: string;
  logs(): string;
  stop(): Promise<void>;
  /** Kills it the hard way (SIGKILL) and waits for the exit; files stay for a restart. */
  crash(): Promise<void>;
  /** Settles when the process exits, with its exit code (null if a signal ended it). */
  exited: Promise<number | null>;
}

/** Runs a `stevedore` CLI command (not serve) to completion. */
export function runCli(args: string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...cliCommand(), ...args], { cwd: repoRoot, env: { ...childEnv(), ...options.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

/** The node flags production serves with (the Dockerfile's ENTRYPOINT, `npm start`): tests and benchmarks run the same. */
export const SERVE_NODE_FLAGS = ['--max-semi-space-size=4'];

/** Runs `stevedore serve --config <file>` as a child process, as a user would. */
export async function startMirrorProcess(options: MirrorOptions & { port: number; compiled?: boolean; nodeArgs?: string[]; stdout?: string; env?: Record<string, string> }): Promise<MirrorProcess> {
  const work = mkdtempSync(join(tmpdir(), 'stevedore-proc-'));
  const dir = options.dir ?? join(work, 'data');
  const configFile = join(work, 'mirror.yml');
  const raw = rawConfig(options, dir);
  raw.listen = `127.0.0.1:${options.port}`;
  raw.logLevel = (options.extra?.logLevel as string | undefined) ?? 'info';
  writeFileSync(configFile, stringify(raw));
  const logFile = join(work, 'stevedore.log');
  const out = openSync(logFile, 'a');
  // The log lines go to stdout: elsewhere when asked (a full disk, say), and then the log file gets stderr only.
  const stdout = options.stdout ? openSync(options.stdout, 'a') : out;
  // Benchmarks run the build (`npm run build`), as production does; so do tests under the test command.
  const entry = cliCommand(options.compiled ?? RUNS_DIST);
  const child = spawn(process.execPath, [...SERVE_NODE_FLAGS, ...(options.nodeArgs ?? []), ...entry, 'serve', '--config', configFile], {
    cwd: repoRoot,
    stdio: ['ignore', stdout, out],
    env: { ...childEnv(), ...options.env },
  });
  closeSync(out);
  if (stdout !== out) closeSync(stdout);
  const pid = child.pid;
  if (pid === undefined) throw new Error('stevedore did not start');
  const tls = (options.extra?.tls as { cert?: string } | undefined)?.cert;
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${options.port}`;
  const readiness = tls ? new Agent({ connect: { rejectUnauthorized: false } }) : undefined;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const crash = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(pid, 'SIGKILL');
      await exited;
    }
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => child.exitCode === null && process.kill(pid, 'SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(work, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    if (child.exitCode !== null) break;
    try {
      const res = await request(`${url}/v2/`, { dispatcher: readiness });
      await res.body.dump();
      // 401: client auth is on, and the server is up.
      if (res.statusCode === 200 || res.statusCode === 401) return { url, pid, dir, logFile, configFile, logs: () => readFileSync(logFile, 'utf8'), stop, crash, exited };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const logs = readFileSync(logFile, 'utf8');
  await stop();
  throw new Error(`stevedore did not become ready:\n${logs.slice(-4000)}`);
}
