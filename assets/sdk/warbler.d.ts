// Types of the Warbler JavaScript SDK 0.1.0 (/sdk/warbler.js, /sdk/warbler.mjs).
// Documentation: docs/sdk.md; the frames are those of docs/protocol.md.

export declare const VERSION: string;

export type Transport = "websocket" | "sse" | "poll";
/** `connecting`: an attempt is under way; `open`: welcomed, messages flow; `reconnecting`:
 * waiting `delay` ms before the next attempt (or switching to a fallback transport);
 * `closed`: by `close()` or for good (see `reason`). */
export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** A `message` frame as the server sent it. */
export interface Message {
  type: "message";
  id: string;
  seq: number;
  notification?: {
    title?: string;
    body?: string;
    image?: string;
    url?: string;
    sound?: string;
    badge?: number;
  };
  data?: Record<string, unknown>;
  topic?: string;
  collapse_key?: string;
  priority?: "high" | "normal";
  sent_at: string;
}

export interface StateInfo {
  transport: Transport | null;
  /** Reconnect attempts since the last successful connection. */
  attempt?: number;
  /** Milliseconds until the next attempt (state `reconnecting`). */
  delay?: number;
  /** The transport that was found blocked (a fallback). */
  fallbackFrom?: Transport;
  /** Why the client closed: `closed` (by `close()`), `unauthenticated`, `replaced`,
   * `device_removed`, `protocol_error`. */
  reason?: string;
}

/** The minimal WebSocket constructor the SDK needs (the browser's, or the `ws` package). */
export interface WebSocketLike {
  new (url: string): {
    readyState: number;
    send(data: string): void;
    close(code?: number): void;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    onclose: ((event: { code: number; reason?: string }) => void) | null;
  };
}

export interface ClientOptions {
  /** The server's base URL, e.g. `https://push.corp.internal:8443`. */
  url: string;
  /** The device token from `register`. */
  token: string;
  /** Called once per message id, in order. The message is acked when it returns (or its
   * promise resolves); if it throws, it is not acked and comes again next session. */
  onMessage?: (message: Message) => void | Promise<void>;
  /** Called with the number of messages the mailbox cap dropped. */
  onGap?: (dropped: number) => void;
  onStateChange?: (state: State, info: StateInfo) => void;
  /** Errors from callbacks, and the reason of a final close. */
  onError?: (error: unknown) => void;
  /** Default true. With false, call `client.ack(id)` yourself. */
  autoAck?: boolean;
  /** A WebSocket class, for Node (`import WebSocket from "ws"`). Default: the global one. */
  WebSocket?: WebSocketLike;
  /** A fetch function. Default: the global one. */
  fetch?: typeof fetch;
  /** Transports in order of preference. Default `["websocket", "sse", "poll"]`. */
  transports?: Transport[];
  /** Reconnect delays in ms: `initial` doubling up to `max`, with jitter. Default 500 / 30000. */
  backoff?: { initial?: number; max?: number };
  /** How many recent message ids are remembered to drop duplicates. Default 1000. */
  dedupeSize?: number;
}

export declare class Client {
  constructor(options: ClientOptions);
  readonly state: State;
  readonly transport: Transport | null;
  readonly deviceId: string | null;
  connect(): this;
  close(): void;
  ack(...ids: (string | string[])[]): void;
  opened(...ids: (string | string[])[]): void;
  showNotification(message: Message, options?: NotificationOptions): Notification | null;
}

export interface RegisterOptions {
  url: string;
  clientKey: string;
  /** Default `web`. */
  platform?: "web" | "android" | "ios" | "desktop" | "iot";
  /** An HS256 JWT signed with the app's signing secret: binds the device to a user. */
  userToken?: string;
  fetch?: typeof fetch;
}

export declare function register(options: RegisterOptions): Promise<{ deviceId: string; token: string }>;

export interface NotificationOptions {
  /** Called on click after `opened` was reported; default: open `notification.url`. */
  onClick?: (message: Message, event: Event) => void;
  /** Title when the message has none. */
  title?: string;
  /** The Notification class. Default: the global one. */
  Notification?: unknown;
}

export declare function showNotification(
  client: Client,
  message: Message,
  options?: NotificationOptions,
): Notification | null;

export declare class WarblerError extends Error {
  readonly code: string;
  readonly status?: number;
}

declare const Warbler: {
  Client: typeof Client;
  register: typeof register;
  showNotification: typeof showNotification;
  WarblerError: typeof WarblerError;
  VERSION: string;
};
export default Warbler;
export as namespace Warbler;
