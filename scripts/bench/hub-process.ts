// The Docker Hub double in its own process, so its CPU is not the benchmark's.
// The parent drives it over IPC: { cmd: 'stats' | 'reset' | 'stop' }.
import { startHubDouble } from '../../test/support/hub-double.js';

const upstream = process.argv[2];
const [username, password] = (process.argv[3] ?? ':').split(':');
if (!upstream || !process.send) throw new Error('usage: fork hub-process.ts <upstream> [user:password]');
const hub = await startHubDouble({ upstream, ...(username ? { credentials: { username, password: password ?? '' } } : {}), rateLimit: 1_000_000 });
process.send({ ready: hub.url });
process.on('message', async (message: { cmd: string; id: number }) => {
  if (message.cmd === 'stats') {
    const { requests: _omit, ...counts } = hub.stats();
    process.send!({ id: message.id, stats: counts });
  } else if (message.cmd === 'reset') {
    hub.resetStats();
    process.send!({ id: message.id });
  } else if (message.cmd === 'stop') {
    await hub.stop();
    process.send!({ id: message.id });
    process.exit(0);
  }
});
