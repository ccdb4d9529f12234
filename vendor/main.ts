import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal } from '../cli/args.js';
import { VendorClient } from './vendor-client.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import { peekClaims } from '../protocol/token.js';

export const vendorCommand = {
  usage: 'caps vendor',
  summary: "Runs one store's vendor: hands a new parcel (a fake order) to the hub every --interval ms and thanks the driver when it is delivered.",
  flags: {
    url: { type: 'string', description: 'hub URL; several, comma-separated, to move on to the next when a hub is gone', placeholder: 'URL[,URL...]', default: 'http://localhost:3000', env: 'CAPS_URL' },
    token: { type: 'string', description: "vendor token from 'caps token --role vendor --store NAME' (not needed by a hub in lab mode)", placeholder: 'TOKEN', env: 'CAPS_TOKEN' },
    store: { type: 'string', description: "the store's name (its room on the hub); default: the token's store, else 1-800-flowers", placeholder: 'NAME', env: 'CAPS_STORE' },
    interval: { type: 'integer', description: 'milliseconds between new parcels', placeholder: 'MS', default: 2000, min: 1 },
    count: { type: 'integer', description: 'publish N parcels, then exit 0 once every one is delivered, returned or cancelled (default: run until stopped)', min: 1 },
    'cancel-percent': { type: 'integer', description: 'share of its parcels the store cancels right after handing them over (the customer changed their mind)', placeholder: 'PERCENT', default: 0, min: 0, max: 100 },
  },
  examples: ['caps vendor --token "$(caps token --role vendor --store acme-widgets)"', 'caps vendor --count 3 --interval 100 --token TOKEN'],
} as const satisfies CommandSpec;

export function runVendor(argv: readonly string[]): Promise<number> {
  return runCommand(vendorCommand, argv, async (flags) => {
    const claims = flags.token ? peekClaims(flags.token) : undefined;
    if (flags.token && claims?.role !== 'vendor') {
      process.stderr.write(`caps vendor: --token is not a vendor token${claims ? ` (it is a ${claims.role} token)` : ''}\n`);
      return 2;
    }
    const tokenStore = claims?.role === 'vendor' ? claims.store : undefined;
    if (flags.store && tokenStore && flags.store !== tokenStore) {
      process.stderr.write(`caps vendor: the token is for store ${tokenStore} but --store says ${flags.store}\n`);
      return 2;
    }
    const store = flags.store ?? tokenStore ?? '1-800-flowers';
    const vendor = new VendorClient({ url: flags.url, store, interval: flags.interval, cancelShare: flags['cancel-percent'] / 100, ...(flags.count !== undefined ? { count: flags.count } : {}), ...(flags.token ? { token: flags.token } : {}) });
    const stop = untilSignal();
    const refused = new Promise<CapsErrorBody>((resolve) => vendor.once('refused', resolve));
    const outcome = await Promise.race([
      vendor.run().then(() => 'done' as const),
      stop.then(() => 'stopped' as const),
      refused.then((why) => {
        console.error(`caps vendor: the hub refused the connection: ${why.code}: ${why.message}`);
        return 'failed' as const;
      }),
    ]).catch((err: unknown) => {
      console.error(`caps vendor: ${err instanceof Error ? err.message : String(err)}`);
      return 'failed' as const;
    });
    if (outcome === 'done') console.log(`VENDOR: all ${flags.count} parcels delivered`);
    await vendor.close();
    return outcome === 'failed' ? 1 : 0;
  });
}
