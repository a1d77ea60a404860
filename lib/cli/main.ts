#!/usr/bin/env node
/**
 * esp32-ble-ota: scan for, inspect and update ESP32 devices over Bluetooth
 * LE from a shell, on the same OTA client as the Node-RED nodes
 * (docs/CLI.md). Exit status: 0 success, 1 failure, 2 usage, 130 Ctrl-C.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, help, parseCommandLine, PROGRAM, usage, UsageError } from './args';
import { CliError, Io, runCommand } from './commands';
import { BleOtaError } from '../errors';
import { hideTypedSecrets } from '../client/target';
import { errorCode, errorMessage, jsonError } from './output';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** 128 + SIGINT, what shells report for a command ended by Ctrl-C. */
export const EXIT_CANCELLED = 130;

/** Runs one command line; resolves with the exit status and never throws. */
export async function main(argv: string[], io: Io): Promise<number> {
  let cmd: Command;
  try {
    cmd = parseCommandLine(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    return usageError(err, argv, io);
  }

  if (cmd.kind === 'help') {
    io.stdout.write(help(cmd.topic));
    return EXIT_OK;
  }
  if (cmd.kind === 'version') {
    io.stdout.write(cmd.json ? JSON.stringify({ version: packageVersion() }) + '\n' : `${packageVersion()}\n`);
    return EXIT_OK;
  }

  try {
    await runCommand(cmd, io);
    return EXIT_OK;
  } catch (err) {
    // A mistake only the files show (a --base that is no image): still the command line's.
    if (err instanceof UsageError) return usageError(err, argv, io);
    const code = err instanceof CliError ? err.code : errorCode(err);
    // A secret or a key's PEM text typed where a path goes is not repeated (a file that cannot be read is named);
    // figures of the same form the tool reports (a key's SHA-256) are.
    const message = withCliAdvice(code, hideTypedSecrets(errorMessage(err), argv));
    if (cmd.json) io.stdout.write(jsonError(code, message));
    io.stderr.write(`${PROGRAM}: ${message} [${code}]\n`);
    if (code === 'BLUETOOTH_UNAVAILABLE' && !cmd.virtual) {
      io.stderr.write(`${PROGRAM}: to try the tool without Bluetooth, add --virtual: it runs against a virtual ESP32\n`);
    }
    // Anything but the client's or the tool's own errors is a bug: its stack is what a report needs.
    if (!(err instanceof BleOtaError) && !(err instanceof CliError) && err instanceof Error && err.stack) {
      io.stderr.write(`${hideTypedSecrets(err.stack, argv)}\n`);
    }
    return code === 'CANCELLED' && io.signal.aborted ? EXIT_CANCELLED : EXIT_FAILURE;
  }
}

function usageError(err: UsageError, argv: string[], io: Io): number {
  // --json is honoured even on a bad line, when it was given, so a script still gets JSON.
  if (argv.includes('--json')) io.stdout.write(jsonError('USAGE', err.message));
  io.stderr.write(`${PROGRAM}: ${err.message}\n${usage(err.topic)}Try "${PROGRAM} ${err.topic ? err.topic + ' ' : ''}--help".\n`);
  return EXIT_USAGE;
}

/**
 * The client's messages say what to give, not where: each front end names
 * its own place (the Node-RED nodes name the device node's fields).
 */
const CLI_ADVICE: Partial<Record<string, string>> = {
  AUTH_REQUIRED: 'Give the fleet secret with --secret-file PATH, or in ESP32_BLE_OTA_SECRET.',
};

export function withCliAdvice(code: string, message: string): string {
  const advice = CLI_ADVICE[code];
  return advice ? `${message} ${advice}` : message;
}

/** The package's version, from the package.json above dist/lib/cli (or lib/cli). */
export function packageVersion(): string {
  for (let dir = __dirname, i = 0; i < 5; i++, dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'node-red-contrib-esp32-ble-ota' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

/** Resolves once everything written so far has reached the stream (pipes may be asynchronous). */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => stream.write('', () => resolve()));
}

/**
 * How long a cancelled command may take to wind down (drop the link, tell
 * the device) before the tool quits anyway: nothing it waits for (a file
 * system that stops answering) keeps Ctrl-C or SIGTERM from ending it.
 */
export const CANCEL_GRACE_MS = 10_000;

/**
 * The handler for SIGINT and SIGTERM: the first cancels (the command ends
 * as cancelled, exit 130), and quits with 130 if the command has not ended
 * graceMs later; the second quits at once. With `json` (--json), quitting
 * after the grace writes the cancellation there, as the command would have.
 */
export function signalHandler(
  controller: AbortController,
  stderr: { write(text: string): unknown },
  exit: (status: number) => void,
  graceMs = CANCEL_GRACE_MS,
  json?: { write(text: string): unknown },
): () => void {
  let interrupts = 0;
  return () => {
    interrupts++;
    if (interrupts === 1) {
      stderr.write(`\n${PROGRAM}: cancelling (Ctrl-C again to quit at once)\n`);
      controller.abort();
      setTimeout(() => {
        const message = `still not stopped ${graceMs / 1000} s after the cancel: quitting`;
        json?.write(jsonError('CANCELLED', `cancelled; ${message}`));
        stderr.write(`${PROGRAM}: ${message}\n`);
        exit(EXIT_CANCELLED);
      }, graceMs).unref();
    } else {
      exit(EXIT_CANCELLED);
    }
  };
}

function runFromShell(): void {
  const controller = new AbortController();
  const json = process.argv.slice(2).includes('--json') ? process.stdout : undefined;
  const onSignal = signalHandler(controller, process.stderr, (status) => process.exit(status), CANCEL_GRACE_MS, json);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A reader that stops early (`| head`) closes the pipe: end quietly, as other tools do.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(EXIT_FAILURE);
      throw err;
    });
  }
  const io: Io = { stdout: process.stdout, stderr: process.stderr, signal: controller.signal };
  main(process.argv.slice(2), io)
    .then(async (status) => {
      await Promise.all([drained(process.stdout), drained(process.stderr)]);
      // Exit explicitly: the system's noble keeps its HCI socket open, which would keep the process alive.
      process.exit(status);
    })
    .catch((err: unknown) => {
      process.stderr.write(`${PROGRAM}: internal error: ${hideTypedSecrets(err instanceof Error ? String(err.stack) : String(err), process.argv.slice(2))}\n`);
      process.exit(EXIT_FAILURE);
    });
}

if (require.main === module) runFromShell();
