// An app using the Warbler SDK exactly as served by the server: fetched over HTTPS (the CA
// is trusted through NODE_EXTRA_CA_CERTS), evaluated as CommonJS (UMD) or imported as an ES
// module. Reports every callback on stdout as one JSON line; reads commands on stdin:
// `opened ID`, `ack ID`, `close`.
import readline from "node:readline";
import WebSocket from "ws";

const env = process.env;
const options = JSON.parse(env.APP_OPTIONS || "{}");
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function loadSdk() {
  if (env.APP_BUILD === "esm") {
    const text = await (await fetch(env.APP_SDK_URL + "/sdk/warbler.mjs")).text();
    return (await import("data:text/javascript;base64," + Buffer.from(text).toString("base64"))).default;
  }
  const text = await (await fetch(env.APP_SDK_URL + "/sdk/warbler.js")).text();
  const module = { exports: {} };
  new Function("module", "exports", text)(module, module.exports);
  return module.exports;
}

const Warbler = await loadSdk();
const { deviceId, token } = await Warbler.register({ url: env.APP_URL, clientKey: env.APP_CLIENT_KEY, platform: "web" });
emit({ event: "registered", deviceId, token, version: Warbler.VERSION });

const client = new Warbler.Client({
  url: env.APP_URL,
  token,
  WebSocket,
  backoff: { initial: 200, max: 2000 },
  ...options,
  async onMessage(message) {
    emit({ event: "message", id: message.id, title: message.notification?.title, data: message.data });
    if (message.data?.holdMs) await sleep(message.data.holdMs);
  },
  onGap: (dropped) => emit({ event: "gap", dropped }),
  onStateChange: (state, info) => emit({ event: "state", state, ...info }),
  onError: (error) => emit({ event: "error", code: error?.code, message: String(error) }),
});
client.connect();

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, arg] = line.split(" ");
  if (command === "opened") client.opened(arg);
  else if (command === "ack") client.ack(arg);
  else if (command === "close") {
    client.close();
    setTimeout(() => process.exit(0), 100);
  }
});
