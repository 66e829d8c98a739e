import type Database from 'better-sqlite3';

export type RunStatus = 'running' | 'succeeded' | 'failed' | 'stopped';

export interface JobRun {
  id: number;
  job: string;
  trigger: string;
  startedAt: number;
  finishedAt: number | null;
  status: RunStatus;
  images: number;
  manifests: number;
  blobsFetched: number;
  blobsSkipped: number;
  bytes: number;
  errors: string[];
  message: string | null;
}

type RunRow = Omit<JobRun, 'errors'> & { errors: string };

const SELECT = `SELECT id, job, trigger, started_at AS startedAt, finished_at AS finishedAt, status, images, manifests,
  blobs_fetched AS blobsFetched, blobs_skipped AS blobsSkipped, bytes, errors, message FROM job_runs`;

/** Warm-up runs and the digests they pin, in the cache's SQLite database. */
export class JobHistory {
  private readonly stmts;

  constructor(private readonly db: Database.Database) {
    this.stmts = {
      start: db.prepare<[string, string, number]>(`INSERT INTO job_runs (job, trigger, started_at, status) VALUES (?, ?, ?, 'running')`),
      update: db.prepare(
        `UPDATE job_runs SET finished_at = @finishedAt, status = @status, images = @images, manifests = @manifests,
           blobs_fetched = @blobsFetched, blobs_skipped = @blobsSkipped, bytes = @bytes, errors = @errors, message = @message
         WHERE id = @id`,
      ),
      get: db.prepare<[number], RunRow>(`${SELECT} WHERE id = ?`),
      list: db.prepare<[number], RunRow>(`${SELECT} ORDER BY id DESC LIMIT ?`),
      abandon: db.prepare<[number]>(`UPDATE job_runs SET status = 'failed', finished_at = ?, message = 'interrupted by a restart' WHERE status = 'running'`),
      clearPins: db.prepare<[string]>('DELETE FROM pins WHERE job = ?'),
      pin: db.prepare<[string, string]>('INSERT OR IGNORE INTO pins (job, digest) VALUES (?, ?)'),
    };
  }

  start(job: string, trigger: string, now = Date.now()): number {
    return Number(this.stmts.start.run(job, trigger, now).lastInsertRowid);
  }

  update(run: JobRun): void {
    this.stmts.update.run({ ...run, errors: JSON.stringify(run.errors.slice(0, 100)) });
  }

  get(id: number): JobRun | undefined {
    const row = this.stmts.get.get(id);
    return row ? parseRow(row) : undefined;
  }

  list(limit = 50): JobRun[] {
    return this.stmts.list.all(limit).map(parseRow);
  }

  /** Runs still marked running belong to a process that is gone. */
  abandonRunning(now = Date.now()): void {
    this.stmts.abandon.run(now);
  }

  /** Makes `digests` the pin set of `job`. */
  replacePins(job: string, digests: Iterable<string>): void {
    this.db.transaction(() => {
      this.stmts.clearPins.run(job);
      for (const digest of digests) this.stmts.pin.run(job, digest);
    })();
  }
}

function parseRow(row: RunRow): JobRun {
  return { ...row, errors: JSON.parse(row.errors) as string[] };
}
