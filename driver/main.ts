import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal } from '../cli/args.js';
import { DriverClient } from './driver-client.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import { peekClaims } from '../protocol/token.js';

export const driverCommand = {
  usage: 'caps driver',
  summary: 'Runs one driver: takes pickups from the hub, reports in-transit, then after --delay ms delivered (with a proof of delivery), or, for --fail-percent of attempts, failed with a reason (and returned to the store once no attempt is left).',
  flags: {
    url: { type: 'string', description: 'hub URL; several, comma-separated, to move on to the next when a hub is gone', placeholder: 'URL[,URL...]', default: 'http://localhost:3000', env: 'CAPS_URL' },
    token: { type: 'string', description: "driver token from 'caps token --role driver --name NAME' (not needed by a hub in lab mode)", placeholder: 'TOKEN', env: 'CAPS_TOKEN' },
    name: { type: 'string', description: "this driver's name (default: the token's name, else driver-<pid>)", placeholder: 'NAME', env: 'CAPS_DRIVER' },
    delay: { type: 'integer', description: 'milliseconds between in-transit and delivered', placeholder: 'MS', default: 1000, min: 0 },
    'location-every': { type: 'integer', description: 'while carrying parcels, send a simulated position this often (the van drives about town); 0: never', placeholder: 'MS', default: 0, min: 0 },
    'fail-percent': { type: 'integer', description: 'share of delivery attempts that fail, with a reason (nobody home, no access, address not found, refused)', placeholder: 'PERCENT', default: 0, min: 0, max: 100 },
  },
  examples: ['caps driver --token "$(caps token --role driver --name d1)"', 'caps driver --delay 0 --token TOKEN'],
} as const satisfies CommandSpec;

export function runDriver(argv: readonly string[]): Promise<number> {
  return runCommand(driverCommand, argv, async (flags) => {
    const claims = flags.token ? peekClaims(flags.token) : undefined;
    if (flags.token && claims?.role !== 'driver') {
      process.stderr.write(`caps driver: --token is not a driver token${claims ? ` (it is a ${claims.role} token)` : ''}\n`);
      return 2;
    }
    const tokenName = claims?.role === 'driver' ? claims.name : undefined;
    if (flags.name && tokenName && flags.name !== tokenName) {
      process.stderr.write(`caps driver: the token is for driver ${tokenName} but --name says ${flags.name}\n`);
      return 2;
    }
    const name = flags.name ?? tokenName ?? `driver-${process.pid}`;
    const driver = new DriverClient({ url: flags.url, name, delay: flags.delay, failShare: flags['fail-percent'] / 100, locationEveryMs: flags['location-every'], ...(flags.token ? { token: flags.token } : {}) });
    const refused = new Promise<CapsErrorBody>((resolve) => driver.once('refused', resolve));
    const outcome = await Promise.race([untilSignal().then(() => 0), refused.then((why) => {
      console.error(`caps driver: the hub refused the connection: ${why.code}: ${why.message}`);
      return 1;
    })]);
    await driver.close();
    return outcome;
  });
}
