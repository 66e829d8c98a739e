/**
 * Test harness: run a real, fully isolated dockerd (Debian docker.io 20.10) whose
 * `registry-mirrors` points at a mirror on 127.0.0.1.
 *
 * Isolation:
 *  - dockerd runs in a private mount namespace (`unshare --mount --propagation private`,
 *    no --fork, so the spawned PID *is* dockerd's PID). Inside it:
 *      /run            -> fresh tmpfs (hides the host's /run; containerd shim sockets,
 *                         /run/docker/plugins etc. land there instead of on the host)
 *      /etc/resolv.conf-> temp file "nameserver 127.0.0.1" (DNS fails fast, locally)
 *      /etc/hosts      -> temp file with only localhost entries
 *      /etc/docker     -> temp dir (dockerd 20.10 writes key.json there unconditionally;
 *                         also hides the host's certs.d / daemon.json)
 *    All of these vanish with the namespace; the host's files are never touched.
 *  - HTTP(S)_PROXY (both cases) point at a closed port on 127.0.0.1, NO_PROXY covers
 *    loopback, so anything that is not the 127.0.0.1 mirror fails with
 *    "proxyconnect tcp: ... connection refused" without leaving the machine.
 *  - --iptables=false --ip6tables=false --bridge=none: no host network changes.
 *  - data-root, exec-root (incl. managed containerd's state/root), pidfile, socket and
 *    DOCKER_CONFIG all live in one short temp dir under /tmp (unix socket path limit is
 *    108 bytes; containerd puts `containerd.sock.ttrpc` under exec-root/containerd).
 *
 * stop() kills dockerd (SIGTERM, bounded wait, SIGKILL), then every process left in
 * dockerd's mount namespace (managed containerd, any daemonised shims — they are
 * reparented away from dockerd, so matching by namespace is the reliable way), lazily
 * unmounts anything under the temp dir that might be visible on the host, and removes it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export type StorageDriver = 'overlay2' | 'vfs';

export interface DockerResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface DockerdHandle {
  /** PID of dockerd itself (unshare and sh exec into it). */
  pid: number;
  /** Absolute path of the API unix socket. */
  socket: string;
  /**
   * Runs the docker CLI (Debian's 20.10 /usr/bin/docker preferred; override with STEVEDORE_DOCKER_CLI)
   * against this daemon with `-H unix://socket`, an isolated DOCKER_CONFIG and the same proxy env.
   * Never rejects: timeout (default 120 s) -> SIGKILL and code 124.
   */
  docker(args: string[], opts?: { timeoutMs?: number }): Promise<DockerResult>;
  /** dockerd's combined stdout/stderr so far (tail, capped). */
  logs(): string;
  /** Idempotent. Stops dockerd + containerd, removes all temp state. */
  stop(): Promise<void>;
  /** Storage driver actually in use. */
  storageDriver: StorageDriver;
  /** Temp dir holding data-root, exec-root, socket, configs (removed by stop()). */
  baseDir: string;
  /** The closed loopback port used as HTTP(S)_PROXY. */
  proxyPort: number;
  /** PIDs currently living in dockerd's private mount namespace (dockerd, containerd, shims). */
  namespacePids(): number[];
}

export interface StartDockerdOptions {
  /** e.g. "http://127.0.0.1:5000" — written to daemon.json `registry-mirrors`. */
  mirrorUrl: string;
  /** Extra `insecure-registries` entries (127.0.0.0/8 is already insecure by default). */
  insecureRegistries?: string[];
  /** Default: env STEVEDORE_DOCKERD_STORAGE_DRIVER, else overlay2 with automatic vfs fallback. */
  storageDriver?: StorageDriver | 'auto';
  /** Pass --debug to dockerd (logs every registry request it makes). Default false. */
  debug?: boolean;
  /** Readiness bound. Default 60 000 ms. */
  startTimeoutMs?: number;
}

const DOCKERD_CANDIDATES = ['/usr/sbin/dockerd', '/usr/bin/dockerd'];
// Prefer Debian's CLI (same 20.10 release as the daemon) over whatever is first in PATH.
const DOCKER_CLI_CANDIDATES = ['/usr/bin/docker', '/usr/local/bin/docker', '/bin/docker'];
const UNSHARE_CANDIDATES = ['/usr/bin/unshare', '/bin/unshare'];
const LOG_CAP = 8 * 1024 * 1024;
const SOCKET_PATH_MAX = 100; // sun_path is 108 incl. NUL; keep margin

async function firstExecutable(candidates: string[]): Promise<string | undefined> {
  for (const c of candidates) {
    try {
      await fs.access(c, fsConstants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

async function dockerCliPath(): Promise<string | undefined> {
  const fromEnv = process.env['STEVEDORE_DOCKER_CLI'];
  if (fromEnv) return fromEnv;
  return firstExecutable(DOCKER_CLI_CANDIDATES);
}

/** Why a real dockerd cannot be used here, or null if it can. */
export async function dockerdUnavailableReason(): Promise<string | null> {
  if (process.platform !== 'linux') return `dockerd harness needs Linux (platform is ${process.platform})`;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return 'dockerd harness needs root (mount namespaces, dockerd)';
  }
  if (!(await firstExecutable(DOCKERD_CANDIDATES))) return 'dockerd not installed (apt-get install docker.io)';
  if (!(await firstExecutable(['/usr/bin/containerd', '/usr/sbin/containerd']))) return 'containerd not installed';
  if (!(await dockerCliPath())) return 'docker CLI not installed';
  if (!(await firstExecutable(UNSHARE_CANDIDATES))) return 'unshare (util-linux) not installed';
  // Can we actually create a mount namespace (CAP_SYS_ADMIN, not blocked by seccomp)?
  const unshare = (await firstExecutable(UNSHARE_CANDIDATES)) ?? 'unshare';
  const r = await run(unshare, ['--mount', '--propagation', 'private', '--', 'true'], { timeoutMs: 10_000 });
  if (r.code !== 0) return `cannot create a mount namespace: ${r.stderr.trim()}`;
  return null;
}

/** True when we are root on Linux and dockerd/containerd/docker/unshare are usable. */
export async function dockerdAvailable(): Promise<boolean> {
  return (await dockerdUnavailableReason()) === null;
}

interface RunOpts {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

function run(cmd: string, args: string[], opts: RunOpts = {}): Promise<DockerResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ code: 127, stdout: '', stderr: String(err) });
      return;
    }
    const out: Buffer[] = [];
    const errb: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => errb.push(d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout: '', stderr: String(err) });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let stderr = Buffer.concat(errb).toString('utf8');
      if (timedOut) stderr += `\n[harness] ${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms`;
      resolve({
        code: timedOut ? 124 : (code ?? (signal ? 128 : 1)),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr,
      });
    });
  });
}

/** A loopback TCP port that currently refuses connections. */
export async function findClosedPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address();
        const p = typeof addr === 'object' && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
    if (port && (await refuses(port))) return port;
  }
  throw new Error('could not find a closed loopback port');
}

function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(2000);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

// ---------------------------------------------------------------- /proc helpers

interface ProcInfo {
  pid: number;
  ppid: number;
  startTime: string;
}

function readStat(pid: number): ProcInfo | undefined {
  try {
    const s = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0]=state, rest[1]=ppid, rest[19]=starttime
    if (rest[0] === 'Z') return undefined; // zombie: already dead
    return { pid, ppid: Number(rest[1]), startTime: rest[19] ?? '' };
  } catch {
    return undefined;
  }
}

function mntNs(pid: number): string | undefined {
  try {
    return fsSync.readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

function allPids(): number[] {
  const pids: number[] = [];
  for (const e of fsSync.readdirSync('/proc')) {
    if (/^\d+$/.test(e)) pids.push(Number(e));
  }
  return pids;
}

function pidsInNamespace(ns: string): ProcInfo[] {
  const own = mntNs(process.pid);
  if (!ns || ns === own) return []; // never kill by a namespace we share
  const found: ProcInfo[] = [];
  for (const pid of allPids()) {
    if (mntNs(pid) !== ns) continue;
    const st = readStat(pid);
    if (st) found.push(st);
  }
  return found;
}

function descendants(root: number): ProcInfo[] {
  const infos = allPids()
    .map(readStat)
    .filter((x): x is ProcInfo => x !== undefined);
  const byParent = new Map<number, ProcInfo[]>();
  for (const i of infos) {
    const arr = byParent.get(i.ppid) ?? [];
    arr.push(i);
    byParent.set(i.ppid, arr);
  }
  const out: ProcInfo[] = [];
  const queue = [root];
  while (queue.length) {
    const p = queue.shift() as number;
    for (const c of byParent.get(p) ?? []) {
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

function sameProcessAlive(p: ProcInfo): boolean {
  const now = readStat(p.pid);
  return now !== undefined && now.startTime === p.startTime;
}

function signal(p: ProcInfo, sig: NodeJS.Signals): void {
  if (!sameProcessAlive(p)) return;
  try {
    process.kill(p.pid, sig);
  } catch {
    // already gone
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Resolves when `p` settles or after `ms`, without leaving a timer behind. */
async function within(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

async function waitGone(procs: ProcInfo[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!procs.some(sameProcessAlive)) return true;
    await sleep(50);
  }
  return !procs.some(sameProcessAlive);
}

function mountsUnder(dir: string): string[] {
  try {
    const lines = fsSync.readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
    const res: string[] = [];
    for (const l of lines) {
      const mp = l.split(' ')[4];
      if (!mp) continue;
      const decoded = mp.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
      if (decoded === dir || decoded.startsWith(dir + '/')) res.push(decoded);
    }
    return res.sort((a, b) => b.length - a.length);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- /_ping

function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path: '/_ping', method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

// ---------------------------------------------------------------- start

/** Shell run by unshare inside the new mount namespace; execs dockerd (same PID). */
const NS_SCRIPT = [
  'set -e',
  'base="$1"; shift',
  // private /run: keeps /run/docker/plugins, /run/containerd/s/* (shim sockets) off the host
  'mount -t tmpfs -o mode=755,size=64m stevedore-run /run',
  // if resolv.conf is a symlink into /run it is now dangling: recreate its target inside the tmpfs
  'if [ -L /etc/resolv.conf ] && [ ! -e /etc/resolv.conf ]; then t=$(readlink -m /etc/resolv.conf); case "$t" in /run/*) mkdir -p "${t%/*}"; : > "$t";; esac; fi',
  'mount --bind "$base/etc/resolv.conf" /etc/resolv.conf',
  'mount --bind "$base/etc/hosts" /etc/hosts',
  '[ -d /etc/docker ] || mkdir -p /etc/docker',
  'mount --bind "$base/etc/docker" /etc/docker',
  'exec "$@"',
].join('\n');

let preferredDriver: StorageDriver | undefined;

class DockerdStartError extends Error {
  /** dockerd's own error/fatal lines (what made it exit or hang). */
  readonly failure: string;
  constructor(message: string, failure: string) {
    super(message);
    this.name = 'DockerdStartError';
    this.failure = failure;
  }
}

export async function startDockerd(opts: StartDockerdOptions): Promise<DockerdHandle> {
  const reason = await dockerdUnavailableReason();
  if (reason) throw new Error(`startDockerd: ${reason}`);

  // dockerd 20.10 refuses (exits at startup) mirrors with a path/query or without a scheme
  let mirror: URL;
  try {
    mirror = new URL(opts.mirrorUrl);
  } catch {
    throw new Error(`startDockerd: mirrorUrl ${JSON.stringify(opts.mirrorUrl)} is not a URL (need http(s)://host:port)`);
  }
  if (!/^https?:$/.test(mirror.protocol) || (mirror.pathname !== '/' && mirror.pathname !== '') || mirror.search || mirror.hash) {
    throw new Error(`startDockerd: dockerd 20.10 only accepts mirrors of the form http(s)://host[:port][/], got ${opts.mirrorUrl}`);
  }

  const requested =
    opts.storageDriver ??
    (process.env['STEVEDORE_DOCKERD_STORAGE_DRIVER'] as StorageDriver | 'auto' | undefined) ??
    'auto';
  if (requested !== 'auto') return startOnce(opts, requested);
  if (preferredDriver) return startOnce(opts, preferredDriver);
  try {
    const h = await startOnce(opts, 'overlay2');
    preferredDriver = 'overlay2';
    return h;
  } catch (err) {
    // only a graphdriver problem is worth a vfs retry; config errors would fail again
    const failure = err instanceof DockerdStartError ? err.failure : '';
    if (!/overlay|graphdriver|storage.driver|driver not supported/i.test(failure)) throw err;
    const h = await startOnce(opts, 'vfs').catch((err2: unknown) => {
      throw new Error(`dockerd failed with overlay2 and vfs.\n--- overlay2 ---\n${String(err)}\n--- vfs ---\n${String(err2)}`);
    });
    preferredDriver = 'vfs';
    return h;
  }
}

/** Short (unix socket paths) and not under /run (hidden by the namespace's tmpfs). */
function shortTmpRoot(): string {
  const t = fsSync.realpathSync(os.tmpdir());
  return t.length <= 24 && !/^\/(var\/)?run(\/|$)/.test(t) ? t : '/tmp';
}

async function startOnce(opts: StartDockerdOptions, driver: StorageDriver): Promise<DockerdHandle> {
  const dockerd = (await firstExecutable(DOCKERD_CANDIDATES)) as string;
  const unshare = (await firstExecutable(UNSHARE_CANDIDATES)) as string;
  const cli = (await dockerCliPath()) as string;

  const baseDir = await fs.mkdtemp(path.join(shortTmpRoot(), 'sdd-'));
  const dataRoot = path.join(baseDir, 'data');
  const execRoot = path.join(baseDir, 'run');
  const socket = path.join(baseDir, 'docker.sock');
  const pidfile = path.join(baseDir, 'dockerd.pid');
  const configFile = path.join(baseDir, 'daemon.json');
  const cliConfigDir = path.join(baseDir, 'cli');
  if (path.join(execRoot, 'containerd', 'containerd.sock.ttrpc').length > SOCKET_PATH_MAX || socket.length > SOCKET_PATH_MAX) {
    await fs.rm(baseDir, { recursive: true, force: true });
    throw new Error(`temp dir ${baseDir} too long for unix socket paths`);
  }
  await Promise.all([
    fs.mkdir(dataRoot, { mode: 0o710 }),
    fs.mkdir(execRoot, { mode: 0o700 }),
    fs.mkdir(cliConfigDir),
    fs.mkdir(path.join(baseDir, 'etc', 'docker'), { recursive: true }),
  ]);
  await fs.writeFile(path.join(baseDir, 'etc', 'resolv.conf'), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  await fs.writeFile(path.join(baseDir, 'etc', 'hosts'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  await fs.writeFile(path.join(cliConfigDir, 'config.json'), '{}\n');
  const daemonJson: Record<string, unknown> = {
    'registry-mirrors': [opts.mirrorUrl],
    'insecure-registries': opts.insecureRegistries ?? [],
    'log-driver': 'json-file',
    'max-concurrent-downloads': 3,
    features: { buildkit: false },
  };
  await fs.writeFile(configFile, JSON.stringify(daemonJson, null, 2) + '\n');

  const proxyPort = await findClosedPort();
  const proxyUrl = `http://127.0.0.1:${proxyPort}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DOCKER_|CONTAINERD_)/.test(k) || /^(https?|all|no)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  Object.assign(env, {
    PATH: `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${env['PATH'] ? ':' + env['PATH'] : ''}`,
    HTTPS_PROXY: proxyUrl,
    HTTP_PROXY: proxyUrl,
    https_proxy: proxyUrl,
    http_proxy: proxyUrl,
    NO_PROXY: '127.0.0.1,localhost,::1',
    no_proxy: '127.0.0.1,localhost,::1',
    DOCKER_CONFIG: cliConfigDir,
  });

  const dockerdArgs = [
    '--iptables=false',
    '--ip6tables=false',
    '--ip-forward=false',
    '--ip-masq=false',
    '--bridge=none',
    `--data-root=${dataRoot}`,
    `--exec-root=${execRoot}`,
    `--pidfile=${pidfile}`,
    `--host=unix://${socket}`,
    `--storage-driver=${driver}`,
    `--config-file=${configFile}`,
  ];
  if (opts.debug) dockerdArgs.push('--debug');
  const argv = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', NS_SCRIPT, 'stevedore-dockerd', baseDir, dockerd, ...dockerdArgs];

  const child = spawn(unshare, argv, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let logBuf = `[harness] ${unshare} ${argv.map((a) => (a === NS_SCRIPT ? "'<ns-script>'" : a)).join(' ')}\n`;
  const onData = (d: Buffer): void => {
    logBuf += d.toString('utf8');
    if (logBuf.length > LOG_CAP) logBuf = logBuf.slice(logBuf.length - LOG_CAP);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, sig) => {
      exited = { code, signal: sig };
      resolve();
    });
    child.once('error', (err) => {
      logBuf += `[harness] spawn error: ${String(err)}\n`;
      exited = { code: 127, signal: null };
      resolve();
    });
  });
  const pid = child.pid ?? -1;

  // Namespace identity + known processes, for cleanup even if dockerd dies first.
  let ns: string | undefined;
  const known = new Map<number, ProcInfo>();
  const remember = (): void => {
    const self = readStat(pid);
    if (self) known.set(pid, self);
    if (!ns) {
      const n = mntNs(pid);
      if (n && n !== mntNs(process.pid)) ns = n;
    }
    for (const p of descendants(pid)) known.set(p.pid, p);
    if (ns) for (const p of pidsInNamespace(ns)) known.set(p.pid, p);
  };

  let stopped = false;
  const killAllSync = (): void => {
    remember();
    for (const p of known.values()) signal(p, 'SIGKILL');
  };
  const onExit = (): void => {
    if (stopped) return;
    stopped = true;
    killAllSync();
    // best effort, synchronous: processes were SIGKILLed just now, namespace mounts go with them
    for (const m of mountsUnder(baseDir)) spawnSyncQuiet('umount', ['-l', m]);
    try {
      fsSync.rmSync(baseDir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // ignore
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    onExit();
    // if we were the only listener, restore default behaviour
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.once('exit', onExit);
  const sigs: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of sigs) process.once(s, onSignal);
  const unregister = (): void => {
    process.removeListener('exit', onExit);
    for (const s of sigs) process.removeListener(s, onSignal);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    unregister();
    remember();
    const dockerdInfo = known.get(pid);
    if (!exited && dockerdInfo) {
      signal(dockerdInfo, 'SIGTERM');
      await within(exitPromise, 15_000);
      if (!exited) {
        signal(dockerdInfo, 'SIGKILL');
        await within(exitPromise, 5_000);
      }
    }
    // leftovers: managed containerd (normally stopped by dockerd), shims, anything in the namespace
    if (ns) for (const p of pidsInNamespace(ns)) known.set(p.pid, p);
    const left = [...known.values()].filter(sameProcessAlive);
    if (left.length) {
      for (const p of left) signal(p, 'SIGTERM');
      if (!(await waitGone(left, 5_000))) {
        for (const p of left) signal(p, 'SIGKILL');
        await waitGone(left, 5_000);
      }
    }
    // mounts live in the private namespace and die with it; this only matters if something leaked
    for (const m of mountsUnder(baseDir)) await run('umount', ['-l', m], { timeoutMs: 10_000 });
    await fs.rm(baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  };

  // ---- wait for readiness
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  let ready = false;
  while (Date.now() < deadline && !exited) {
    if (await ping(socket)) {
      ready = true;
      break;
    }
    remember();
    await sleep(100);
  }
  if (!ready) {
    const why = exited
      ? `dockerd exited early (code ${exited.code}, signal ${exited.signal})`
      : `dockerd not ready after ${timeoutMs} ms`;
    const logs = logBuf;
    await stop();
    const failure = logs
      .split('\n')
      .filter((l) => /failed to start daemon|level=(fatal|error)/.test(l))
      .join('\n');
    throw new DockerdStartError(`${why} [storage-driver=${driver}]\n${failure ? `${failure}\n--- log tail ---\n` : ''}${logs.slice(-8000)}`, failure);
  }
  remember();

  const docker = (args: string[], o?: { timeoutMs?: number }): Promise<DockerResult> =>
    run(cli, ['-H', `unix://${socket}`, ...args], { env, timeoutMs: o?.timeoutMs ?? 120_000 });

  return {
    pid,
    socket,
    docker,
    logs: () => logBuf,
    stop,
    storageDriver: driver,
    baseDir,
    proxyPort,
    namespacePids: () => (ns ? pidsInNamespace(ns).map((p) => p.pid) : []),
  };
}

function spawnSyncQuiet(cmd: string, args: string[]): void {
  try {
    spawnSync(cmd, args, { stdio: 'ignore', timeout: 5000 });
  } catch {
    // ignore
  }
}
