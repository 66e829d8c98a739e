import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export interface ServerInfo {
  /**
   * The owner's PID as its own PID namespace numbers it (1 in a container):
   * for people to read; ownership is the lock's, never a PID comparison.
   */
  pid: number;
  /** Where the owning server answers, for command-line tools to use its API; empty for a CLI owner. */
  url: string;
  /** The owner's host name (a container's or pod's), written by the claim. */
  host?: string;
}

/** Who owns the directory, for tools: rewritten by the owner, read by anyone. */
const INFO = 'server.json';
/**
 * An SQLite database whose file lock (a POSIX fcntl lock, the kernel's) the
 * owner holds for as long as it lives: a dead owner's lock goes with it, and a
 * live one is seen from any PID namespace sharing the volume. Never deleted:
 * a new file could be locked beside a process still holding the old one.
 */
const LOCK = 'server.lock';
/** Long enough to ride out another tool's momentary probe of the lock (owner()), short of a wait for an owner. */
const CLAIM_WAIT_MS = 100;

/** The cache directory is owned by another live process: a server, or a `warm` or `gc` run. */
export class CacheDirInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly holder: ServerInfo | undefined,
  ) {
    super(`cache directory ${dir} is in use by ${describeHolder(holder)}: one server or command owns a cache directory at a time`);
    this.name = 'CacheDirInUseError';
  }
}

function describeHolder(holder: ServerInfo | undefined): string {
  if (!holder?.pid) return 'another process';
  return `process ${holder.pid}${holder.host ? ` on host ${holder.host}` : ''}${holder.url ? ` (${holder.url})` : ''}`;
}

const isBusy = (err: unknown): boolean => err instanceof Database.SqliteError && err.code.startsWith('SQLITE_BUSY');

/**
 * Claims the cache directory for this process: one owner at a time sweeps temp
 * files and runs fills. The claim is an exclusive lock on `server.lock` held by
 * an open connection in EXCLUSIVE locking mode, so the kernel releases it when
 * the process dies, however it dies. Throws CacheDirInUseError when a live
 * process holds it. The returned function releases the claim.
 */
export function claimCacheDir(dir: string, info: ServerInfo): () => void {
  let lock: Database.Database | undefined;
  try {
    lock = new Database(join(dir, LOCK), { timeout: CLAIM_WAIT_MS });
    lock.pragma('locking_mode = EXCLUSIVE');
    lock.exec('BEGIN EXCLUSIVE');
    // A write, so the connection keeps its exclusive lock after the commit, until it closes.
    lock.exec('CREATE TABLE IF NOT EXISTS claim (id INTEGER PRIMARY KEY CHECK (id = 1), claimed_at INTEGER NOT NULL)');
    lock.prepare('INSERT OR REPLACE INTO claim (id, claimed_at) VALUES (1, ?)').run(Date.now());
    lock.exec('COMMIT');
  } catch (err) {
    lock?.close();
    if (isBusy(err)) throw new CacheDirInUseError(dir, readInfo(dir));
    throw new Error(`cannot lock cache directory ${dir} (${join(dir, LOCK)}): ${(err as Error).message}`, { cause: err });
  }
  try {
    writeInfo(dir, info);
  } catch (err) {
    lock.close();
    throw err;
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    rmSync(join(dir, INFO), { force: true }); // while the lock is still ours: nobody else wrote it
    lock.close();
  };
}

/** Records where the owning server listens, once it does. */
export function announceServer(dir: string, info: ServerInfo): void {
  writeInfo(dir, info);
}

function writeInfo(dir: string, info: ServerInfo): void {
  // Renamed into place: a reader never sees half a file.
  const temp = join(dir, `${INFO}.tmp`);
  writeFileSync(temp, JSON.stringify({ ...info, host: info.host ?? hostname() }));
  renameSync(temp, join(dir, INFO));
}

function readInfo(dir: string): ServerInfo | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, INFO), 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
}

/**
 * Whether a live process holds `dir`'s lock: a read needs a shared lock, which
 * the owner's exclusive one refuses at once. A directory never claimed, or one
 * whose lock nobody holds, has no owner.
 */
function lockHeld(dir: string): boolean {
  let probe: Database.Database;
  try {
    probe = new Database(join(dir, LOCK), { readonly: true, fileMustExist: true, timeout: 0 });
  } catch {
    return false; // never claimed (or unreadable: a claim will tell)
  }
  try {
    probe.prepare('SELECT count(*) FROM sqlite_master').get();
    return false;
  } catch (err) {
    // Anything but BUSY (a journal a dead owner left, which a read-only connection cannot roll back) is no live owner.
    return isBusy(err);
  } finally {
    probe.close();
  }
}

/**
 * The live process that owns `dir`, if any, as its server.json describes it
 * (pid 0 and no url while an owner that just claimed has not written it yet).
 */
export function owner(dir: string): ServerInfo | undefined {
  if (!lockHeld(dir)) return undefined;
  return readInfo(dir) ?? { pid: 0, url: '' };
}

/** The server (with an API) that owns `dir`, if one runs. */
export function runningServer(dir: string): ServerInfo | undefined {
  const info = owner(dir);
  return info?.url ? info : undefined;
}
