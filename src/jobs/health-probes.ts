import type { Logger } from '../log.js';
import type { UpstreamRegistry } from '../upstream/upstream-registry.js';
import { describe } from '../upstream/upstream-registry.js';

export interface ProbeOptions {
  intervalMs: number;
  timeoutMs: number;
}

/**
 * Active health checks: `GET /v2/` on every endpoint each interval. A success
 * closes an open circuit early; failures count towards opening it.
 */
export function startHealthProbes(registries: readonly UpstreamRegistry[], options: ProbeOptions, log: Logger): { stop(): void; runOnce(): Promise<void> } {
  let running: Promise<void> | undefined;
  const runOnce = (): Promise<void> =>
    (running ??= (async () => {
      await Promise.all(
        registries.flatMap((registry) =>
          registry.endpoints.map(async (endpoint) => {
            try {
              if (await endpoint.probe(options.timeoutMs)) endpoint.state.success();
              else endpoint.state.failure('health probe: unexpected status');
            } catch (err) {
              endpoint.state.failure(`health probe: ${describe(err)}`);
              log.debug({ upstream: registry.name, endpoint: endpoint.displayUrl, err: describe(err) }, 'health probe failed');
            }
          }),
        ),
      );
    })().finally(() => {
      running = undefined;
    }));
  const timer = setInterval(() => void runOnce(), Math.max(1000, options.intervalMs));
  timer.unref();
  return { stop: () => clearInterval(timer), runOnce };
}
