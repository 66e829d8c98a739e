// The benchmark scenarios. Each runs against the peer and against Stevedore
// on the same upstream and data, and returns rows for the table.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import { skopeo } from '../../test/support/skopeo.js';
import type { HubCounts, HubProcess } from './servers.js';

export interface Row {
  scenario: string;
  metric: string;
  peer: number | string;
  stevedore: number | string;
  /** How many times better Stevedore is (higher is better), when comparable. */
  ratio?: string;
  reference?: string;
  /** Peak resident memory (MiB) of each server while the row's figures were measured; a cluster's largest replica. */
  rss?: Rss;
}

export interface Rss {
  peer?: number;
  stevedore: number;
}

/** The RSS column: peer / Stevedore in MiB, – where the peer was not measured. */
export const rssCell = (rss: Rss | undefined): string => (rss ? `${rss.peer ?? '–'} / ${rss.stevedore}` : '');

export interface Target {
  name: 'peer' | 'stevedore';
  url: string;
  pid: number;
}

const scratch = mkdtempSync(join(tmpdir(), 'bench-pulls-'));
export const cleanupScratch = (): void => rmSync(scratch, { recursive: true, force: true });

export async function delta(hub: HubProcess, work: () => Promise<unknown>): Promise<{ ms: number; counts: HubCounts }> {
  await hub.reset();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  return { ms, counts: await hub.stats() };
}

/** skopeo copy to a dir: (and then delete it, disk is not what is measured). */
export async function skopeoPull(host: string, ref: string, credentials?: string): Promise<void> {
  const dest = mkdtempSync(join(scratch, 'pull-'));
  try {
    const args = ['copy', '--src-tls-verify=false', ...(credentials ? ['--src-creds', credentials] : []), `docker://${host}/${ref}`, `dir:${dest}`];
    const result = await skopeo(args, 600_000);
    if (result.code !== 0) throw new Error(`skopeo ${ref} via ${host} failed: ${result.stderr.slice(0, 500)}`);
  } finally {
    rmSync(dest, { recursive: true, force: true });
  }
}

/** n parallel GETs of a URL, bodies counted and dropped; returns ms and total bytes. */
/**
 * n parallel GETs of one blob with curl to /dev/null, checking status and size:
 * curl costs little CPU, so on 2 cores the figure is the server's, not the client's.
 */
const execFileAsync = promisify(execFile);

export async function parallelGets(url: string, n: number, expectedBytes: number, options: { followRedirects?: boolean } = {}): Promise<number> {
  const started = performance.now();
  await Promise.all(
    Array.from({ length: n }, async () => {
      const { stdout } = await execFileAsync('curl', ['-sS', ...(options.followRedirects ? ['-L'] : []), '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], { timeout: 600_000 });
      const [status, bytes] = stdout.trim().split(' ').map(Number);
      if (status !== 200 || bytes !== expectedBytes) throw new Error(`${url}: ${status}, ${bytes} of ${expectedBytes} bytes`);
    }),
  );
  return performance.now() - started;
}

export interface Load {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  errors: number;
}

/** 64 connections for a few seconds: autocannon for GET; HEAD with undici, since autocannon waits for a HEAD body. */
export async function hotLoad(url: string, method: 'GET' | 'HEAD', headers: Record<string, string>, seconds: number): Promise<Load> {
  if (method === 'HEAD') return headLoad(url, seconds);
  const result = await autocannon({ url, method, headers, connections: 64, duration: seconds });
  return {
    requestsPerSecond: Math.round(result.requests.average),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
  };
}

async function headLoad(url: string, seconds: number): Promise<Load> {
  const dispatcher = new Agent({ connections: 64 });
  const latencies: number[] = [];
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        try {
          const res = await request(url, { method: 'HEAD', dispatcher });
          await res.body.dump();
          if (res.statusCode !== 200) errors += 1;
        } catch {
          errors += 1;
        }
        latencies.push(performance.now() - started);
      }
    }),
  );
  await dispatcher.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number): number => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0);
  return { requestsPerSecond: Math.round(latencies.length / seconds), p50: at(0.5), p99: at(0.99), errors };
}

export const secs = (ms: number): string => (ms / 1000).toFixed(2);
export const mib = (bytes: number): string => (bytes / 1024 / 1024).toFixed(0);
export const gibps = (bytes: number, ms: number): string => (bytes / 1024 ** 3 / (ms / 1000)).toFixed(2);
/** Peer ÷ Stevedore for costs (time, requests, bytes, memory): above 1 means Stevedore is better. */
export const better = (peer: number, stevedore: number): string => (stevedore === 0 ? (peer === 0 ? '=' : '∞') : `${(peer / stevedore).toFixed(2)}×`);
