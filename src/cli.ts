#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './log.js';
import { startStevedore } from './stevedore.js';
import { gcCommand, healthCommand, jobsCommand, verifyCommand, warmCommand } from './cli/commands.js';
import { describeConfig } from './cli/config-check.js';
import { VERSION } from './version.js';

const CONFIG_HELP = 'config file (default: $STEVEDORE_CONFIG, else ./mirror.yml if present, else built-in defaults)';

const program = new Command()
  .name('stevedore')
  .description('A pull-through caching mirror for OCI and Docker container registries')
  .version(VERSION, '-V, --version');

program
  .command('serve')
  .description('run the mirror')
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (options: { config?: string }) => {
    const config = loadOrExit(options.config);
    const log = createLogger(config.logLevel);
    const stevedore = await startStevedore(config, log);
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      // In-flight pulls get the grace period, then unfinished fills are discarded; this is the backstop.
      const deadline = setTimeout(() => process.exit(1), config.limits.shutdownGrace * 2 + 10_000);
      deadline.unref();
      stevedore.close().then(
        () => log.flush(() => process.exit(0)),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, 'reloading the htpasswd file and the TLS certificate, reopening the audit log');
      stevedore.reload();
    });
  });

program
  .command('warm')
  .description('cache images now: manifests and blobs of the chosen platforms (through the running server if there is one)')
  .argument('<images...>', 'image references, such as alpine:3.19, ghcr.io/org/app:v1 or repo@sha256:…')
  .option('-p, --platform <os/arch>', 'only this platform (repeatable; default: all)', collect, [] as string[])
  .option('--pin', 'keep these images out of eviction and GC')
  .option('--name <name>', 'job name in the history', 'on-demand')
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (images: string[], options: { platform: string[]; pin?: boolean; name?: string; config?: string }) => {
    process.exitCode = await warmCommand(loadOrExit(options.config), images, options);
  });

program
  .command('gc')
  .description('evict idle and unreferenced blobs, and enforce the size quota')
  .option('-n, --dry-run', 'print what would be removed and how many bytes, remove nothing')
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (options: { dryRun?: boolean; config?: string }) => {
    process.exitCode = await gcCommand(loadOrExit(options.config), options);
  });

program
  .command('verify')
  .description('re-hash every cached blob and report damaged ones')
  .option('--repair', 'remove damaged or missing entries, so they are fetched again')
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (options: { repair?: boolean; config?: string }) => {
    process.exitCode = await verifyCommand(loadOrExit(options.config), options);
  });

program
  .command('jobs')
  .description('list the history of warm-up runs')
  .option('--limit <n>', 'how many runs', '20')
  .option('--json', 'one JSON object per line, every field of each run')
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (options: { limit?: string; json?: boolean; config?: string }) => {
    process.exitCode = await jobsCommand(loadOrExit(options.config), options);
  });

program
  .command('health')
  .description("check that this config's server answers /healthz (exit 0), as a container HEALTHCHECK")
  .option('-c, --config <file>', CONFIG_HELP)
  .action(async (options: { config?: string }) => {
    process.exitCode = await healthCommand(loadOrExit(options.config));
  });

program
  .command('config')
  .description('configuration tools')
  .command('check')
  .description('validate the config (file, STEVEDORE_* variables, defaults) and print it in effect, secrets masked; exit 2 when invalid')
  .option('-c, --config <file>', CONFIG_HELP)
  .action((options: { config?: string }) => {
    process.stdout.write(`# valid. The configuration in effect, secrets masked; durations in milliseconds, sizes in bytes.\n${describeConfig(loadOrExit(options.config))}`);
  });

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function loadOrExit(file: string | undefined): ReturnType<typeof loadConfig> {
  try {
    return loadConfig({ file });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`stevedore: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`stevedore: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
