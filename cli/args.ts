/**
 * A small flag parser that also writes `--help` from the same table, so help never drifts from
 * what is accepted. Unknown flags and bad values are usage errors (exit code 2).
 */

export type FlagSpec =
  | { type: 'string'; description: string; placeholder?: string; default?: string; env?: string }
  | { type: 'integer'; description: string; placeholder?: string; default?: number; env?: string; min?: number; max?: number }
  | { type: 'boolean'; description: string }
  | { type: 'choice'; description: string; choices: readonly string[]; default?: string; env?: string };

export interface CommandSpec {
  /** e.g. `caps vendor` */
  usage: string;
  summary: string;
  flags: Record<string, FlagSpec>;
  /** Lines shown after the flags. */
  examples?: string[];
}

type ValueOf<F extends FlagSpec> = F extends { type: 'integer' } ? number : F extends { type: 'boolean' } ? boolean : string;
type HasDefault<F extends FlagSpec> = F extends { type: 'boolean' } ? true : F extends { default: string | number } ? true : false;

/** The parsed flags: a flag with a default (or a boolean) is always present. */
export type FlagValues<S extends CommandSpec> = {
  [K in keyof S['flags']]: HasDefault<S['flags'][K]> extends true ? ValueOf<S['flags'][K]> : ValueOf<S['flags'][K]> | undefined;
};

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export class HelpRequested extends Error {
  override readonly name = 'HelpRequested';
}

export function parseFlags<S extends CommandSpec>(spec: S, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): FlagValues<S> {
  const raw = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '-h' || arg === '--help') throw new HelpRequested();
    if (!arg.startsWith('--') || arg === '--') throw new UsageError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const flag = spec.flags[name];
    if (!flag) throw new UsageError(`unknown flag --${name}`);
    if (flag.type === 'boolean') {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      raw.set(name, true);
      continue;
    }
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`);
      i++;
    }
    raw.set(name, value);
  }

  const out: Record<string, string | number | boolean | undefined> = {};
  for (const [name, flag] of Object.entries(spec.flags)) {
    if (flag.type === 'boolean') {
      out[name] = raw.get(name) === true;
      continue;
    }
    const given = raw.get(name);
    const fromEnv = flag.env !== undefined ? env[flag.env] : undefined;
    const source = typeof given === 'string' ? `--${name}` : fromEnv !== undefined && fromEnv !== '' ? `${flag.env}` : undefined;
    const text = typeof given === 'string' ? given : source ? fromEnv : undefined;
    if (text === undefined) {
      out[name] = flag.default;
      continue;
    }
    out[name] = convert(name, flag, text, source ?? `--${name}`);
  }
  return out as FlagValues<S>;
}

function convert(name: string, flag: FlagSpec, text: string, source: string): string | number {
  switch (flag.type) {
    case 'integer': {
      if (!/^-?\d+$/.test(text.trim())) throw new UsageError(`${source} must be a whole number, got '${text}'`);
      const n = Number(text);
      if (flag.min !== undefined && n < flag.min) throw new UsageError(`${source} must be at least ${flag.min}, got ${n}`);
      if (flag.max !== undefined && n > flag.max) throw new UsageError(`${source} must be at most ${flag.max}, got ${n}`);
      return n;
    }
    case 'choice':
      if (!flag.choices.includes(text)) throw new UsageError(`${source} must be one of ${flag.choices.join(', ')}; got '${text}'`);
      return text;
    case 'string':
      if (text.trim() === '') throw new UsageError(`${source} must not be empty`);
      return text;
    case 'boolean':
      throw new UsageError(`--${name} takes no value`);
  }
}

export function helpText(spec: CommandSpec): string {
  const rows: Array<readonly [string, string]> = Object.entries(spec.flags).map(([name, flag]) => {
    const placeholder = flag.type === 'boolean' ? '' : flag.type === 'choice' ? ` ${flag.choices.join('|')}` : ` ${flag.placeholder ?? (flag.type === 'integer' ? 'N' : 'VALUE')}`;
    const notes: string[] = [];
    if (flag.type !== 'boolean' && flag.env) notes.push(`env ${flag.env}`);
    if (flag.type !== 'boolean' && flag.default !== undefined) notes.push(`default ${flag.default}`);
    return [`--${name}${placeholder}`, `${flag.description}${notes.length ? ` (${notes.join(', ')})` : ''}`] as const;
  });
  rows.push(['-h, --help', 'show this help and exit']);
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  const lines = [`Usage: ${spec.usage} [flags]`, '', spec.summary, '', 'Flags:', ...rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`)];
  if (spec.examples?.length) lines.push('', 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}

/**
 * Parses flags and runs a command; turns `--help` and usage errors into the right output and
 * exit code (0 for help, 2 for usage). `main` resolves to the process's exit code; a UsageError it
 * throws is printed like a bad flag.
 */
export async function runCommand<S extends CommandSpec>(spec: S, argv: readonly string[], main: (flags: FlagValues<S>) => Promise<number>): Promise<number> {
  let flags: FlagValues<S>;
  try {
    flags = parseFlags(spec, argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(helpText(spec));
      return 0;
    }
    if (err instanceof UsageError) return usageError(spec, err);
    throw err;
  }
  try {
    return await main(flags);
  } catch (err) {
    // what the flags say together (one needs another, a value's form): the same usage error
    if (err instanceof UsageError) return usageError(spec, err);
    throw err;
  }
}

function usageError(spec: CommandSpec, err: UsageError): number {
  process.stderr.write(`${spec.usage}: ${err.message}\nRun '${spec.usage} --help' to see the flags.\n`);
  return 2;
}

/**
 * Resolves when the process is asked to stop (Ctrl-C or SIGTERM). The handlers stay installed,
 * so a second Ctrl-C while stopping does not kill the process before it has cleaned up.
 */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
