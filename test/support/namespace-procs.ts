// What the containerd and podman harnesses share: running commands with a
// bound, and finding, signalling and cleaning up the processes of a private
// mount namespace. A process is identified by PID + start time, so a reused
// PID is never signalled.
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import * as fsSync from 'node:fs';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** f(), or undefined when it throws: /proc entries and files vanish under our feet. */
export function attempt<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

export const which = (name: string): string | undefined =>
  ['/usr/bin/', '/usr/sbin/', '/bin/', '/sbin/'].map((d) => d + name).find((p) => attempt(() => fsSync.accessSync(p, fsConstants.X_OK) ?? true));

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs a command to completion; never rejects: a timeout is code 124 (SIGKILL), a spawn error 127. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const errb: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => errb.push(d));
    let failed = 0;
    const timer = setTimeout(() => {
      failed = 124;
      errb.push(Buffer.from(`\n[harness] ${cmd} ${args.slice(-3).join(' ')} timed out after ${timeoutMs} ms`));
      if (child.pid !== undefined) attempt(() => process.kill(child.pid as number, 'SIGKILL'));
    }, timeoutMs);
    child.once('error', (err) => {
      failed ||= 127; // 'close' still follows a spawn error
      errb.push(Buffer.from(String(err)));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: failed || (code ?? 128), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(errb).toString('utf8') });
    });
  });
}

/** Whether this process may create a private mount namespace; the reason if not. */
export async function mountNamespaceUnavailable(unshare: string): Promise<string | null> {
  const r = await run(unshare, ['--mount', '--propagation', 'private', '--', 'true'], process.env, 10_000);
  return r.code === 0 ? null : `cannot create a mount namespace: ${r.stderr.trim()}`;
}

export interface Proc {
  pid: number;
  start: string;
}

export function proc(pid: number): Proc | undefined {
  const stat = attempt(() => fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8')) ?? '';
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // comm may contain ') '
  return stat && rest[0] !== 'Z' ? { pid, start: rest[19] ?? '' } : undefined;
}

export const mntNs = (pid: number): string | undefined => attempt(() => fsSync.readlinkSync(`/proc/${pid}/ns/mnt`));

export function inNamespace(ns: string | undefined): Proc[] {
  if (!ns || ns === mntNs(process.pid)) return []; // never match our own namespace
  return fsSync
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e) && mntNs(Number(e)) === ns)
    .map((e) => proc(Number(e)))
    .filter((p): p is Proc => p !== undefined);
}

export const alive = (p: Proc): boolean => proc(p.pid)?.start === p.start;
export const kill = (p: Proc, sig: NodeJS.Signals): void => void (alive(p) && attempt(() => process.kill(p.pid, sig)));

export async function waitGone(procs: Proc[], ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(50)) if (!procs.some(alive)) return true;
  return !procs.some(alive);
}

export interface NamespaceGuard {
  /** Every process seen in the namespace so far, the root one included. */
  known: Map<number, Proc>;
  /** Records the namespace's processes while they live, for cleanup after the root one dies. */
  remember(): void;
  /** The namespace, once the root process entered it. */
  namespace(): string | undefined;
  /** PIDs living in the namespace now. */
  pids(): number[];
  /** Ends the guard before an orderly stop; false if it already ran (or was released). */
  release(): boolean;
}

/**
 * Remembers the processes of the namespace `rootPid` lives in, and kills them
 * and removes `baseDir` if the test process exits or is signalled first.
 */
export function guardNamespace(rootPid: number, baseDir: string): NamespaceGuard {
  let ns: string | undefined;
  const known = new Map<number, Proc>();
  const remember = (): void => {
    const self = proc(rootPid);
    if (self) known.set(rootPid, self);
    const n = mntNs(rootPid);
    if (!ns && n && n !== mntNs(process.pid)) ns = n;
    for (const p of inNamespace(ns)) known.set(p.pid, p);
  };
  let done = false;
  const onExit = (): void => {
    if (done) return;
    done = true;
    remember();
    for (const p of known.values()) kill(p, 'SIGKILL');
    attempt(() => fsSync.rmSync(baseDir, { recursive: true, force: true }));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const onSignal = (sig: NodeJS.Signals): void => {
    onExit();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig); // keep the default behaviour
  };
  process.once('exit', onExit);
  for (const s of signals) process.once(s, onSignal);
  return {
    known,
    remember,
    namespace: () => ns,
    pids: () => inNamespace(ns).map((p) => p.pid),
    release: () => {
      if (done) return false;
      done = true;
      process.removeListener('exit', onExit);
      for (const s of signals) process.removeListener(s, onSignal);
      return true;
    },
  };
}

/** SIGTERM, then SIGKILL, every remembered process still alive. */
export async function stopAll(guard: NamespaceGuard): Promise<void> {
  guard.remember();
  const left = [...guard.known.values()].filter(alive);
  for (const p of left) kill(p, 'SIGTERM');
  if (!(await waitGone(left, 5_000))) for (const p of left) kill(p, 'SIGKILL');
  await waitGone(left, 5_000);
}
