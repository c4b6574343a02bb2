// The JavaScript SDK in a real browser: headless Chromium loads a page on the server's own
// origin whose SDK (<script src="/sdk/warbler.js">, or an import of /sdk/warbler.mjs) comes
// from the running binary; the page registers a device, connects and renders each push. A
// push sent through the API shows up; a click reports `opened` (through the page's own
// button, and through the SDK's Notification helper); the server's counts show it
// delivered, acked and opened. Behind a proxy that refuses WebSocket upgrades, the page
// falls back to SSE (fetch streaming) and still receives, acks and reports `opened`.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, openPage } from "./lib/browser.mjs";
import { Server, eventually, startProxy } from "./lib/server.mjs";

// Served by `page.route` at /__test/sdk.html on the origin under test: that request never
// reaches the server, everything else the page loads does. Same origin as the API, so no
// CORS is involved. The client key comes in the URL's fragment.
const pageHtml = (build) => `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>Warbler SDK test page</title>
<p>State: <output id="state">loading</output></p>
<ul id="messages"></ul>
${build === "umd" ? '<script src="/sdk/warbler.js"></script>' : ""}
<script type="module">
  ${build === "esm" ? 'import Warbler from "/sdk/warbler.mjs";' : ""}
  const url = location.origin;
  const clientKey = decodeURIComponent(location.hash.slice(1));
  const { deviceId, token } = await Warbler.register({ url, clientKey, platform: "web" });
  document.body.dataset.device = deviceId;
  window.states = [];
  window.notifications = new Map();
  const list = document.getElementById("messages");
  const client = new Warbler.Client({
    url,
    token,
    onMessage(message) {
      const item = document.createElement("li");
      item.dataset.id = message.id;
      const button = document.createElement("button");
      button.textContent = message.notification?.title ?? message.id;
      button.addEventListener("click", () => {
        client.opened(message.id);
        item.dataset.opened = "page";
      });
      item.append(button);
      list.append(item);
      const shown = client.showNotification(message, {
        onClick: () => { item.dataset.opened = "notification"; },
      });
      if (shown) window.notifications.set(message.id, shown);
    },
    onStateChange(state, info) {
      window.states.push({ state, transport: info.transport, ...(info.fallbackFrom ? { fallbackFrom: info.fallbackFrom } : {}) });
      document.getElementById("state").value = state + " " + info.transport;
    },
    onError(error) { console.error("warbler:", error); },
  });
  window.client = client;
  window.sdkVersion = Warbler.VERSION;
  client.connect();
</script>
</html>
`;

let server;
let browser;
before(async () => {
  server = await new Server().start();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * The test page at `base` (the server, or a proxy in front of it) with the given SDK build.
 * Records the page's WebSockets (with their frames) and its other requests.
 */
async function sdkPage({ base = server.url, build = "umd", permissions = [] } = {}) {
  // The test page is fulfilled by the test, not fetched, so Chromium does not know it came
  // from a loopback address and treats it as a public page: its Local Network Access checks
  // would block the WebSocket to 127.0.0.1 (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS)
  // unless the user allowed it. A page really served from the same loopback or private
  // address as Warbler needs no permission; here it is granted like a user would.
  const session = await openPage(browser, { origin: base, permissions: ["local-network-access", ...permissions] });
  const sockets = [];
  const requests = [];
  session.page.on("websocket", (ws) => {
    const socket = { url: ws.url(), sent: [], received: [] };
    ws.on("framesent", (f) => socket.sent.push(JSON.parse(f.payload)));
    ws.on("framereceived", (f) => socket.received.push(JSON.parse(f.payload)));
    sockets.push(socket);
  });
  session.page.on("request", (r) => {
    requests.push({ method: r.method(), path: new URL(r.url()).pathname, body: r.postData() });
  });
  await session.page.route(base + "/__test/**", (route) =>
    route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: pageHtml(build) }));
  await session.page.goto(base + "/__test/sdk.html#" + encodeURIComponent(server.creds.client_key));
  return { session, sockets, requests };
}

/** Waits until the page's client is open, pushes to its device, waits until the page shows it. */
async function pushTo(page, title) {
  const deviceId = await page.waitForFunction(() => document.body.dataset.device).then((h) => h.jsonValue());
  await page.waitForFunction(() => window.client?.state === "open", null, { timeout: 20000 });
  const id = await server.push({ to: { device: deviceId }, notification: { title }, data: { from: "api" } });
  await page.locator(`li[data-id="${id}"]`).waitFor({ timeout: 15000 });
  return id;
}

/** The page talked over one WebSocket to /v1/connect, never fell back, and logged no error. */
function assertWebSocketOnly(session, sockets, id) {
  assert.equal(sockets.length, 1, "one WebSocket");
  assert.equal(sockets[0].url, server.url.replace(/^https/, "wss") + "/v1/connect");
  assert.ok(sockets[0].received.some((f) => f.type === "message" && f.id === id), "the push came over it");
  assert.ok(sockets[0].sent.some((f) => f.type === "ack" && f.ids.includes(id)), "acked over it");
  assert.ok(sockets[0].sent.some((f) => f.type === "opened" && f.ids.includes(id)), "opened reported over it");
  assert.deepEqual(session.errors(), [], "no error in the page's console");
}

async function assertCounts(id) {
  const counts = await eventually("delivered, acked and opened", async () => {
    const c = await server.counts(id);
    return c.delivered === 1 && c.acked === 1 && c.opened === 1 && c;
  });
  assert.equal(counts.delivered, 1);
}

for (const build of ["umd", "esm"]) {
  test(`a page using the ${build} build from the binary receives a push and a click reports opened`, { timeout: 60000 }, async (t) => {
    const { session, sockets } = await sdkPage({ build });
    await session.run(t, async () => {
      const { page } = session;
      const id = await pushTo(page, "Hello, " + build);
      assert.equal(await page.evaluate(() => window.sdkVersion), "0.1.0");
      assert.equal(await page.locator(`li[data-id="${id}"] button`).textContent(), "Hello, " + build);
      assert.deepEqual(await page.evaluate(() => window.states), [
        { state: "connecting", transport: "websocket" },
        { state: "open", transport: "websocket" },
      ]);
      await page.locator(`li[data-id="${id}"] button`).click();
      assert.equal(await page.locator(`li[data-id="${id}"]`).getAttribute("data-opened"), "page");
      await assertCounts(id);
      assertWebSocketOnly(session, sockets, id);
    });
    await session.close();
  });
}

test("the SDK's notification helper shows a Notification whose click reports opened", { timeout: 60000 }, async (t) => {
  const { session, sockets } = await sdkPage({ permissions: ["notifications"] });
  await session.run(t, async () => {
    const { page } = session;
    assert.equal(await page.evaluate(() => Notification.permission), "granted");
    const id = await pushTo(page, "Hello, notification");
    const shown = await page.evaluate((id) => {
      const n = window.notifications.get(id);
      return n && { title: n.title, tag: n.tag, data: n.data };
    }, id);
    assert.deepEqual(shown, { title: "Hello, notification", tag: id, data: { from: "api" } });
    // Headless Chromium has no notification centre to click in: the click is dispatched to
    // the Notification object itself, which runs the handler the SDK installed.
    await page.evaluate((id) => window.notifications.get(id).dispatchEvent(new Event("click")), id);
    assert.equal(await page.locator(`li[data-id="${id}"]`).getAttribute("data-opened"), "notification");
    await assertCounts(id);
    assertWebSocketOnly(session, sockets, id);
  });
  await session.close();
});

test("behind a proxy refusing WebSocket upgrades the page falls back to SSE and still reports opened", { timeout: 60000 }, async (t) => {
  const proxy = await startProxy(server, (head) => /^upgrade:\s*websocket/im.test(head));
  const { session, sockets, requests } = await sdkPage({ base: proxy.url });
  try {
    await session.run(t, async () => {
      const { page } = session;
      const id = await pushTo(page, "Hello, SSE");
      const states = await page.evaluate(() => window.states);
      assert.deepEqual(states.find((s) => s.fallbackFrom), { state: "reconnecting", transport: "sse", fallbackFrom: "websocket" });
      assert.deepEqual(states.at(-1), { state: "open", transport: "sse" });
      assert.ok(sockets.length >= 1 && sockets.every((s) => s.received.length === 0), "no WebSocket got through");
      assert.ok(proxy.refused.some((line) => line.startsWith("GET /v1/connect")), "the proxy refused the upgrade");
      assert.ok(requests.some((r) => r.method === "GET" && r.path === "/v1/events"), "the event stream was opened");
      await page.locator(`li[data-id="${id}"] button`).click();
      await assertCounts(id);
      const posted = (path) => requests.some((r) => r.method === "POST" && r.path === path && JSON.parse(r.body).ids.includes(id));
      assert.ok(posted("/v1/ack"), "acked by POST");
      assert.ok(posted("/v1/opened"), "opened reported by POST");
      // The browser itself logs each refused handshake; nothing else may be an error.
      const unexpected = session.errors().filter((e) => !/^WebSocket connection to '[^']*\/v1\/connect' failed: .* 403$/.test(e.text));
      assert.deepEqual(unexpected, [], "no other error in the page's console");
    });
  } finally {
    await session.close();
    proxy.close();
  }
});
