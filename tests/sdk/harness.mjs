// Test harness: the real warbler binary on a fixed local port (so it can be killed and
// restarted where clients expect it), API calls trusting its CA, an "app" child process
// using the SDK, and a TLS-terminating proxy that refuses chosen requests.
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import tls from "node:tls";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.WARBLER_BIN || path.join(here, "../../target/debug/warbler");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const srv = net.createServer().listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/** Polls `check` until it returns a truthy value, or throws `what` after `ms`. */
export async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("not within " + ms + " ms: " + what);
    await sleep(25);
  }
}

/** The binary serving a data dir on 127.0.0.1:port; `kill9()` and `start()` again. */
export class Server {
  constructor() {
    this.data = fs.mkdtempSync(path.join(os.tmpdir(), "warbler-sdk-"));
    this.child = null;
  }

  async start(port) {
    this.port = port || this.port || (await freePort());
    this.url = "https://127.0.0.1:" + this.port;
    this.child = spawn(BIN, ["serve", "--listen", "127.0.0.1:" + this.port, "--data", this.data], {
      env: { ...process.env, WARBLER_LOG: "warn" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = readline.createInterface({ input: this.child.stdout });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("warbler did not start")), 20000);
      this.child.once("exit", (code) => reject(new Error("warbler exited " + code)));
      lines.on("line", (line) => {
        if (line.startsWith("listening on ")) { clearTimeout(timer); resolve(); }
      });
    });
    this.ca = fs.readFileSync(path.join(this.data, "tls/ca.crt"));
    this.creds = JSON.parse(fs.readFileSync(path.join(this.data, "initial-credentials.json"), "utf8"));
    return this;
  }

  async kill9() {
    const child = this.child;
    this.child = null;
    child.kill("SIGKILL");
    if (child.exitCode === null && child.signalCode === null) await once(child, "exit");
  }

  async stop() {
    if (this.child) await this.kill9();
    fs.rmSync(this.data, { recursive: true, force: true });
  }

  /** One API call over HTTPS trusting the CA: `{status, body}`. */
  call(method, urlPath, token, body) {
    return new Promise((resolve, reject) => {
      const req = https.request(this.url + urlPath, {
        method, ca: this.ca, agent: false,
        headers: { authorization: "Bearer " + token, "content-type": "application/json" },
      }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null }));
      });
      req.on("error", reject);
      req.end(body ? JSON.stringify(body) : undefined);
    });
  }

  async push(body) {
    const r = await this.call("POST", "/v1/messages", this.creds.api_key, body);
    if (r.status !== 202) throw new Error("push: " + r.status + " " + JSON.stringify(r.body));
    return r.body.id;
  }

  async counts(id) {
    const r = await this.call("GET", "/v1/messages/" + id, this.creds.api_key);
    return r.body.counts;
  }
}

/**
 * A child Node process playing an app: it trusts the server's CA only through
 * NODE_EXTRA_CA_CERTS, fetches the SDK from `sdkUrl`, registers a device at `url`,
 * connects, and reports every callback as a JSON line. Commands go to its stdin.
 */
export class App {
  constructor(server, { url = server.url, sdkUrl = server.url, build = "umd", options = {} } = {}) {
    this.events = [];
    this.waiters = [];
    this.child = spawn(process.execPath, [path.join(here, "app.mjs")], {
      env: {
        ...process.env,
        NODE_EXTRA_CA_CERTS: path.join(server.data, "tls/ca.crt"),
        APP_URL: url, APP_SDK_URL: sdkUrl, APP_BUILD: build,
        APP_CLIENT_KEY: server.creds.client_key, APP_OPTIONS: JSON.stringify(options),
      },
      stdio: ["pipe", "pipe", "inherit"],
    });
    readline.createInterface({ input: this.child.stdout }).on("line", (line) => {
      const event = JSON.parse(line);
      this.events.push(event);
      if (process.env.SDK_TEST_VERBOSE) console.error("app:", line);
    });
  }

  messages() { return this.events.filter((e) => e.event === "message"); }
  states() { return this.events.filter((e) => e.event === "state"); }

  async waitFor(what, pred, ms = 15000) {
    return eventually(what + " (events: " + JSON.stringify(this.events.slice(-8)) + ")",
      () => this.events.find(pred), ms);
  }

  send(command) { this.child.stdin.write(command + "\n"); }

  async stop() {
    if (this.child.exitCode !== null) return;
    this.send("close");
    const exited = once(this.child, "exit");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * A TLS-terminating HTTP/1.1 proxy in front of the server (like a corporate proxy), with
 * the server's own certificate. It reads every request head on a connection (keep-alive
 * included); one matching `refuse` gets a 403 and the connection is closed.
 */
export async function startProxy(server, refuse) {
  const key = fs.readFileSync(path.join(server.data, "tls/server.key"));
  const cert = fs.readFileSync(path.join(server.data, "tls/server.crt"));
  const proxy = { refused: [], sockets: new Set() };
  proxy.server = tls.createServer({ key, cert, ALPNProtocols: ["http/1.1"] }, (client) => {
    proxy.sockets.add(client);
    const upstream = tls.connect({ host: "127.0.0.1", port: server.port, ca: server.ca, servername: "localhost", ALPNProtocols: ["http/1.1"] });
    proxy.sockets.add(upstream);
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.on("close", () => { upstream.destroy(); proxy.sockets.delete(client); });
    upstream.on("close", () => { client.destroy(); proxy.sockets.delete(upstream); });
    upstream.pipe(client);
    let buffer = Buffer.alloc(0);
    let raw = false; // after a WebSocket upgrade went through: bytes are no longer HTTP
    client.on("data", (chunk) => {
      if (raw) return upstream.write(chunk);
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buffer.subarray(0, end + 4).toString("latin1");
        if (refuse(head)) {
          proxy.refused.push(head.split("\r\n")[0]);
          upstream.destroy();
          client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
          return;
        }
        const length = Number((/^content-length:\s*(\d+)/im.exec(head) || [0, 0])[1]);
        if (buffer.length < end + 4 + length) return;
        upstream.write(buffer.subarray(0, end + 4 + length));
        buffer = buffer.subarray(end + 4 + length);
        if (/^upgrade:/im.test(head)) {
          raw = true;
          if (buffer.length) upstream.write(buffer);
          return;
        }
      }
    });
  });
  proxy.server.listen(0, "127.0.0.1");
  await once(proxy.server, "listening");
  proxy.url = "https://127.0.0.1:" + proxy.server.address().port;
  proxy.close = () => {
    for (const s of proxy.sockets) s.destroy();
    proxy.server.close();
  };
  return proxy;
}
