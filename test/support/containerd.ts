/**
 * Test harness: a real containerd (Debian 1.6) driven with `ctr`, isolated like dockerd.ts:
 * private mount namespace (unshare, no --fork: the spawned PID is containerd's) with a tmpfs
 * on /run and /etc/resolv.conf -> "nameserver 127.0.0.1"; HTTP(S)_PROXY at a closed loopback
 * port, NO_PROXY for loopback. Root, state, socket and config live in one short temp dir.
 * ctr runs inside the same namespace (nsenter), because ctr, not the daemon, does the fetching.
 */
import { spawn } from 'node:child_process';
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { findClosedPort } from './dockerd.js';
import { guardNamespace, kill, mountNamespaceUnavailable, run, sleep, stopAll, waitGone, which, type CommandResult } from './namespace-procs.js';

export type Snapshotter = 'overlayfs' | 'native';

export type CtrResult = CommandResult;

export interface ContainerdHandle {
  pid: number; // containerd itself
  address: string; // gRPC socket
  /** Temp dir with root, state, socket, config; removed by stop(). Visible inside the namespace. */
  baseDir: string;
  snapshotter: Snapshotter;
  proxyPort: number; // the closed loopback port used as HTTP(S)_PROXY
  /** `ctr --address <sock> [-n namespace] ...`; never rejects, timeout (default 60 s) -> code 124. */
  ctr(args: string[], opts?: { timeoutMs?: number; namespace?: string }): Promise<CtrResult>;
  logs(): string; // containerd's stdout/stderr so far (capped)
  namespacePids(): number[]; // PIDs in containerd's mount namespace
  /** Idempotent: kills containerd and everything in its namespace, removes the temp dir. */
  stop(): Promise<void>;
}

export interface StartContainerdOptions {
  snapshotter?: Snapshotter; // default: overlayfs when its plugin loads, else native
  debug?: boolean;
  startTimeoutMs?: number; // readiness bound, default 30 000
}

// Nothing here should touch the network, devices, cgroups or host paths like /opt/containerd.
const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri', 'io.containerd.internal.v1.opt', 'io.containerd.internal.v1.tracing',
  'io.containerd.tracing.processor.v1.otlp', 'io.containerd.monitor.v1.cgroups',
  'io.containerd.runtime.v1.linux', 'io.containerd.runtime.v2.task', 'io.containerd.service.v1.tasks-service',
  'io.containerd.grpc.v1.tasks', 'io.containerd.internal.v1.restart', 'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.aufs',
];
const NS_SCRIPT = [
  'set -e; base="$1"; shift',
  'mount -t tmpfs -o mode=755,size=16m stevedore-run /run',
  // a resolv.conf symlink into /run now dangles: recreate its target so the bind has something to cover
  'if [ -L /etc/resolv.conf ] && [ ! -e /etc/resolv.conf ]; then t=$(readlink -m /etc/resolv.conf); case "$t" in /run/*) mkdir -p "${t%/*}"; : > "$t";; esac; fi',
  'mount --bind "$base/resolv.conf" /etc/resolv.conf',
  'mount --bind "$base/hosts" /etc/hosts',
  'exec "$@"',
].join('\n');

const BIN = { containerd: which('containerd'), ctr: which('ctr'), unshare: which('unshare'), nsenter: which('nsenter') };
const bin = (name: keyof typeof BIN): string => BIN[name] ?? name;

/** Why a real containerd cannot be used here, or null if it can. */
export async function containerdUnavailableReason(): Promise<string | null> {
  if (process.platform !== 'linux') return `containerd harness needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'containerd harness needs root (mount namespaces, containerd)';
  for (const [name, at] of Object.entries(BIN)) if (!at) return `${name} not installed`;
  return mountNamespaceUnavailable(bin('unshare'));
}

export async function startContainerd(opts: StartContainerdOptions = {}): Promise<ContainerdHandle> {
  const reason = await containerdUnavailableReason();
  if (reason) throw new Error(`startContainerd: ${reason}`);
  // /tmp, not os.tmpdir(): short for unix sockets (<dir>/containerd.sock.ttrpc < 108) and not under /run
  const baseDir = await fs.mkdtemp('/tmp/sctd-');
  const address = path.join(baseDir, 'containerd.sock');
  const configFile = path.join(baseDir, 'config.toml');
  await fs.writeFile(path.join(baseDir, 'resolv.conf'), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  await fs.writeFile(path.join(baseDir, 'hosts'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  await fs.writeFile(configFile, [
    'version = 2',
    `disabled_plugins = ${JSON.stringify(DISABLED_PLUGINS)}`,
    // isolated: a second ctr namespace really downloads again instead of borrowing content
    '[plugins."io.containerd.metadata.v1.bolt"]',
    '  content_sharing_policy = "isolated"',
    '',
  ].join('\n'));

  const proxyPort = await findClosedPort();
  const proxy = `http://127.0.0.1:${proxyPort}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(DOCKER_|CONTAINERD_)|^(https?|all|no)_proxy$/i.test(k)) env[k] = v;
  Object.assign(env, {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HTTPS_PROXY: proxy, HTTP_PROXY: proxy, https_proxy: proxy, http_proxy: proxy,
    NO_PROXY: '127.0.0.1,localhost,::1', no_proxy: '127.0.0.1,localhost,::1',
  });
  const args = ['--config', configFile, '--root', path.join(baseDir, 'root'), '--state', path.join(baseDir, 'state'), '--address', address];
  if (opts.debug) args.push('--log-level', 'debug');
  const argv = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', NS_SCRIPT, 'stevedore-containerd', baseDir, bin('containerd'), ...args];
  const child = spawn(bin('unshare'), argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let logBuf = '';
  const onData = (d: Buffer): void => {
    logBuf = (logBuf + d.toString('utf8')).slice(-4 * 1024 * 1024);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      logBuf += `[harness] spawn error: ${String(err)}\n`;
      resolve();
    });
  }).then(() => {
    exited = true;
  });
  const pid = child.pid ?? -1;

  // Remember the namespace and its processes while they live, for cleanup after containerd dies.
  const guard = guardNamespace(pid, baseDir);
  const { known, remember } = guard;

  const stop = async (): Promise<void> => {
    if (!guard.release()) return;
    remember();
    const self = known.get(pid);
    if (!exited && self) {
      kill(self, 'SIGTERM');
      if (!(await waitGone([self], 10_000))) kill(self, 'SIGKILL');
      await Promise.race([exitPromise, sleep(5_000)]);
    }
    await stopAll(guard); // stray ctr processes
    // its mounts were private to the namespace and died with it
    await fs.rm(baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  };

  let snapshotter: Snapshotter = opts.snapshotter ?? 'overlayfs';
  const ctr = (ctrArgs: string[], o: { timeoutMs?: number; namespace?: string } = {}): Promise<CtrResult> =>
    run(bin('nsenter'), ['--target', String(pid), '--mount', '--', bin('ctr'), '--address', address,
      ...(o.namespace ? ['--namespace', o.namespace] : []), ...ctrArgs],
    { ...env, CONTAINERD_SNAPSHOTTER: snapshotter }, o.timeoutMs ?? 60_000);

  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  let ready = false;
  for (const deadline = Date.now() + startTimeoutMs; !ready && !exited && Date.now() < deadline; await sleep(100)) {
    remember();
    ready = fsSync.existsSync(address) && (await ctr(['version'], { timeoutMs: 5_000 })).code === 0;
  }
  if (ready && !opts.snapshotter) {
    const plugins = (await ctr(['plugins', 'ls'], { timeoutMs: 10_000 })).stdout;
    if (!/^io\.containerd\.snapshotter\.v1\s+overlayfs\s+\S+\s+ok\s*$/m.test(plugins)) snapshotter = 'native';
  }
  if (!ready) {
    const logs = logBuf;
    await stop();
    throw new Error(`containerd ${exited ? 'exited early' : `not ready after ${startTimeoutMs} ms`}\n${logs.slice(-6000)}`);
  }
  return {
    pid, address, baseDir, proxyPort, ctr, stop, snapshotter,
    logs: () => logBuf,
    namespacePids: guard.pids,
  };
}
