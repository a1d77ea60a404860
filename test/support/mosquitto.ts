/**
 * A real Mosquitto broker on a free loopback port, for the MQTT tests; and
 * an MQTT client (the `mqtt` package Node-RED itself uses).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './node-red-process';

const BINARIES = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'];

export interface MqttClient {
  subscribe(topic: string): Promise<unknown>;
  publish(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
  on(event: 'message', listener: (topic: string, payload: Buffer) => void): void;
  endAsync(): Promise<void>;
}

interface MqttModule {
  connectAsync(url: string): Promise<{
    subscribeAsync(topic: string): Promise<unknown>;
    publishAsync(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
    on(event: 'message', listener: (topic: string, payload: Buffer) => void): void;
    endAsync(): Promise<void>;
  }>;
}

export class Mosquitto {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
  ) {}

  /** Starts a broker; undefined when Mosquitto is not installed (in CI, which installs it, an error). */
  static async start(): Promise<Mosquitto | undefined> {
    const binary = BINARIES.find((b) => existsSync(b));
    if (!binary && process.env.CI) throw new Error('mosquitto is missing: .ci/run installs it');
    if (!binary) return undefined;
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ble-ota-mqtt-'));
    writeFileSync(join(dir, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    const child = spawn(binary, ['-c', join(dir, 'mosquitto.conf')], { stdio: 'ignore' });
    const broker = new Mosquitto(child, port, dir);
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

  async client(): Promise<MqttClient> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mqtt = require(require.resolve('mqtt', { paths: [require.resolve('node-red')] })) as MqttModule;
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${this.port}`);
    return {
      subscribe: (topic) => c.subscribeAsync(topic),
      publish: (topic, payload, options) => c.publishAsync(topic, payload, options),
      on: (event, listener) => c.on(event, listener),
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
