// Starts and measures the processes of the benchmark: the hub double, the
// peer (distribution in proxy mode), Stevedore and nginx. All on 127.0.0.1,
// all stopped by PID.
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startRegistry, type RegistryHandle } from '../../test/support/registry.js';
import { startMirrorProcess, type MirrorProcess } from '../../test/support/stevedore.js';

export interface HubCounts {
  manifestGet: number;
  manifestHead: number;
  blobGet: number;
  blobHead: number;
  tokens: number;
  bytesServed: number;
}

export interface HubProcess {
  url: string;
  pid: number;
  stats(): Promise<HubCounts>;
  reset(): Promise<void>;
  stop(): Promise<void>;
}

export async function startHubProcess(upstream: string, credentials: string): Promise<HubProcess> {
  const child = fork(fileURLToPath(new URL('./hub-process.ts', import.meta.url)), [upstream, credentials], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  let next = 0;
  const call = <T>(cmd: string): Promise<T> =>
    new Promise((resolve) => {
      const id = ++next;
      const onMessage = (m: { id?: number } & T): void => {
        if (m.id !== id) return;
        child.off('message', onMessage);
        resolve(m);
      };
      child.on('message', onMessage);
      child.send({ cmd, id });
    });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('message', (m: { ready?: string }) => (m.ready ? resolve(m.ready) : reject(new Error('hub did not start'))));
    child.once('exit', () => reject(new Error('hub exited')));
  });
  return {
    url,
    pid: child.pid!,
    stats: async () => (await call<{ stats: HubCounts }>('stats')).stats,
    reset: async () => void (await call('reset')),
    stop: async () => {
      await Promise.race([call('stop'), new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

export function startPeer(hubUrl: string, username: string, password: string): Promise<RegistryHandle> {
  return startRegistry({ proxy: { remoteurl: hubUrl, username, password } });
}

export function startStevedore(hubUrl: string, username: string, password: string, extra?: Record<string, unknown>): Promise<MirrorProcess> {
  return freePort().then((port) =>
    startMirrorProcess({ port, compiled: true, extra, upstreams: [{ registry: 'docker.io', url: hubUrl, username, password, timeouts: { body: '300s' } }] }),
  );
}

export interface Nginx {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** nginx serving one directory: the practical ceiling for serving a file from disk here. */
export async function startNginx(root: string): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-nginx-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 2;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 1024; }\nhttp {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  client_body_temp_path ${dir};\n  proxy_temp_path ${dir};\n  fastcgi_temp_path ${dir};\n  uwsgi_temp_path ${dir};\n  scgi_temp_path ${dir};\n  server { listen 127.0.0.1:${port}; root ${root}; }\n}\n`,
  );
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Samples the resident memory of processes (and their children) while work runs; returns peaks in MiB. */
export async function peakRss<T>(pids: Record<string, number>, work: () => Promise<T>): Promise<{ value: T; peaks: Record<string, number> }> {
  const peaks: Record<string, number> = Object.fromEntries(Object.keys(pids).map((k) => [k, 0]));
  const sample = (): void => {
    for (const [name, pid] of Object.entries(pids)) peaks[name] = Math.max(peaks[name]!, rssMiB(pid));
  };
  const timer = setInterval(sample, 100);
  try {
    const value = await work();
    sample();
    return { value, peaks };
  } finally {
    clearInterval(timer);
  }
}

function rssMiB(pid: number): number {
  try {
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    return Math.round(kb / 1024);
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    // Fields after the command name, which sits in parentheses and may hold spaces.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** USER_HZ: /proc counts CPU time in these ticks (100 on Linux everywhere). */
const CLOCK_TICKS = 100;

/** Busy and total jiffies of the whole machine, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const [, ...values] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const ticks = values.map(Number);
  const idle = ticks[3]! + (ticks[4] ?? 0);
  const total = ticks.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** What `work` cost in CPU: seconds for each process named, and how busy the whole machine was (0–1). */
export async function cpuUse<T>(pids: Record<string, number>, work: () => Promise<T>): Promise<{ value: T; seconds: Record<string, number>; machineBusy: number }> {
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const ticks = machineTicks();
  const value = await work();
  const after = machineTicks();
  const seconds = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid) - before[name]!]));
  return { value, seconds, machineBusy: (after.busy - ticks.busy) / Math.max(1, after.total - ticks.total) };
}
