/**
 * A real Mosquitto broker on a free loopback port, for the MQTT tests; and
 * an MQTT client (the `mqtt` package Node-RED itself uses).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './node-red-process';

const BINARIES = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'];

export interface MqttClient {
  subscribe(topic: string): Promise<unknown>;
  publish(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
  on(event: 'message', listener: (topic: string, payload: Buffer) => void): void;
  /** The broker ended the connection (or the client did). */
  on(event: 'close', listener: () => void): void;
  endAsync(): Promise<void>;
}

/** A broker that lets in only these logins (user name -> password), each limited by `acl` (a Mosquitto acl_file). */
export interface MosquittoLogins {
  users: Record<string, string>;
  acl: string;
  /** More lines for mosquitto.conf (e.g. limits). */
  conf?: string;
}

interface MqttModule {
  connectAsync(
    url: string,
    options?: { username?: string; password?: string; reconnectPeriod?: number },
  ): Promise<{
    subscribeAsync(topic: string): Promise<unknown>;
    publishAsync(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
    on(event: 'message', listener: (topic: string, payload: Buffer) => void): void;
    on(event: 'close', listener: () => void): void;
    endAsync(): Promise<void>;
  }>;
}

export class Mosquitto {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
    private readonly users: Record<string, string> = {},
  ) {}

  /** Starts a broker; undefined when Mosquitto is not installed (in CI, which installs it, an error). */
  static async start(logins?: MosquittoLogins): Promise<Mosquitto | undefined> {
    const binary = BINARIES.find((b) => existsSync(b));
    if (!binary && process.env.CI) throw new Error('mosquitto is missing: .ci/run installs it');
    if (!binary) return undefined;
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ble-ota-mqtt-'));
    let conf = `listener ${port} 127.0.0.1\npersistence false\n`;
    if (logins) {
      // Mosquitto's salted SHA-512 entries ($6$), which its password_file reads as mosquitto_passwd's own.
      const entry = (user: string, password: string) => {
        const salt = randomBytes(12);
        return `${user}:$6$${salt.toString('base64')}$${createHash('sha512').update(password).update(salt).digest('base64')}`;
      };
      // Readable by the user Mosquitto drops to when started as root (the test's own passwords).
      chmodSync(dir, 0o755);
      writeFileSync(
        join(dir, 'passwd'),
        Object.entries(logins.users)
          .map(([u, p]) => entry(u, p))
          .join('\n') + '\n',
        { mode: 0o644 },
      );
      writeFileSync(join(dir, 'acl'), logins.acl, { mode: 0o644 });
      conf += `allow_anonymous false\npassword_file ${join(dir, 'passwd')}\nacl_file ${join(dir, 'acl')}\n${logins.conf ?? ''}\n`;
    } else conf += 'allow_anonymous true\n';
    writeFileSync(join(dir, 'mosquitto.conf'), conf);
    const child = spawn(binary, ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
    const broker = new Mosquitto(child, port, dir, logins?.users);
    const deadline = Date.now() + 10_000;
    while (!(await listening(port))) {
      if (Date.now() > deadline || child.exitCode !== null) {
        await broker.stop();
        throw new Error(`mosquitto did not listen on 127.0.0.1:${port}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return broker;
  }

  /** A client; with `user`, logged in as that user of the broker's logins. */
  async client(user?: string): Promise<MqttClient> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mqtt = require(require.resolve('mqtt', { paths: [require.resolve('node-red')] })) as MqttModule;
    if (user !== undefined && this.users[user] === undefined) throw new Error(`no login ${user} on this broker`);
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${this.port}`, user === undefined ? {} : { username: user, password: this.users[user], reconnectPeriod: 0 });
    return {
      subscribe: (topic) => c.subscribeAsync(topic),
      publish: (topic, payload, options) => c.publishAsync(topic, payload, options),
      on: c.on.bind(c) as MqttClient['on'],
      endAsync: () => c.endAsync(),
    };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
