/** `hook create|list|update|delete|test|deliveries|redeliver`: webhooks (issue 13; events/hooks.ts). */
import type { Command } from 'commander';
import { systemActor } from '../access/policy.js';
import type { HookView } from '../events/hooks.js';
import { invalid } from '../shared/errors.js';
import { admin, common } from './program.js';

function line(h: HookView): string {
  const state = h.active ? 'active' : `disabled${h.disabledReason ? ` (${h.disabledReason})` : ''}`;
  return `${h.id}\t${h.scope}\t${h.url}\t${h.events.join(',')}\t${state}\t${h.hasSecret ? 'signed' : 'unsigned'}`;
}

const splitEvents = (v: string | undefined) => (v === undefined ? undefined : v.split(','));

function onOff(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v !== 'on' && v !== 'off') throw invalid('invalid_argument', `expected on or off, not ${v}`);
  return v === 'on';
}

export function registerHookCommands(program: Command): void {
  const hook = program.command('hook').description('webhooks: tell other systems (CI) what happens in repositories');
  const opts = (name: string) => hook.commands.find((c) => c.name() === name)!.opts();
  common(
    hook
      .command('create <scope>')
      .description('send the events of an owner (OWNER), a space (OWNER/SPACE) or a repository (OWNER/SPACE/REPO) to a URL')
      .requiredOption('--url <url>', 'where to POST each event (http or https)')
      .option('--secret <secret>', 'sign each delivery with it (X-Hub-Signature-256)')
      .option('--events <list>', 'comma-separated: push, branch, tag, repository, lock (default push)')
      .option('--inactive', 'create it turned off'),
  ).action(
    admin(async (core, scope: string) => {
      const o = opts('create');
      const h = await core.webhooks.create(systemActor, scope, { url: String(o['url']), secret: o['secret'] as string | undefined, events: splitEvents(o['events'] as string | undefined), active: !o['inactive'] });
      return { text: `created webhook ${h.id} on ${h.scope}: ${h.events.join(', ')} → ${h.url}`, json: h };
    }),
  );
  common(hook.command('list <scope>').description('list the webhooks set on an owner, a space or a repository')).action(
    admin(async (core, scope: string) => {
      const list = await core.webhooks.list(systemActor, scope);
      return { text: list.length ? list.map(line) : `no webhooks on ${scope}`, json: list };
    }),
  );
  common(
    hook
      .command('update <id>')
      .description("change a webhook's URL, secret or events, or turn it on or off (on also clears its failure count)")
      .option('--url <url>', 'a new URL')
      .option('--secret <secret>', 'a new secret; "" removes it')
      .option('--events <list>', 'comma-separated: push, branch, tag, repository, lock')
      .option('--active <on|off>', 'turn it on or off'),
  ).action(
    admin(async (core, id: string) => {
      const o = opts('update');
      const h = await core.webhooks.update(systemActor, id, { url: o['url'] as string | undefined, secret: o['secret'] as string | undefined, events: splitEvents(o['events'] as string | undefined), active: onOff(o['active'] as string | undefined) });
      return { text: line(h), json: h };
    }),
  );
  common(hook.command('delete <id>').description('delete a webhook and its delivery log')).action(
    admin(async (core, id: string) => {
      const h = await core.webhooks.remove(systemActor, id);
      return { text: `deleted webhook ${h.id} (${h.url})`, json: h };
    }),
  );
  common(hook.command('test <id>').description('send a ping event to the webhook now and show what its receiver answered')).action(
    admin(async (core, id: string) => {
      const r = await core.webhooks.test(systemActor, id);
      const answer = r.status !== null ? `HTTP ${r.status}` : `no answer: ${r.error}`;
      if (!r.ok) process.exitCode = 1;
      return { text: `${r.ok ? 'delivered' : 'failed'}: ${answer} in ${r.durationMs} ms${r.response ? `\n${r.response.slice(0, 500)}` : ''}`, json: r };
    }),
  );
  common(hook.command('deliveries <id>').description("a webhook's delivery log, newest first").option('--limit <n>', 'how many (default 20, at most 200)')).action(
    admin(async (core, id: string) => {
      const limit = Number(opts('deliveries')['limit'] ?? 20);
      if (!Number.isInteger(limit) || limit < 1) throw invalid('invalid_argument', '--limit must be a positive whole number');
      const list = await core.webhooks.deliveries(systemActor, id, limit);
      const text = list.map((d) => `${d.id}\t${d.kind}\tevent ${d.eventId}\t${d.status}\t${d.attempts} attempt(s)\t${d.responseStatus ?? d.error ?? '-'}\t${d.createdAt}`);
      return { text: text.length ? text : 'no deliveries yet', json: list };
    }),
  );
  common(hook.command('redeliver <id> <delivery>').description('send a delivery of the webhook again (as a new delivery)')).action(
    admin(async (core, id: string, delivery: string) => {
      const r = await core.webhooks.redeliver(systemActor, id, delivery);
      return { text: `queued delivery ${r.id} (again ${r.redeliveryOf})`, json: r };
    }),
  );
}
