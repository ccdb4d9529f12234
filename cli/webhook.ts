import type { CommandSpec, FlagSpec } from './args.js';
import { runCommand, UsageError } from './args.js';
import { PARCEL_EVENTS } from '../protocol/schemas.js';

/**
 * `caps webhook add|list|remove|enable`: a store's webhook endpoints, through the hub's HTTP API
 * (`/api/stores/:store/webhooks`) with that store's vendor token, so it works against any hub the
 * shop can reach, not only one on this machine.
 */

const common = {
  store: { type: 'string', description: 'the store whose endpoints these are', placeholder: 'NAME', env: 'CAPS_STORE' },
  hub: { type: 'string', description: "the hub's URL", placeholder: 'URL', default: 'http://localhost:3000', env: 'CAPS_URL' },
  token: { type: 'string', description: 'a vendor token of the store (caps token --role vendor --store NAME); none for a hub in open lab mode', placeholder: 'TOKEN', env: 'CAPS_TOKEN' },
} as const satisfies Record<string, FlagSpec>;

const idFlag = { id: { type: 'string', description: 'the endpoint id (wh_..., from add or list)', placeholder: 'ID' } } as const satisfies Record<string, FlagSpec>;

export const webhookAddCommand = {
  usage: 'caps webhook add',
  summary:
    "Registers a webhook endpoint for a store: each recorded step of the store's parcels (or of the --events chosen) is POSTed to --url, signed. Prints the endpoint id and its signing secret on stdout: the secret is shown this once.",
  flags: {
    ...common,
    url: { type: 'string', description: 'where to POST: an http(s) URL on a public address (unless the hub runs with --webhook-allow-private)', placeholder: 'URL' },
    events: { type: 'string', description: `comma-separated events to send, of ${PARCEL_EVENTS.join(', ')} (default: every event)`, placeholder: 'LIST' },
  },
  examples: ['caps webhook add --store acme --url https://shop.example.com/caps-hook', 'caps webhook add --store acme --url https://shop.example.com/hook --events pickup,delivered --hub https://caps.example.com --token "$CAPS_TOKEN"'],
} as const satisfies CommandSpec;

export const webhookListCommand = {
  usage: 'caps webhook list',
  summary: "Lists a store's webhook endpoints: id, state (active, or disabled and why), events waiting, the events it takes, URL and the last error.",
  flags: { ...common, json: { type: 'boolean', description: "print the API's JSON answer instead of a table" } },
  examples: ['caps webhook list --store acme'],
} as const satisfies CommandSpec;

export const webhookRemoveCommand = {
  usage: 'caps webhook remove',
  summary: 'Removes a webhook endpoint, and the events still waiting for it.',
  flags: { ...common, ...idFlag },
  examples: ['caps webhook remove --store acme --id wh_3f9c2a1b7d4e8f60'],
} as const satisfies CommandSpec;

export const webhookEnableCommand = {
  usage: 'caps webhook enable',
  summary: 'Enables an endpoint the hub disabled after a day of failures: the events that waited for it are sent at once, in order.',
  flags: { ...common, ...idFlag },
  examples: ['caps webhook enable --store acme --id wh_3f9c2a1b7d4e8f60'],
} as const satisfies CommandSpec;

const SUBCOMMANDS = { add: webhookAddCommand, list: webhookListCommand, remove: webhookRemoveCommand, enable: webhookEnableCommand } as const;

function usage(): string {
  const rows = Object.entries(SUBCOMMANDS).map(([name, spec]) => `  ${name.padEnd(8)}${spec.summary.split('. ')[0] ?? ''}`);
  return ['Usage: caps webhook <add|list|remove|enable> [flags]', '', "A store's signed webhook endpoints, over the hub's HTTP API.", '', ...rows, '', "Run 'caps webhook <subcommand> --help' for its flags.", ''].join('\n');
}

export function runWebhook(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'add':
      return runCommand(webhookAddCommand, rest, async (flags) => {
        if (flags.store === undefined) throw new UsageError('--store NAME is required');
        if (flags.url === undefined) throw new UsageError('--url URL is required: where the hub POSTs the events');
        let events: string[] | undefined;
        if (flags.events !== undefined) {
          events = flags.events.split(',').map((e) => e.trim()).filter((e) => e !== '');
          const unknown = events.filter((e) => !(PARCEL_EVENTS as readonly string[]).includes(e));
          if (unknown.length > 0 || events.length === 0) throw new UsageError(`--events must be a comma-separated list of ${PARCEL_EVENTS.join(', ')}; got '${flags.events}'`);
        }
        const answer = await call(webhookAddCommand.usage, flags, 'POST', '', { url: flags.url, ...(events ? { events } : {}) });
        if (answer === undefined) return 1;
        const data = answer as { id: string; secret: string; events: string[] | null; url: string };
        process.stdout.write(`id ${data.id}\nsecret ${data.secret}\n`);
        process.stderr.write(`caps webhook add: ${data.url} gets ${data.events ? data.events.join(', ') : 'every event'} of ${flags.store}; keep the secret (shown this once) to verify the CAPS-Signature header\n`);
        return 0;
      });
    case 'list':
      return runCommand(webhookListCommand, rest, async (flags) => {
        if (flags.store === undefined) throw new UsageError('--store NAME is required');
        const answer = await call(webhookListCommand.usage, flags, 'GET', '');
        if (answer === undefined) return 1;
        const { webhooks } = answer as { webhooks: Array<Record<string, unknown>> };
        if (flags.json) {
          process.stdout.write(`${JSON.stringify(answer)}\n`);
          return 0;
        }
        if (webhooks.length === 0) {
          process.stdout.write(`${flags.store} has no webhook endpoints (caps webhook add --store ${flags.store} --url URL)\n`);
          return 0;
        }
        const rows = webhooks.map((w) => [String(w['id']), String(w['state']), String(w['pending']), Array.isArray(w['events']) ? w['events'].join(',') : 'all', String(w['url'])]);
        const header = ['ID', 'STATE', 'PENDING', 'EVENTS', 'URL'];
        const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
        const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ');
        process.stdout.write(`${line(header)}\n`);
        webhooks.forEach((w, i) => {
          process.stdout.write(`${line(rows[i] ?? [])}\n`);
          if (w['disabledReason'] !== undefined) process.stdout.write(`  disabled ${String(w['disabledAt'])}: ${String(w['disabledReason'])}\n`);
          else if (w['lastError'] !== undefined) process.stdout.write(`  last error ${String(w['lastErrorAt'])}: ${String(w['lastError'])}\n`);
        });
        return 0;
      });
    case 'remove':
    case 'enable': {
      const spec = sub === 'remove' ? webhookRemoveCommand : webhookEnableCommand;
      return runCommand(spec, rest, async (flags) => {
        if (flags.store === undefined || flags.id === undefined) throw new UsageError('--store NAME and --id ID are required');
        const answer = await call(spec.usage, flags, sub === 'remove' ? 'DELETE' : 'POST', sub === 'remove' ? `/${encodeURIComponent(flags.id)}` : `/${encodeURIComponent(flags.id)}/enable`);
        if (answer === undefined) return 1;
        process.stderr.write(sub === 'remove' ? `caps webhook remove: ${flags.id} of ${flags.store} is removed, with the events that waited for it\n` : `caps webhook enable: ${flags.id} of ${flags.store} is active again\n`);
        return 0;
      });
    }
    default: {
      const help = sub === undefined || sub === '--help' || sub === '-h' || sub === 'help';
      if (!help) process.stderr.write(`caps webhook: unknown subcommand '${sub}'\n\n`);
      (help && sub !== undefined ? process.stdout : process.stderr).write(usage());
      return Promise.resolve(help && sub !== undefined ? 0 : 2);
    }
  }
}

/** One API call; the answer's data, or undefined once the reason is on stderr. */
async function call(name: string, flags: { hub: string; store?: string | undefined; token?: string | undefined }, method: string, path: string, body?: unknown): Promise<unknown> {
  const url = `${flags.hub.replace(/\/+$/, '')}/api/stores/${encodeURIComponent(flags.store ?? '')}/webhooks${path}`;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (flags.token !== undefined) headers['authorization'] = `Bearer ${flags.token}`;
  let res: Response;
  try {
    res = await fetch(url, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(15_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    process.stderr.write(`${name}: cannot reach the hub at ${flags.hub}: ${cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err))}\n`);
    return undefined;
  }
  let answer: { ok?: boolean; data?: unknown; error?: { code?: string; message?: string } };
  try {
    answer = (await res.json()) as typeof answer;
  } catch {
    process.stderr.write(`${name}: ${flags.hub} answered HTTP ${res.status}, not the hub's JSON: is it a CAPS hub?\n`);
    return undefined;
  }
  if (answer.ok !== true) {
    process.stderr.write(`${name}: ${answer.error?.code ?? `HTTP ${res.status}`}: ${answer.error?.message ?? 'refused'}\n`);
    return undefined;
  }
  return answer.data;
}
