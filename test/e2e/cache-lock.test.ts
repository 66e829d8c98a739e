// One owner per cache directory across PID namespaces, as containers sharing a
// volume are: every server and command below runs as PID 1 of a namespace of
// its own (unshare --pid), so no PID tells them apart. The kernel's lock does:
// a second server is refused while the first lives, even with a fill in
// flight, gc and verify --repair beside it leave its temp files alone, and a
// SIGKILL releases the lock for the next server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { stringify } from 'yaml';
import { freePort, startRegistry } from '../support/registry.js';
import { startHubDouble } from '../support/hub-double.js';
import { run } from '../support/namespace-procs.js';
import { onPath, requirement } from '../support/requirements.js';
import { pushBlob } from '../support/seed.js';
import { cliCommand } from '../support/stevedore.js';
import { streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

const unshare = await onPath(['unshare']);
async function whyNot(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root: a PID namespace (unshare --pid) needs CAP_SYS_ADMIN';
  if (!unshare) return 'unshare (util-linux) is not on PATH';
  const r = await run(unshare, ['--pid', '--fork', '--mount-proc', '--', 'true'], process.env, 10_000);
  return r.code === 0 ? undefined : `cannot create a PID namespace: ${r.stderr.trim()}`;
}
const pidNamespaces = requirement('PID namespaces (root and unshare --pid)', await whyNot());

/** A `stevedore` command running as PID 1 of a PID namespace (and a mount namespace with its own /proc) of its own. */
class Contained {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stdout = '';
  stderr = '';
  private readonly waiters = new Set<() => void>();

  constructor(args: string[]) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('STEVEDORE_')));
    // sh prints its PID as its namespace sees it, then becomes the command (exec keeps the PID).
    this.child = spawn(unshare!, ['--pid', '--fork', '--mount-proc', '--kill-child', '--', '/bin/sh', '-c', 'echo "pid $$"; exec "$@"', 'sh', process.execPath, ...cliCommand(), ...args], {
      cwd: repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (d: Buffer) => this.seen(() => (this.stdout += d.toString())));
    this.child.stderr!.on('data', (d: Buffer) => this.seen(() => (this.stderr += d.toString())));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => this.seen(() => resolve(code))));
  }

  private seen(update: () => void): void {
    update();
    for (const wake of this.waiters) wake();
  }

  /** The command's PID as this test's namespace numbers it: the child unshare forked. */
  hostPid(): number {
    const pid = this.child.pid!;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    assert.equal(children.length, 1, `unshare ${pid} has one child`);
    return Number(children[0]);
  }

  /** The PID the command has in its own namespace, as it printed it. */
  innerPid(): number | undefined {
    const m = /^pid (\d+)$/m.exec(this.stdout);
    return m ? Number(m[1]) : undefined;
  }

  /** Settles when `check` holds on the output so far; rejects when the process exits first or after `ms`. */
  until(what: string, check: () => boolean, ms = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      let ended = false;
      const done = (err?: Error): void => {
        this.waiters.delete(wake);
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const wake = (): void => {
        if (check()) done();
        else if (ended) done(new Error(`exited before ${what}:\n${this.stdout.slice(-3000)}\n${this.stderr.slice(-3000)}`));
      };
      const timer = setTimeout(() => done(new Error(`no ${what} within ${ms} ms:\n${this.stdout.slice(-3000)}\n${this.stderr.slice(-3000)}`)), ms);
      this.waiters.add(wake);
      void this.exited.then(() => {
        ended = true;
        wake();
      });
      wake();
    });
  }

  listening(): Promise<void> {
    return this.until('"stevedore listening"', () => this.stdout.includes('"msg":"stevedore listening"'));
  }

  /** Stops it by its PID: SIGTERM (or `signal`) to the command itself; unshare exits with it. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try {
        process.kill(this.hostPid(), signal);
      } catch {
        this.child.kill('SIGKILL'); // no child left to signal: unshare alone
      }
      const backstop = setTimeout(() => this.child.kill('SIGKILL'), 15_000); // --kill-child takes the command with it
      await this.exited;
      clearTimeout(backstop);
    }
    return this.exited;
  }
}

pidNamespaces.test('a cache directory has one owner across PID namespaces; gc and verify --repair beside it sweep nothing; SIGKILL frees it', { timeout: 180_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'stevedore-cache-lock-'));
  const registry = await startRegistry();
  const hub = await startHubDouble({ upstream: registry.url });
  const running: Contained[] = [];
  t.after(async () => {
    for (const c of running) await c.stop('SIGKILL');
    await hub.stop();
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  });
  const contained = (args: string[]): Contained => {
    const c = new Contained(args);
    running.push(c);
    return c;
  };
  const dir = join(work, 'data');
  const configFor = async (name: string): Promise<{ file: string; url: string }> => {
    const port = await freePort();
    const file = join(work, `${name}.yml`);
    writeFileSync(
      file,
      stringify({
        listen: `127.0.0.1:${port}`,
        logLevel: 'info',
        defaultRegistry: 'docker.io',
        cache: { dir },
        health: { probeInterval: '1h' },
        upstreams: [{ registry: 'docker.io', endpoints: [{ url: hub.url, username: '', password: '' }], timeouts: { connect: '2s', headers: '10s', body: '30s' } }],
      }),
    );
    return { file, url: `http://127.0.0.1:${port}` };
  };
  const blob = await pushBlob(registry.url, 'lock/big', { size: 24 * MiB, seed: 'cache-lock' });

  const first = await configFor('first');
  const a = contained(['serve', '--config', first.file]);
  await a.listening();
  assert.equal(a.innerPid(), 1, 'the first server is PID 1 of its namespace');
  const info = JSON.parse(readFileSync(join(dir, 'server.json'), 'utf8')) as { pid: number; url: string };
  assert.deepEqual([info.pid, info.url], [1, first.url], 'server.json says where the owner answers; its PID is only for people');

  // A fill in flight through the first server: its temp file is what a second owner would sweep.
  hub.throttle(4 * MiB);
  const res = await request(`${first.url}/v2/lock/big/blobs/${blob.digest}`);
  let received = 0;
  const hash = createHash('sha256');
  const reading = (async () => {
    for await (const chunk of res.body) {
      received += (chunk as Buffer).length;
      hash.update(chunk as Buffer);
    }
  })();
  await waitFor('the fill to start writing', () => received > MiB && readdirSync(join(dir, 'tmp')).length > 0, 20_000);
  const inFlight = readdirSync(join(dir, 'tmp'));

  const second = await configFor('second');
  const b = contained(['serve', '--config', second.file]);
  const refused = await b.exited;
  assert.equal(b.innerPid(), 1, 'the second server is PID 1 of its own namespace too');
  assert.notEqual(refused, 0, 'the second server refuses to start');
  assert.ok(b.stderr.includes(`cache directory ${dir} is in use by process 1`), b.stderr);
  assert.match(b.stderr, new RegExp(`\\(${first.url.replace(/[.]/g, '\\.')}\\)`), 'the refusal says where the owner answers');

  // gc goes through the owner's admin API; verify --repair only reads the index and the blobs.
  const gc = contained(['gc', '--config', second.file]);
  assert.equal(await gc.exited, 0, gc.stderr);
  assert.equal(gc.innerPid(), 1);
  assert.match(gc.stdout, /freed .* in \d+ blobs/);
  const verify = contained(['verify', '--repair', '--config', second.file]);
  assert.equal(await verify.exited, 0, verify.stderr);
  assert.match(verify.stdout, /checked \d+ blobs/);
  assert.deepEqual(readdirSync(join(dir, 'tmp')), inFlight, 'the fill in flight kept its temp file');

  // The first server kept serving: the fill completes, whole and right.
  hub.throttle(null);
  await reading;
  assert.equal(received, blob.size);
  assert.equal(`sha256:${hash.digest('hex')}`, blob.digest);
  await waitFor('the blob to be stored', () => existsSync(join(dir, 'blobs', 'sha256', blob.digest.slice(7, 9), blob.digest.slice(7))), 20_000);

  // kill -9: nothing runs its release; the kernel drops the lock with the process.
  await a.stop('SIGKILL');
  const third = await configFor('third');
  const c = contained(['serve', '--config', third.file]);
  await c.listening();
  assert.equal(c.innerPid(), 1);
  assert.equal((await streamDigest(`${third.url}/v2/lock/big/blobs/${blob.digest}`)).digest, blob.digest, 'the new owner serves what the first cached');
  assert.equal(await c.stop(), 0, 'an orderly stop');
});
