#!/usr/bin/env node
import { runBench } from '../bench/bench.js';
import { runDriver } from '../driver/main.js';
import { runHub } from '../hub/main.js';
import { runVendor } from '../vendor/main.js';
import { runDemo } from './demo.js';
import { runSecret } from './secret.js';
import { runToken } from './token.js';
import { runWebhook } from './webhook.js';

const COMMANDS: Record<string, { run: (argv: readonly string[]) => Promise<number>; summary: string }> = {
  hub: { run: runHub, summary: 'run the hub: socket.io namespace /caps, the dashboard at /, /api, /healthz, /readyz, /metrics' },
  vendor: { run: runVendor, summary: "run one store's vendor: publishes parcels, thanks drivers" },
  driver: { run: runDriver, summary: 'run one driver: picks up, reports in-transit and delivered' },
  token: { run: runToken, summary: "mint a token for a vendor, a driver or a dashboard with the hub's secret; caps token revoke to revoke one" },
  secret: { run: runSecret, summary: "caps secret rotate: replace the hub's token secret, the old one accepted for a grace period" },
  webhook: { run: runWebhook, summary: "a store's signed webhook endpoints: caps webhook add|list|remove|enable" },
  demo: { run: runDemo, summary: 'hub + 2 vendors + 2 drivers as separate processes (npm start)' },
  bench: { run: runBench, summary: 'benchmark: CAPS against a bare relay (parcels/s, latency, CPU, RSS), N idle connections, or a backlog of offline stores' },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)}${c.summary}`);
  return ['Usage: caps <command> [flags]', '', 'CAPS: a delivery-tracking event hub.', '', 'Commands:', ...rows, '', "Run 'caps <command> --help' for a command's flags.", ''].join('\n');
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(`caps: which command?\n\n${usage()}`);
    return 2;
  }
  if (name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`caps: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`caps: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
