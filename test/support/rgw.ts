// A real S3 server for tests: Ceph's RADOS Gateway over a single-node cluster
// (one monitor, one memstore OSD) from Debian's packages, all state in a
// temporary directory, every port on 127.0.0.1, every daemon stopped by PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { freePort } from './registry.js';
import { onPath } from './requirements.js';

export interface Rgw {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** A client on the gateway with the test user's keys. */
  client: S3Client;
  createBucket(name: string): Promise<void>;
  /** Keys under `prefix` in `bucket`. */
  keys(bucket: string, prefix?: string): Promise<string[]>;
  /** Multipart uploads open in `bucket`. */
  uploads(bucket: string): Promise<{ key: string; uploadId: string }[]>;
  /** Stops the gateway (the cluster stays), as a bucket outage; `startGateway` brings it back. */
  stopGateway(): Promise<void>;
  startGateway(): Promise<void>;
  /** Empties and removes a bucket. */
  removeBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

const BINARIES = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'ceph-authtool', 'monmaptool'];

/** Why the gateway cannot run here, or undefined. */
export async function rgwUnavailableReason(): Promise<string | undefined> {
  const missing: string[] = [];
  for (const name of BINARIES) if (!(await onPath([name]))) missing.push(name);
  return missing.length > 0 ? `${missing.join(', ')} not installed (apt-get install ceph-mon ceph-osd radosgw)` : undefined;
}

/** Bounded polling of a condition that a daemon's start makes true. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, logs: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000; i++) {
    if (await check()) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Ceph: ${what} did not happen within ${timeoutMs} ms\n${logs().slice(-3000)}`);
}

function runTool(cmd: string, args: string[], env: NodeJS.ProcessEnv): string {
  const result = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, env });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${result.status}): ${result.stderr || result.stdout}`);
  return result.stdout;
}

export async function startRgw(): Promise<Rgw> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-rgw-'));
  const fsid = randomUUID();
  const monPort = await freePort();
  const rgwPort = await freePort();
  // The OSD binds a small range of its own; random, so two clusters rarely meet.
  const msPortMin = 20_000 + Math.floor(Math.random() * 400) * 100;
  for (const sub of ['run', 'log', 'mon/mon.a', 'osd/osd.0', 'rgw']) mkdirSync(join(dir, sub), { recursive: true });
  const conf = join(dir, 'ceph.conf');
  writeFileSync(conf, [
    '[global]',
    `fsid = ${fsid}`,
    `mon host = v2:127.0.0.1:${monPort}`,
    'mon initial members = a',
    'auth cluster required = none',
    'auth service required = none',
    'auth client required = none',
    'ms mon client mode = crc',
    'osd pool default size = 1',
    'osd pool default min size = 1',
    'mon allow pool size one = true',
    'mon allow pool delete = true',
    'osd crush chooseleaf type = 0',
    'osd pool default pg num = 8',
    'osd pool default pgp num = 8',
    'osd pool default pg autoscale mode = off',
    'mon pg warn min per osd = 0',
    'paxos propose interval = 0.02',
    `ms bind port min = ${msPortMin}`,
    `ms bind port max = ${msPortMin + 60}`,
    `run dir = ${join(dir, 'run')}`,
    `log file = ${join(dir, 'log')}/$name.log`,
    `admin socket = ${join(dir, 'run')}/$name.asok`,
    `keyring = ${join(dir, 'keyring')}`,
    `mon data = ${join(dir, 'mon')}/$name`,
    `osd data = ${join(dir, 'osd')}/$name`,
    'osd objectstore = memstore',
    'memstore device bytes = 4294967296',
    'rgw gc obj min wait = 5',
    'rgw gc processor period = 10',
    '[client.rgw]',
    `rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1`,
    `rgw data = ${join(dir, 'rgw')}`,
    '',
  ].join('\n'));
  // No proxies, no inherited CA bundles: everything here is plain HTTP on loopback.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/proxy|CA_BUNDLE/i.test(k)));
  const daemons: { name: string; child: ChildProcess; args: string[] }[] = [];
  const log = createWriteStream(join(dir, 'log', 'daemons.out'), { flags: 'a' });
  let output = '';
  const daemon = (name: string, cmd: string, args: string[]): ChildProcess => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [child.stdout!, child.stderr!]) {
      stream.on('data', (c: Buffer) => {
        output = `${output}${c.toString()}`.slice(-20_000);
        log.write(c);
      });
    }
    daemons.push({ name, child, args });
    return child;
  };
  const stopChild = async (child: ChildProcess): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => child.exitCode === null && child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const stopAll = async (): Promise<void> => {
    for (const d of [...daemons].reverse()) await stopChild(d.child);
  };
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const gatewayUp = async (): Promise<boolean> => {
    try {
      const res = await request(`${endpoint}/`, { headersTimeout: 1_000, bodyTimeout: 1_000 });
      await res.body.dump();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  };
  let gateway: ChildProcess | undefined;
  const startGateway = async (): Promise<void> => {
    gateway = daemon('radosgw', 'radosgw', ['-c', conf, '-n', 'client.rgw', '-f']);
    await until('the gateway answering', gatewayUp, 30_000, () => output);
  };
  try {
    runTool('ceph-authtool', ['--create-keyring', join(dir, 'keyring'), '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *'], env);
    runTool('monmaptool', ['--create', '--add', 'a', `v2:127.0.0.1:${monPort}`, '--fsid', fsid, join(dir, 'monmap')], env);
    runTool('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap'), '--keyring', join(dir, 'keyring')], env);
    daemon('ceph-mon', 'ceph-mon', ['-c', conf, '-i', 'a', '-f']);
    const osdUuid = randomUUID();
    const osdId = runTool('ceph', ['-c', conf, '--connect-timeout', '20', 'osd', 'new', osdUuid], env).trim();
    runTool('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], env);
    daemon('ceph-osd', 'ceph-osd', ['-c', conf, '-i', osdId, '-f']);
    await until('osd.0 up', async () => /^osd\.0 up/m.test(spawnSync('ceph', ['-c', conf, '--connect-timeout', '5', 'osd', 'dump'], { encoding: 'utf8', env, timeout: 10_000 }).stdout ?? ''), 30_000, () => output);
    await startGateway();
  } catch (err) {
    await stopAll();
    log.end();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const accessKeyId = 'STEVEDORETESTKEY';
  const secretAccessKey = 'stevedore-test-secret-key-0123456789';
  runTool('radosgw-admin', ['-c', conf, 'user', 'create', '--uid=stevedore', '--display-name=stevedore', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`], env);
  const region = 'us-east-1';
  const client = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const keys = async (bucket: string, prefix = ''): Promise<string[]> => {
    const out: string[] = [];
    let token: string | undefined;
    for (let page = 0; page < 10_000; page++) {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of listed.Contents ?? []) out.push(o.Key!);
      if (!listed.IsTruncated) break;
      token = listed.NextContinuationToken;
    }
    return out;
  };
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region,
    client,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    keys,
    async uploads(bucket) {
      const listed = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      return (listed.Uploads ?? []).map((u) => ({ key: u.Key!, uploadId: u.UploadId! }));
    },
    async stopGateway() {
      if (gateway) await stopChild(gateway);
    },
    startGateway,
    async removeBucket(name) {
      for (const key of await keys(name)) await client.send(new DeleteObjectCommand({ Bucket: name, Key: key }));
      await client.send(new DeleteBucketCommand({ Bucket: name }));
    },
    async stop() {
      client.destroy();
      await stopAll();
      await new Promise<void>((resolve) => log.end(resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
