import { afterEach, describe, expect, it } from 'vitest';
import { PARCEL_EVENTS } from '../protocol/schemas.js';
import { runCli } from './helpers/cli.js';
import { Cleanup, startSecureHub, tokenFor } from './helpers/hub.js';
import { WebhookReceiver } from './helpers/webhook-receiver.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('caps webhook', () => {
  it('add, list and remove as child processes against a real hub, with the store\'s vendor token', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startSecureHub({ webhookAllowPrivate: true }), (h) => h.close());
    const token = tokenFor({ role: 'vendor', store: 'acme' });
    const added = await runCli(['webhook', 'add', '--store', 'acme', '--url', receiver.url, '--events', 'pickup,delivered', '--hub', url, '--token', token]);
    expect(added.code, added.output).toBe(0);
    const id = /^id (wh_[0-9a-f]{16})$/m.exec(added.stdout)?.[1];
    expect(id, added.stdout).toBeDefined();
    expect(added.stdout).toMatch(/^secret whsec_\S+$/m);
    expect(added.stderr).toContain('shown this once');

    const listed = await runCli(['webhook', 'list', '--store', 'acme', '--hub', url], { env: { CAPS_TOKEN: token } });
    expect(listed.code, listed.output).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+active\\s+0\\s+pickup,delivered\\s+${receiver.url}$`, 'm'));
    expect(listed.stdout).not.toContain('whsec_');

    // another store's token is refused with the hub's coded error
    const other = await runCli(['webhook', 'list', '--store', 'acme', '--hub', url, '--token', tokenFor({ role: 'vendor', store: 'other' })]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('CAPS_ERR_FORBIDDEN');

    const removed = await runCli(['webhook', 'remove', '--store', 'acme', '--id', id ?? '', '--hub', url, '--token', token]);
    expect(removed.code, removed.output).toBe(0);
    const empty = await runCli(['webhook', 'list', '--store', 'acme', '--hub', url, '--token', token]);
    expect(empty.stdout).toContain('acme has no webhook endpoints');
    const again = await runCli(['webhook', 'remove', '--store', 'acme', '--id', id ?? '', '--hub', url, '--token', token]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('CAPS_ERR_NOT_FOUND');
  });

  it('a bad flag, a bad event or a missing flag exits 2 with a clear message; --help exits 0', async () => {
    const bad = await runCli(['webhook', 'add', '--store', 'acme', '--url', 'https://example.com/h', '--colour', 'red']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown flag --colour');
    const event = await runCli(['webhook', 'add', '--store', 'acme', '--url', 'https://example.com/h', '--events', 'pickup,teleported']);
    expect(event.code).toBe(2);
    expect(event.stderr).toContain(`--events must be a comma-separated list of ${PARCEL_EVENTS.join(', ')}`);
    const missing = await runCli(['webhook', 'remove', '--store', 'acme']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--id ID');
    const unknown = await runCli(['webhook', 'frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown subcommand 'frobnicate'");
    const help = await runCli(['webhook', 'add', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--events LIST');
    const top = await runCli(['--help']);
    expect(top.stdout).toMatch(/^ {2}webhook /m);
    // the hub is not there: said, exit 1
    const away = await runCli(['webhook', 'list', '--store', 'acme', '--hub', 'http://127.0.0.1:9']);
    expect(away.code).toBe(1);
    expect(away.stderr).toContain('cannot reach the hub at http://127.0.0.1:9');
  });
});
