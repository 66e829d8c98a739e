// The shipped Prometheus alert rules and Grafana dashboard: promtool accepts
// the rules, and every series either of them queries is one a started mirror
// really exposes on /metrics, so a renamed metric fails here instead of
// leaving an alert that can never fire or a panel that shows "no data".
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { onPath, requirement } from '../support/requirements.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get } from '../support/http.js';

const rulesFile = fileURLToPath(new URL('../../docs/prometheus-alerts.yml', import.meta.url));
/** promtool unit tests of the rules: input series, and the alerts expected at given times. */
const rulesTestFile = fileURLToPath(new URL('./prometheus-alerts.promtool.yml', import.meta.url));
const dashboardFile = fileURLToPath(new URL('../../docs/grafana-dashboard.json', import.meta.url));
const promtool = await onPath(['promtool']);
const withPromtool = requirement('promtool', promtool ? undefined : 'promtool is not on PATH (Debian package prometheus)');

let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
let mirror: TestMirror;
/** Metric names the scrape declares (# TYPE), with the series names histograms and summaries add. */
let exposed: Set<string>;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry.url, 'team/app', 'v1', { format: 'oci', layers: [20_000] });
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  assert.equal((await get(`${mirror.url}/v2/team/app/manifests/v1`, { accept: image.manifestMediaType })).status, 200);
  const text = (await get(`${mirror.url}/metrics`)).body.toString();
  exposed = new Set();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exposed.add(name!);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(`${name}${suffix}`);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) exposed.add(`${name}${suffix}`);
  }
  assert.ok(exposed.has('stevedore_build_info'), 'the scrape looks like Stevedore');
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

/** The series names of ours a PromQL expression reads. */
function seriesIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:stevedore|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!);
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
}

function rules(): Rule[] {
  const doc = parse(readFileSync(rulesFile, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
  return doc.groups.flatMap((g) => g.rules);
}

withPromtool.test('promtool accepts the alert rules', () => {
  const run = spawnSync(promtool!, ['check', 'rules', rulesFile], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `promtool check rules:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /SUCCESS: \d+ rules found/);
});

withPromtool.test('the notification alerts fire when they should, and only then (promtool test rules)', () => {
  const run = spawnSync(promtool!, ['test', 'rules', rulesTestFile], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `promtool test rules:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /SUCCESS/);
});

test('the alert rules cover the outages the issue names, each with a severity', () => {
  const names = rules().map((r) => r.alert);
  for (const wanted of ['StevedoreUpstreamDown', 'StevedoreUpstreamErrors', 'StevedoreHitRatioCollapsed', 'StevedorePullBudgetLow', 'StevedoreDiskNearlyFull', 'StevedoreFillsFailing', 'StevedoreWarmupFailed', 'StevedoreNotificationsStuck', 'StevedoreNotificationsDropped', 'StevedoreNotificationsLost']) {
    assert.ok(names.includes(wanted), `no ${wanted} rule`);
  }
  for (const rule of rules()) assert.match(rule.labels?.severity ?? '', /^(warning|critical)$/, `${rule.alert}: severity`);
});

test('every series the alert rules use is on a real scrape', () => {
  const used = new Set(rules().flatMap((r) => seriesIn(r.expr)));
  assert.ok(used.size >= 8, `the rules use ${used.size} series`);
  assert.deepEqual([...used].filter((name) => !exposed.has(name)), [], 'series the rules use that /metrics does not expose');
});

test('the Grafana dashboard parses, filters every query by $instance, has an error panel, and queries only scraped series', () => {
  const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as {
    templating: { list: { name: string; type: string; query?: unknown }[] };
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  const instance = dashboard.templating.list.find((v) => v.name === 'instance');
  assert.ok(instance, 'an instance variable');
  assert.equal(instance.type, 'query');
  assert.match(JSON.stringify(instance.query), /label_values\(stevedore_[a-z_]+, *instance\)/);
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const expr of exprs) {
    for (const selector of expr.matchAll(/\b(?:stevedore|process|nodejs)_[a-z0-9_]+(\{[^}]*\})?/g)) {
      assert.match(selector[1] ?? '', /instance=~"\$instance"/, `not filtered by instance: ${selector[0]} in ${expr}`);
    }
  }
  const errors = dashboard.panels.filter((p) => /error/i.test(p.title));
  assert.ok(errors.some((p) => (p.targets ?? []).some((t) => /stevedore_upstream_requests_total\{[^}]*outcome/.test(t.expr))), 'an error panel on the upstream outcomes');
  const used = new Set(exprs.flatMap(seriesIn));
  assert.deepEqual([...used].filter((name) => !exposed.has(name)), [], 'series the dashboard queries that /metrics does not expose');
});
