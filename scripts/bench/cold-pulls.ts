// Cold pulls: direct from the hub, through distribution's proxy and through
// Stevedore, each round with empty caches in processes that already served a
// pull (a mirror runs for months). skopeo gives the wall time (median of the
// rounds), and a request-by-request client the breakdown of where it goes.
import { execFileSync } from 'node:child_process';
import type { RegistryHandle } from '../../test/support/registry.js';
import type { MirrorProcess } from '../../test/support/stevedore.js';
import { breakdownTable, median, timedPull, type TimedPull } from './pull-breakdown.js';
import { better, delta, mib, secs, skopeoPull, type Row } from './scenarios.js';
import { cpuUse, peakRss, type HubProcess } from './servers.js';

export interface ColdPullSetup {
  hub: HubProcess;
  user: string;
  password: string;
  /** Fresh servers (empty caches). */
  restart(): Promise<{ peer: RegistryHandle; stevedore: MirrorProcess }>;
  log(line: string): void;
  rounds: number;
}

const host = (url: string): string => url.replace('http://', '');

export async function coldPullRows(setup: ColdPullSetup, images: readonly { label: string; ref: string; bytes: number }[]): Promise<{ rows: Row[]; tables: string[]; stevedoreMs: Record<string, number> }> {
  const { hub, user, password, log } = setup;
  const credentials = `${user}:${password}`;
  const rows: Row[] = [];
  const tables: string[] = [];
  const stevedoreMs: Record<string, number> = {};
  for (const image of images) {
    const [repo, tag] = image.ref.split(':') as [string, string];
    const wall = { direct: [] as number[], peer: [] as number[], stevedore: [] as number[] };
    const peaks = { peer: 0, stevedore: 0 };
    /** Peaks while the request-by-request client pulled. */
    const timedPeaks = { peer: 0, stevedore: 0 };
    const counts = { direct: 0, peer: 0, stevedore: 0 };
    // The mirror's own CPU seconds per pull, and how busy the machine was (all its cores) during each.
    const cpu = { peer: [] as number[], stevedore: [] as number[], directBusy: [] as number[], peerBusy: [] as number[], stevedoreBusy: [] as number[] };
    const timed: Record<'direct' | 'distribution' | 'Stevedore', TimedPull[]> = { direct: [], distribution: [], Stevedore: [] };
    for (let round = 0; round < setup.rounds; round++) {
      log(`cold pull: ${image.label}, round ${round + 1} of ${setup.rounds}`);
      // skopeo, for the wall time.
      let servers = await setup.restart();
      const pids = { peer: servers.peer.pid, stevedore: servers.stevedore.pid };
      for (const url of [hub.url, servers.peer.url, servers.stevedore.url]) await skopeoPull(host(url), 'small/img0:v1', url === hub.url ? credentials : undefined);
      // Each pull starts on a quiet disk: otherwise the one measured last pays for the writeback
      // of what the others wrote (an fsync waits for the journal, which waits for their data).
      quietDisk();
      const directCpu = await cpuUse({}, () => delta(hub, () => skopeoPull(host(hub.url), image.ref, credentials)));
      const direct = directCpu.value;
      quietDisk();
      const peerCpu = await cpuUse(pids, () => peakRss(pids, () => delta(hub, () => skopeoPull(host(servers.peer.url), image.ref))));
      const viaPeer = peerCpu.value;
      quietDisk();
      const usCpu = await cpuUse(pids, () => peakRss(pids, () => delta(hub, () => skopeoPull(host(servers.stevedore.url), image.ref))));
      const viaUs = usCpu.value;
      cpu.directBusy.push(directCpu.machineBusy);
      cpu.peerBusy.push(peerCpu.machineBusy);
      cpu.stevedoreBusy.push(usCpu.machineBusy);
      cpu.peer.push(peerCpu.seconds.peer!);
      cpu.stevedore.push(usCpu.seconds.stevedore!);
      wall.direct.push(direct.ms);
      wall.peer.push(viaPeer.value.ms);
      wall.stevedore.push(viaUs.value.ms);
      counts.direct = direct.counts.blobGet;
      counts.peer = viaPeer.value.counts.blobGet;
      counts.stevedore = viaUs.value.counts.blobGet;
      peaks.peer = Math.max(peaks.peer, viaPeer.peaks.peer!);
      peaks.stevedore = Math.max(peaks.stevedore, viaUs.peaks.stevedore!);
      // The request-by-request client, on empty caches again.
      servers = await setup.restart();
      const timedPids = { peer: servers.peer.pid, stevedore: servers.stevedore.pid };
      for (const url of [hub.url, servers.peer.url, servers.stevedore.url]) await timedPull(url, 'small/img0', 'v1', url === hub.url ? credentials : undefined);
      quietDisk();
      timed.direct.push(await timedPull(hub.url, repo, tag, credentials));
      quietDisk();
      const timedPeer = await peakRss(timedPids, () => timedPull(servers.peer.url, repo, tag));
      quietDisk();
      const timedUs = await peakRss(timedPids, () => timedPull(servers.stevedore.url, repo, tag));
      timed.distribution.push(timedPeer.value);
      timed.Stevedore.push(timedUs.value);
      timedPeaks.peer = Math.max(timedPeaks.peer, timedPeer.peaks.peer!);
      timedPeaks.stevedore = Math.max(timedPeaks.stevedore, timedUs.peaks.stevedore!);
    }
    const d = median(wall.direct);
    const p = median(wall.peer);
    const s = median(wall.stevedore);
    stevedoreMs[image.ref] = s;
    const scenario = `cold pull, ${image.label} (median of ${setup.rounds})`;
    rows.push({ scenario, metric: 'wall time (s)', peer: secs(p), stevedore: secs(s), ratio: better(p, s), reference: `direct ${secs(d)} s; Stevedore ${(s / d).toFixed(2)}× direct, distribution ${(p / d).toFixed(2)}×; rounds ${wall.stevedore.map(secs).join(', ')}`, rss: peaks });
    rows.push({ scenario, metric: 'upstream blob GETs (last round)', peer: counts.peer, stevedore: counts.stevedore, ratio: better(counts.peer, counts.stevedore), reference: `direct ${counts.direct}; image ≈ ${mib(image.bytes)} MiB`, rss: peaks });
    const percent = (fractions: number[]): string => `${Math.round(median(fractions) * 100)} %`;
    rows.push({
      scenario,
      metric: 'mirror CPU (s) / machine busy',
      peer: `${median(cpu.peer).toFixed(2)} / ${percent(cpu.peerBusy)}`,
      stevedore: `${median(cpu.stevedore).toFixed(2)} / ${percent(cpu.stevedoreBusy)}`,
      ratio: better(median(cpu.peer), median(cpu.stevedore)),
      reference: `machine busy during the direct pull ${percent(cpu.directBusy)}`,
      rss: peaks,
    });
    rows.push({ scenario, metric: 'peak RSS (MiB)', peer: peaks.peer, stevedore: peaks.stevedore, ratio: better(peaks.peer, peaks.stevedore), rss: peaks });
    rows.push({ scenario, metric: 'peak RSS (MiB), request-by-request client', peer: timedPeaks.peer, stevedore: timedPeaks.stevedore, ratio: better(timedPeaks.peer, timedPeaks.stevedore), rss: timedPeaks });
    // The breakdown table's columns are direct, distribution and Stevedore, in that order.
    tables.push(...breakdownTable(image.label, timed), `| peak RSS (MiB) | – | ${timedPeaks.peer} | ${timedPeaks.stevedore} |`);
  }
  return { rows, tables, stevedoreMs };
}

/** Writes back every dirty page before a timed pull. */
function quietDisk(): void {
  execFileSync('sync');
}
