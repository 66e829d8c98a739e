/**
 * Test harness: a real podman (Debian 4.3) pulling through registries.conf mirrors, isolated like
 * containerd.ts. podman has no daemon, so a holder process (`sleep`, bounded lifetime) keeps a private
 * mount namespace alive (unshare, no --fork: the spawned PID is the holder's) with tmpfs on /run and
 * /dev/shm, /etc/resolv.conf -> "nameserver 127.0.0.1", localhost-only /etc/hosts, and temp dirs over
 * /etc/containers (our registries.conf, policy.json, storage.conf, containers.conf; no drop-ins from
 * the host) and /var/lib/containers (the blob-info cache). Every podman command runs in that namespace
 * (nsenter, no fork: the spawned PID is podman's) with HTTP(S)_PROXY at a closed loopback port, NO_PROXY
 * for loopback, and its graph root, run root, libpod tmpdir, TMPDIR (image copies) and HOME in one temp dir.
 */
import { spawn } from 'node:child_process';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { findClosedPort } from './dockerd.js';
import { guardNamespace, mountNamespaceUnavailable, run, sleep, stopAll, which, type CommandResult } from './namespace-procs.js';

export type PodmanStorageDriver = 'overlay' | 'vfs';

export type PodmanResult = CommandResult;

export interface PodmanHandle {
  /** The namespace holder; podman commands come and go. */
  holderPid: number;
  /** Temp dir with storage, configs and temp files; removed by stop(). */
  baseDir: string;
  /** The registries.conf podman reads (CONTAINERS_REGISTRIES_CONF, and /etc/containers/registries.conf inside). */
  registriesConf: string;
  storageDriver: PodmanStorageDriver;
  proxyPort: number; // the closed loopback port used as HTTP(S)_PROXY
  /** `podman <private storage flags> ...args` in the namespace; never rejects, timeout (default 60 s) -> code 124. */
  podman(args: string[], opts?: { timeoutMs?: number }): Promise<PodmanResult>;
  /** A path inside the namespace (a `podman image mount` point), as seen from this process. */
  nsPath(p: string): string;
  namespacePids(): number[];
  /** Idempotent: kills everything in the namespace, removes the temp dir. */
  stop(): Promise<void>;
}

export interface StartPodmanOptions {
  /** registries.conf contents; see mirrorRegistriesConf(). */
  registriesConf: string;
  /** Default: $E2E_PODMAN_STORAGE_DRIVER (not STEVEDORE_*: the mirror refuses unknown STEVEDORE_ variables), else overlay when it works on the temp dir's filesystem, else vfs. */
  storageDriver?: PodmanStorageDriver;
  /** The holder exits by itself after this long, should this process die without cleaning up. */
  holderLifetimeSeconds?: number;
}

export interface MirrorEntry {
  /** What clients ask for, e.g. "docker.io". */
  prefix: string;
  /** host:port[/path] of the mirror. */
  mirror: string;
}

/** registries.conf: each prefix keeps its real location, with one insecure (plain HTTP) mirror in front. */
export function mirrorRegistriesConf(entries: MirrorEntry[]): string {
  const q = (s: string): string => JSON.stringify(s);
  const blocks = entries.map((e) =>
    ['[[registry]]', `prefix = ${q(e.prefix)}`, `location = ${q(e.prefix)}`, '', '[[registry.mirror]]', `location = ${q(e.mirror)}`, 'insecure = true', ''].join('\n'));
  return ['unqualified-search-registries = []', 'short-name-mode = "disabled"', '', ...blocks].join('\n');
}

const NS_SCRIPT = [
  'set -e; base="$1"; shift',
  'mount -t tmpfs -o mode=755,size=16m stevedore-run /run',
  // a resolv.conf symlink into /run now dangles: recreate its target so the bind has something to cover
  'if [ -L /etc/resolv.conf ] && [ ! -e /etc/resolv.conf ]; then t=$(readlink -m /etc/resolv.conf); case "$t" in /run/*) mkdir -p "${t%/*}"; : > "$t";; esac; fi',
  'mount --bind "$base/resolv.conf" /etc/resolv.conf',
  'mount --bind "$base/hosts" /etc/hosts',
  'mount --bind "$base/etc" /etc/containers',
  // podman's SHM locks (/dev/shm/libpod_lock) and containers/image's blob-info cache (fixed at
  // /var/lib/containers/cache for root) stay in the namespace; /var/lib/containers is overlaid
  // rather than created when the host has none
  'mount -t tmpfs -o mode=1777,size=16m stevedore-shm /dev/shm',
  'if [ -d /var/lib/containers ]; then mount --bind "$base/var-lib-containers" /var/lib/containers',
  'else mount -t overlay stevedore-var-lib -o "lowerdir=/var/lib,upperdir=$base/var-lib/upper,workdir=$base/var-lib/work" /var/lib; fi',
  'echo stevedore-namespace-ready',
  'exec "$@"',
].join('\n');

const BIN = { podman: which('podman'), unshare: which('unshare'), nsenter: which('nsenter'), sleep: which('sleep') };
const bin = (name: keyof typeof BIN): string => BIN[name] ?? name;

/** Why a real podman cannot be used here, or null if it can. */
export async function podmanUnavailableReason(): Promise<string | null> {
  if (process.platform !== 'linux') return `podman harness needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'podman harness needs root (mount namespaces, rootful storage)';
  for (const [name, at] of Object.entries(BIN)) if (!at) return `${name} not installed${name === 'podman' ? ' (apt-get install podman)' : ''}`;
  // Never created on the host: the namespace only covers it.
  if (!fsSync.existsSync('/etc/containers')) return '/etc/containers missing (containers-common not installed)';
  if (tmpdir().startsWith('/run/') || tmpdir() === '/run') return `tmpdir() ${tmpdir()} is under /run, which the namespace hides; set TMPDIR`;
  return mountNamespaceUnavailable(bin('unshare'));
}

async function writeConfigs(base: string, driver: PodmanStorageDriver, registriesConf: string): Promise<void> {
  const q = (s: string): string => JSON.stringify(s);
  const etc = path.join(base, 'etc');
  await fs.writeFile(path.join(etc, 'registries.conf'), registriesConf);
  await fs.writeFile(path.join(etc, 'storage.conf'), [
    '[storage]', `driver = ${q(driver)}`, `graphroot = ${q(path.join(base, `storage-${driver}`))}`, `runroot = ${q(path.join(base, `run-${driver}`))}`, '',
  ].join('\n'));
}

export async function startPodman(opts: StartPodmanOptions): Promise<PodmanHandle> {
  const reason = await podmanUnavailableReason();
  if (reason) throw new Error(`startPodman: ${reason}`);
  const baseDir = await fs.mkdtemp(path.join(tmpdir(), 'spodman-'));
  const etc = path.join(baseDir, 'etc');
  for (const d of ['etc/registries.conf.d', 'etc/registries.d', 'etc/certs.d', 'var-lib-containers', 'var-lib/upper', 'var-lib/work', 'home', 'tmp', 'libpod-tmp']) await fs.mkdir(path.join(baseDir, d), { recursive: true });
  await fs.writeFile(path.join(baseDir, 'resolv.conf'), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  await fs.writeFile(path.join(baseDir, 'hosts'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  await fs.writeFile(path.join(etc, 'policy.json'), '{"default":[{"type":"insecureAcceptAnything"}]}\n');
  // signatures are neither looked up nor written on the host's /var/lib/containers/sigstore
  await fs.writeFile(path.join(etc, 'registries.d', 'default.yaml'), `default-docker:\n  lookaside: file://${path.join(baseDir, 'sigstore')}\n`);
  await fs.writeFile(path.join(etc, 'containers.conf'), [
    '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "none"',
    `tmp_dir = ${JSON.stringify(path.join(baseDir, 'libpod-tmp'))}`,
    `image_copy_tmp_dir = ${JSON.stringify(path.join(baseDir, 'tmp'))}`, '',
  ].join('\n'));
  const forced = opts.storageDriver ?? (process.env['E2E_PODMAN_STORAGE_DRIVER'] as PodmanStorageDriver | undefined);
  if (forced !== undefined && forced !== 'overlay' && forced !== 'vfs') throw new Error(`startPodman: unknown storage driver ${String(forced)}`);
  let driver: PodmanStorageDriver = forced ?? 'overlay';
  await writeConfigs(baseDir, driver, opts.registriesConf);

  const proxyPort = await findClosedPort();
  const proxy = `http://127.0.0.1:${proxyPort}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(CONTAINERS_|DOCKER_|REGISTRY_AUTH_FILE$|XDG_|BUILDAH_|STORAGE_)|^(https?|all|no)_proxy$/i.test(k)) env[k] = v;
  }
  Object.assign(env, {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: path.join(baseDir, 'home'),
    TMPDIR: path.join(baseDir, 'tmp'),
    CONTAINERS_CONF: path.join(etc, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: path.join(etc, 'storage.conf'),
    CONTAINERS_REGISTRIES_CONF: path.join(etc, 'registries.conf'),
    HTTPS_PROXY: proxy, HTTP_PROXY: proxy, https_proxy: proxy, http_proxy: proxy,
    NO_PROXY: '127.0.0.1,localhost,::1', no_proxy: '127.0.0.1,localhost,::1',
  });

  const lifetime = String(opts.holderLifetimeSeconds ?? 600);
  const argv = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', NS_SCRIPT, 'stevedore-podman', baseDir, bin('sleep'), lifetime];
  const child = spawn(bin('unshare'), argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let holderOut = '';
  child.stdout?.on('data', (d: Buffer) => void (holderOut = (holderOut + d.toString('utf8')).slice(-8192)));
  child.stderr?.on('data', (d: Buffer) => void (holderOut = (holderOut + d.toString('utf8')).slice(-8192)));
  let exited = false;
  child.once('exit', () => void (exited = true));
  child.once('error', (err) => {
    holderOut += `[harness] spawn error: ${String(err)}\n`;
    exited = true;
  });
  const holderPid = child.pid ?? -1;

  const guard = guardNamespace(holderPid, baseDir);
  const { remember } = guard;

  const stop = async (): Promise<void> => {
    if (!guard.release()) return;
    await stopAll(guard);
    // every mount (tmpfs, binds, overlay image mounts) was private to the namespace and died with it
    await fs.rm(baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  };

  for (const deadline = Date.now() + 10_000; !exited && !holderOut.includes('stevedore-namespace-ready') && Date.now() < deadline;) await sleep(20);
  remember();
  if (exited || !holderOut.includes('stevedore-namespace-ready') || !guard.namespace()) {
    await stop();
    throw new Error(`podman namespace did not come up:\n${holderOut}`);
  }

  const podman = (args: string[], o: { timeoutMs?: number } = {}): Promise<PodmanResult> => {
    const global = [
      '--root', path.join(baseDir, `storage-${driver}`), '--runroot', path.join(baseDir, `run-${driver}`),
      '--tmpdir', path.join(baseDir, 'libpod-tmp'), '--storage-driver', driver,
      '--cgroup-manager', 'cgroupfs', '--events-backend', 'none',
    ];
    return run(bin('nsenter'), ['--target', String(holderPid), '--mount', '--', bin('podman'), ...global, ...args], env, o.timeoutMs ?? 60_000);
  };

  if (!forced) {
    const info = await podman(['info', '--format', '{{.Store.GraphDriverName}}'], { timeoutMs: 20_000 });
    if (info.code !== 0 || info.stdout.trim() !== 'overlay') {
      driver = 'vfs'; // fresh graph root: a root keeps the driver it was created with
      await writeConfigs(baseDir, driver, opts.registriesConf);
    }
  }
  const check = await podman(['info', '--format', '{{.Store.GraphDriverName}} {{.Store.GraphRoot}}'], { timeoutMs: 20_000 });
  if (check.code !== 0 || check.stdout.trim() !== `${driver} ${path.join(baseDir, `storage-${driver}`)}`) {
    await stop();
    throw new Error(`podman info failed (driver ${driver}, code ${check.code}):\n${check.stdout}\n${check.stderr}`);
  }
  return {
    holderPid, baseDir, proxyPort, podman, stop,
    registriesConf: path.join(etc, 'registries.conf'),
    get storageDriver(): PodmanStorageDriver {
      return driver;
    },
    nsPath: (p: string) => path.join(`/proc/${holderPid}/root`, p),
    namespacePids: guard.pids,
  };
}
