// Reads a process's memory and file descriptors from /proc (Linux), for
// load tests that bound the mirror's peak memory and check for fd leaks.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

function statusField(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m?.[1]) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) / 1024;
}

/** Peak resident memory over the process's life (VmHWM), in MiB. */
export const peakRssMiB = (pid: number): number => statusField(pid, 'VmHWM');

/** Resident memory now (VmRSS), in MiB. */
export const rssMiB = (pid: number): number => statusField(pid, 'VmRSS');

/** How many file descriptors the process has open. */
export const openFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/** Open descriptors by kind (socket, pipe, anon_inode:…, or file path), for a failure message. */
export function fdSummary(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const kind = /^(socket|pipe):/.exec(target)?.[1] ?? target.replace(/\[\d+\]$/, '');
    out[kind] = (out[kind] ?? 0) + 1;
  }
  return out;
}

/** Polls until the fd count is at most `limit`, for up to `timeoutMs`; returns the last count. */
export async function waitForFds(pid: number, limit: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let count = openFds(pid);
  while (count > limit && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    count = openFds(pid);
  }
  return count;
}

/** CPU time (user + system) the process has used so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}
