// A cold pull request by request, as skopeo makes it: the ping, the token
// (when the registry asks for one), the manifest by tag, the platform's
// manifest by digest (from an index), the config and the layers (several at
// once). Each request's time to first byte and to last byte, from the start
// of the pull, so serial steps a server adds show as later starts.
import { Agent, request } from 'undici';

export interface RequestTiming {
  step: string;
  /** Milliseconds from the start of the pull. */
  startMs: number;
  firstByteMs: number;
  lastByteMs: number;
  bytes: number;
}

export interface TimedPull {
  totalMs: number;
  requests: RequestTiming[];
}

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');
/** skopeo (containers/image) fetches this many layers at once. */
const LAYERS_AT_ONCE = 6;

interface Descriptor {
  digest: string;
  size: number;
  platform?: { os: string; architecture: string };
}

/** Pulls `repo:tag` from `base` (http://host:port), timing every request; credentials as user:password. */
export async function timedPull(base: string, repo: string, tag: string, credentials?: string): Promise<TimedPull> {
  const agent = new Agent({ connections: LAYERS_AT_ONCE + 2, keepAliveTimeout: 30_000 });
  const started = performance.now();
  const requests: RequestTiming[] = [];
  let authorization: string | undefined;
  const get = async (step: string, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> => {
    const startMs = performance.now() - started;
    let target = url;
    // Redirects (a CDN) are followed, as clients do; the step ends with the last answer's body.
    for (let hop = 0; hop < 5; hop++) {
      const res = await request(target, { dispatcher: agent, headers: { ...headers, ...(authorization && target.startsWith(base) ? { authorization } : {}) } });
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        target = new URL(String(res.headers.location), target).toString();
        continue;
      }
      const firstByteMs = performance.now() - started;
      const chunks: Buffer[] = [];
      let bytes = 0;
      const keep = !step.startsWith('layer');
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        if (keep) chunks.push(chunk);
      }
      requests.push({ step, startMs, firstByteMs, lastByteMs: performance.now() - started, bytes });
      return { status: res.statusCode, body: Buffer.concat(chunks), headers: res.headers };
    }
    throw new Error(`${step}: too many redirects from ${url}`);
  };
  try {
    const ping = await get('ping', `${base}/v2/`);
    if (ping.status === 401) {
      const challenge = String(ping.headers['www-authenticate'] ?? '');
      const realm = /realm="([^"]+)"/.exec(challenge)?.[1];
      const service = /service="([^"]+)"/.exec(challenge)?.[1];
      if (!realm) throw new Error(`no realm in ${challenge}`);
      const query = new URLSearchParams({ scope: `repository:${repo}:pull`, ...(service ? { service } : {}) });
      const basic = credentials ? { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` } : undefined;
      const token = await get('token', `${realm}?${query}`, basic);
      const parsed = JSON.parse(token.body.toString()) as { token?: string; access_token?: string };
      authorization = `Bearer ${parsed.token ?? parsed.access_token}`;
    }
    let manifest = await get('manifest by tag', `${base}/v2/${repo}/manifests/${tag}`, { accept: ACCEPT });
    if (manifest.status !== 200) throw new Error(`manifest ${repo}:${tag}: ${manifest.status}`);
    let parsed = JSON.parse(manifest.body.toString()) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (parsed.manifests) {
      const chosen = parsed.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64') ?? parsed.manifests[0]!;
      manifest = await get('manifest by digest', `${base}/v2/${repo}/manifests/${chosen.digest}`, { accept: ACCEPT });
      parsed = JSON.parse(manifest.body.toString()) as typeof parsed;
    }
    const blob = async (step: string, d: Descriptor): Promise<void> => {
      const res = await get(step, `${base}/v2/${repo}/blobs/${d.digest}`);
      if (res.status !== 200 || requests.at(-1)!.bytes !== d.size) throw new Error(`${step} ${d.digest}: ${res.status}, ${requests.at(-1)!.bytes} of ${d.size} bytes`);
    };
    await blob('config', parsed.config!);
    const layers = parsed.layers ?? [];
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(LAYERS_AT_ONCE, layers.length) }, async () => {
        for (let i = next++; i < layers.length; i = next++) await blob(`layer ${i + 1}`, layers[i]!);
      }),
    );
    return { totalMs: performance.now() - started, requests };
  } finally {
    await agent.close();
  }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : sorted[Math.floor((sorted.length - 1) / 2)]!;
};

/** Median per step over rounds, for each server: rows of a markdown table. */
export function breakdownTable(label: string, rounds: Record<string, TimedPull[]>): string[] {
  const servers = Object.keys(rounds);
  const steps = [...new Set(Object.values(rounds).flatMap((list) => list.flatMap((p) => p.requests.map((r) => r.step))))];
  const cell = (server: string, step: string, pick: (r: RequestTiming) => number): string => {
    const values = rounds[server]!.flatMap((p) => p.requests.filter((r) => r.step === step).map(pick));
    return values.length === 0 ? '–' : median(values).toFixed(0);
  };
  const lines = [
    `\n### Cold pull request by request: ${label} (median of ${rounds[servers[0]!]!.length} rounds; ms from the start of the pull)\n`,
    `| request | ${servers.map((s) => `${s} start / first byte / last byte`).join(' | ')} |`,
    `|---|${servers.map(() => '---').join('|')}|`,
  ];
  for (const step of steps) {
    lines.push(`| ${step} | ${servers.map((s) => `${cell(s, step, (r) => r.startMs)} / ${cell(s, step, (r) => r.firstByteMs)} / ${cell(s, step, (r) => r.lastByteMs)}`).join(' | ')} |`);
  }
  lines.push(`| **whole pull** | ${servers.map((s) => `**${median(rounds[s]!.map((p) => p.totalMs)).toFixed(0)}**`).join(' | ')} |`);
  return lines;
}

export { median };
