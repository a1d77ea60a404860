/**
 * The slice of Node-RED's runtime API our nodes use, typed here so the
 * package needs no type package that lags behind Node-RED releases.
 */

export interface NodeStatus {
  fill?: 'red' | 'green' | 'yellow' | 'blue' | 'grey';
  shape?: 'ring' | 'dot';
  text?: string;
}

export interface NodeMessage {
  _msgid?: string;
  payload?: unknown;
  topic?: string;
  [key: string]: unknown;
}

export type NodeSend = (msg: NodeMessage | Array<NodeMessage | null>) => void;
export type NodeDone = (err?: Error) => void;

export interface Node {
  id: string;
  type: string;
  name?: string;
  credentials?: Record<string, string>;
  on(event: 'input', handler: (msg: NodeMessage, send: NodeSend, done: NodeDone) => void): void;
  on(event: 'close', handler: (removed: boolean, done: () => void) => void): void;
  status(status: NodeStatus): void;
  send(msg: NodeMessage | Array<NodeMessage | null>): void;
  log(message: string): void;
  warn(message: string): void;
  error(message: string | Error, msg?: NodeMessage): void;
}

export interface NodeDef {
  id: string;
  type: string;
  name?: string;
  [key: string]: unknown;
}

export interface HttpRequest {
  query: Record<string, string | undefined>;
}

export interface HttpResponse {
  status(code: number): HttpResponse;
  json(body: unknown): void;
  /** Sets a header. */
  set(field: string, value: string): HttpResponse;
  send(body: string): void;
}

export interface RED {
  nodes: {
    createNode(node: object, def: NodeDef): void;
    getNode(id: string): unknown;
    /** constructor: a node's constructor function; `never` parameters admit every node's own `this` and configuration type. */
    registerType(type: string, constructor: (this: never, def: never) => void, options?: object): void;
  };
  log: { info(m: string): void; warn(m: string): void; error(m: string): void };
  /** The editor's HTTP API (Express). */
  httpAdmin: {
    get(path: string, ...handlers: Array<(req: HttpRequest, res: HttpResponse, next: () => void) => void>): void;
  };
  util: {
    /** A typed input's value (str, num, msg, flow, global, env, ...), as Node-RED's core nodes read theirs. */
    evaluateNodeProperty(value: unknown, type: string, node: Node, msg: NodeMessage, callback: (err: Error | null, value: unknown) => void): void;
  };
  auth: { needsPermission(permission: string): (req: HttpRequest, res: HttpResponse, next: () => void) => void };
  /** The runtime's settings; userDir is where it keeps flows and credentials (absent in some test runtimes). */
  settings?: { userDir?: string };
  _(key: string, substitutions?: Record<string, unknown>): string;
}
