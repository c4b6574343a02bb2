// The JavaScript SDK as served by the warbler binary, in Node 20 with the `ws` package:
// pushes, opened reports, kill -9 and restart, exactly-once at the application level, and
// the fall back to SSE (then long-poll) when a proxy refuses WebSocket upgrades.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { App, Server, eventually, sleep, startProxy } from "./harness.mjs";

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function server() {
  const s = await new Server().start();
  cleanups.push(() => s.stop());
  return s;
}

function app(s, opts) {
  const a = new App(s, opts);
  cleanups.push(() => a.stop());
  return a;
}

const isOpen = (transport) => (e) => e.event === "state" && e.state === "open" && e.transport === transport;

let shared;
before(async () => { shared = await server(); });

for (const build of ["umd", "esm"]) {
  test(`the ${build} build fetched from the binary receives a push, acks it and reports opened`, { timeout: 60000 }, async () => {
    const a = app(shared, { build });
    const { deviceId } = await a.waitFor("registered", (e) => e.event === "registered");
    await a.waitFor("open over websocket", isOpen("websocket"));
    const id = await shared.push({ to: { device: deviceId }, notification: { title: "Hello " + build }, data: { n: 1 } });
    const got = await a.waitFor("the message", (e) => e.event === "message" && e.id === id);
    assert.equal(got.title, "Hello " + build);
    assert.deepEqual(got.data, { n: 1 });
    await eventually("acked", async () => (await shared.counts(id)).acked === 1);
    a.send("opened " + id);
    await eventually("opened", async () => (await shared.counts(id)).opened === 1);
    await a.stop();
  });
}

test("survives kill -9 and a restart, and hands every pending message to the app exactly once", { timeout: 90000 }, async () => {
  const s = await server();
  const a = app(s);
  const { deviceId } = await a.waitFor("registered", (e) => e.event === "registered");
  await a.waitFor("open", isOpen("websocket"));
  const to = { device: deviceId };

  const first = await s.push({ to, notification: { title: "before" } });
  await a.waitFor("first", (e) => e.event === "message" && e.id === first);
  await eventually("first acked", async () => (await s.counts(first)).acked === 1);

  // The app is still handling `held` (so nothing after it is acked) when the server dies.
  const held = await s.push({ to, notification: { title: "held" }, data: { holdMs: 2500 } });
  const queued = await s.push({ to, notification: { title: "queued" } });
  await a.waitFor("held", (e) => e.event === "message" && e.id === held);
  await s.kill9();
  await a.waitFor("reconnecting", (e) => e.event === "state" && e.state === "reconnecting");
  await sleep(1000); // a few failed attempts against a dead port
  await s.start();
  const afterRestart = await s.push({ to, notification: { title: "after restart" } });

  const down = a.events.findIndex((e) => e.event === "state" && e.state === "reconnecting");
  await a.waitFor("reopened", (e) => e.event === "state" && e.state === "open" && a.events.indexOf(e) > down, 30000);
  const all = [first, held, queued, afterRestart];
  for (const id of all) await a.waitFor("message " + id, (e) => e.event === "message" && e.id === id, 20000);
  for (const id of all) await eventually("acked " + id, async () => (await s.counts(id)).acked === 1, 20000);
  await sleep(500); // time for any duplicate to show up
  const seen = a.messages().map((m) => m.id);
  assert.deepEqual(seen, all, "each message once, in order");
  const states = a.states().map((e) => e.state);
  assert.ok(states.includes("reconnecting") && states.lastIndexOf("open") > states.indexOf("reconnecting"));
  assert.ok(a.states().every((e) => e.transport === "websocket"), "a dead server is not mistaken for a blocked WebSocket");
  await a.stop();
});

test("falls back to SSE when a proxy refuses WebSocket upgrades", { timeout: 60000 }, async () => {
  const proxy = await startProxy(shared, (head) => /^upgrade:\s*websocket/im.test(head));
  cleanups.push(() => proxy.close());
  const a = app(shared, { url: proxy.url, sdkUrl: proxy.url });
  const { deviceId } = await a.waitFor("registered", (e) => e.event === "registered");
  const fallback = await a.waitFor("fallback", (e) => e.event === "state" && e.fallbackFrom === "websocket");
  assert.equal(fallback.transport, "sse");
  await a.waitFor("open over SSE", isOpen("sse"));
  assert.ok(proxy.refused.some((line) => line.startsWith("GET /v1/connect")), "the proxy refused the upgrade");
  const id = await shared.push({ to: { device: deviceId }, notification: { title: "over SSE" } });
  await a.waitFor("the message", (e) => e.event === "message" && e.id === id);
  await eventually("acked by POST", async () => (await shared.counts(id)).acked === 1);
  a.send("opened " + id);
  await eventually("opened", async () => (await shared.counts(id)).opened === 1);
  await a.stop();
});

test("falls back to long-poll when both WebSocket and SSE are refused", { timeout: 60000 }, async () => {
  const proxy = await startProxy(shared, (head) =>
    /^upgrade:\s*websocket/im.test(head) || head.startsWith("GET /v1/events"));
  cleanups.push(() => proxy.close());
  const a = app(shared, { url: proxy.url, sdkUrl: proxy.url });
  const { deviceId } = await a.waitFor("registered", (e) => e.event === "registered");
  await a.waitFor("open over long-poll", isOpen("poll"));
  const ids = [];
  for (const n of [1, 2, 3]) ids.push(await shared.push({ to: { device: deviceId }, notification: { title: "poll " + n } }));
  for (const id of ids) await eventually("acked " + id, async () => (await shared.counts(id)).acked === 1);
  assert.deepEqual(a.messages().map((m) => m.id), ids);
  await a.stop();
});
