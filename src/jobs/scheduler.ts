import { Cron } from 'croner';
import type { WarmupJobConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { WarmupRunner } from './warmup.js';

export interface ScheduledJob {
  config: WarmupJobConfig;
  nextRun(): Date | null;
}

/**
 * Runs each configured warm-up job on its cron schedule; a job never overlaps
 * itself. Of several replicas, only the one `leading` runs it.
 */
export function scheduleWarmups(jobs: readonly WarmupJobConfig[], runner: WarmupRunner, log: Logger, leading: () => boolean = () => true): { jobs: ScheduledJob[]; stop(): void } {
  const crons = jobs.map(
    (job) =>
      new Cron(job.schedule, { name: `warmup:${job.name}`, protect: true, catch: (err: unknown) => log.error({ job: job.name, err }, 'warm-up job crashed') }, async () => {
        if (!leading()) {
          log.debug({ job: job.name }, 'scheduled warm-up left to the replica that leads the housekeeping');
          return;
        }
        await runner.start({ ...job, trigger: 'schedule' }).done;
      }),
  );
  return {
    jobs: jobs.map((config, i) => ({ config, nextRun: () => crons[i]!.nextRun() })),
    stop: () => crons.forEach((c) => c.stop()),
  };
}
