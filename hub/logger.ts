import { inspect } from 'node:util';

/** Readable lines for a person, or one JSON object per line for a machine. */
export type LogFormat = 'human' | 'json';
export type LogLevel = 'info' | 'warn' | 'error';

export interface Logger {
  /** `EVENT: { event, time, payload }`, the line the course's hub prints for every event. */
  event(event: string, payload: unknown, time?: string): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface LoggerOptions {
  format?: LogFormat;
  /** Where each finished line goes; defaults to stdout. */
  write?: (line: string) => void;
  /** Colour human lines (default: when stdout is a terminal). */
  color?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? 'human';
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const color = options.color ?? (options.write === undefined && process.stdout.isTTY === true);

  const human = (level: LogLevel, message: string, fields?: Record<string, unknown>): string => {
    const tag = level === 'info' ? '' : `${level.toUpperCase()} `;
    const rest = fields && Object.keys(fields).length > 0 ? ` ${formatFields(fields)}` : '';
    return `${tag}${message}${rest}`;
  };

  const line = (level: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (format === 'json') {
      write(JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields }));
    } else {
      write(human(level, message, fields));
    }
  };

  return {
    event(event, payload, time = new Date().toISOString()) {
      if (format === 'json') {
        write(JSON.stringify({ time, level: 'info', msg: 'EVENT', event, payload }));
      } else {
        write(`EVENT: ${inspect({ event, time, payload }, { depth: 4, breakLength: Infinity, colors: color })}`);
      }
    },
    info: (message, fields) => line('info', message, fields),
    warn: (message, fields) => line('warn', message, fields),
    error: (message, fields) => line('error', message, fields),
  };
}

/** A logger that drops everything (tests that do not read logs). */
export const silentLogger: Logger = createLogger({ write: () => undefined });

function formatFields(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'string' && !/\s/.test(value) ? value : JSON.stringify(value)}`)
    .join(' ');
}
