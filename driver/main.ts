import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal } from '../cli/args.js';
import { DriverClient } from './driver-client.js';

export const driverCommand = {
  usage: 'caps driver',
  summary: 'Runs one driver: takes pickups from the hub, reports in-transit, then delivered after --delay ms.',
  flags: {
    url: { type: 'string', description: 'hub URL', placeholder: 'URL', default: 'http://localhost:3000', env: 'CAPS_URL' },
    name: { type: 'string', description: "this driver's name (default: driver-<pid>)", placeholder: 'NAME', env: 'CAPS_DRIVER' },
    delay: { type: 'integer', description: 'milliseconds between in-transit and delivered', placeholder: 'MS', default: 1000, min: 0 },
  },
  examples: ['caps driver --name d1', 'caps driver --delay 0'],
} as const satisfies CommandSpec;

export function runDriver(argv: readonly string[]): Promise<number> {
  return runCommand(driverCommand, argv, async (flags) => {
    const driver = new DriverClient({ url: flags.url, name: flags.name ?? `driver-${process.pid}`, delay: flags.delay });
    await untilSignal();
    await driver.close();
    return 0;
  });
}
