// The admin console in headless Chromium against the real binary: sign in, create an app
// and a key, find a device that a real WebSocket connection registered, send it a test push
// from the devices page and watch the funnel reach "acked", show a push whose title is HTML
// as text, switch to 简体中文, sign out. With SAVE_SCREENSHOTS=1 it also writes the
// screenshots in docs/screenshots/.
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { launch, openPage } from "./lib/browser.mjs";
import { Server } from "./lib/server.mjs";

const SHOTS = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../docs/screenshots");
const HOSTILE = "<img src=x onerror=alert(1)>";

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

async function shot(page, name) {
  if (process.env.SAVE_SCREENSHOTS !== "1") return;
  await page.screenshot({ path: path.join(SHOTS, name + ".png") });
}

/** A device: registered with the client key, connected over a real WebSocket from a page. */
async function connectDevice(clientKey) {
  const reg = await server.call("POST", "/v1/devices/register", clientKey, { platform: "web" });
  assert.equal(reg.status, 201, JSON.stringify(reg.body));
  const session = await openPage(browser);
  await session.page.goto(server.url + "/healthz");
  await session.page.evaluate((token) => new Promise((resolve, reject) => {
    window.received = [];
    const ws = new WebSocket(location.origin.replace("https", "wss") + "/v1/connect");
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token }));
    ws.onerror = () => reject(new Error("websocket failed"));
    ws.onmessage = (e) => {
      const f = JSON.parse(e.data);
      if (f.type === "welcome") resolve();
      if (f.type === "message") {
        window.received.push(f);
        ws.send(JSON.stringify({ type: "ack", ids: [f.id] }));
      }
    };
  }), reg.body.token);
  return { id: reg.body.device_id, session };
}

test("the console signs in, manages an app, sends a test push that arrives, shows hostile text as text, speaks Chinese and signs out", async (t) => {
  const { page, run, errors, close } = await openPage(browser);
  await page.setViewportSize({ width: 1280, height: 800 });
  // The console asks before revoking (confirm); any other dialog would be injected script.
  let dialogs = 0;
  page.on("dialog", async (d) => {
    if (d.type() === "confirm") return d.accept();
    dialogs += 1;
    return d.dismiss();
  });
  await run(t, async () => {
    const response = await page.goto(server.url + "/");
    const csp = response.headers()["content-security-policy"];
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /frame-ancestors 'none'/);

    // Sign in as the first-start owner.
    await page.fill("#login-user", "admin");
    await page.fill("#login-password", server.creds.admin_password);
    await page.click("form.login button[type=submit]");
    await page.waitForSelector("#dashboard .tile");
    await page.waitForSelector("#logout");

    // Create an app; its client key is shown once.
    await page.goto(server.url + "/#/apps");
    await page.fill("#new-app-name", "shop");
    await page.click("#create-app button[type=submit]");
    const clientKey = (await page.textContent("#create-app .secret-value")).trim();
    assert.match(clientKey, /^wck_/);
    await page.reload();
    await page.selectOption("#app-picker", "shop");
    await page.waitForSelector("#create-key");
    await page.fill("#key-name", "from the console");
    await page.click("#create-key button[type=submit]");
    const apiKey = (await page.textContent("#new-key .secret-value")).trim();
    assert.match(apiKey, /^wak_/);
    await shot(page, "apps");

    // A device connects over WebSocket; the devices page finds it online.
    const device = await connectDevice(clientKey);
    await page.goto(server.url + "/#/devices");
    await page.selectOption("#device-by", "id");
    await page.fill("#device-query", device.id);
    await page.click("#device-search button[type=submit]");
    await page.waitForSelector("#device-results .badge.on");
    await page.click("#device-results .test-push");
    await page.fill("#push-title", "Console test push");
    await page.click("#send-test");
    await page.waitForSelector("#push-status .state-acked", { timeout: 20000 });
    const received = await device.session.page.evaluate(() => window.received.map((f) => f.notification.title));
    assert.deepEqual(received, ["Console test push"]);
    await shot(page, "devices");

    // A push whose title is HTML, to a device that is offline (its body stays stored).
    const offline = await server.call("POST", "/v1/devices/register", clientKey, { platform: "web" });
    const sent = await server.call("POST", "/v1/messages", apiKey, {
      to: { device: offline.body.device_id },
      notification: { title: HOSTILE, body: "<b>bold?</b>" },
    });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    await page.goto(server.url + "/#/messages");
    const title = page.locator("#message-list .message .title", { hasText: HOSTILE });
    await title.waitFor();
    assert.equal(await title.textContent(), HOSTILE);
    assert.equal(await page.locator("#message-list img").count(), 0, "no img element was made");
    assert.equal(dialogs, 0, "no script ran");
    assert.ok(await page.locator("#message-list .state-acked").count() >= 1, "the test push is listed as acked");
    await shot(page, "messages");

    // An owner creates a viewer of "shop"; signed in, it sees only that app and cannot create.
    await page.goto(server.url + "/#/users");
    await page.fill("#new-user", "shop-viewer");
    await page.fill("#new-user-password", "viewer password 1");
    await page.selectOption("#new-user-role", "viewer");
    await page.selectOption("#new-user-apps", ["shop"]);
    await page.click("#create-user button[type=submit]");
    await page.waitForSelector("#user-list td:text-is('shop-viewer')");
    // Then gives it "demo" too, from the user list.
    const editor = page.locator("#user-list select.user-apps[data-user='shop-viewer']");
    await editor.selectOption(["demo", "shop"]);
    const [patched] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/v1/admin/users/shop-viewer") && r.request().method() === "PATCH"),
      editor.locator("xpath=..").locator("button").click(),
    ]);
    assert.equal(patched.status(), 200);
    assert.deepEqual((await patched.json()).apps, ["demo", "shop"]);
    const viewer = await openPage(browser);
    await viewer.page.goto(server.url + "/");
    await viewer.page.fill("#login-user", "shop-viewer");
    await viewer.page.fill("#login-password", "viewer password 1");
    await viewer.page.click("form.login button[type=submit]");
    await viewer.page.waitForSelector("#dashboard .tile");
    await viewer.page.goto(server.url + "/#/apps");
    await viewer.page.waitForSelector("#app-detail h2");
    assert.deepEqual((await viewer.page.locator("#app-picker option").allTextContents()).sort(), ["demo", "shop"]);
    assert.equal(await viewer.page.locator("#create-app").count(), 0, "no create form for a viewer");
    assert.equal(await viewer.page.locator("#create-key").count(), 0, "no key form for a viewer");
    assert.equal(await viewer.page.locator("nav a[href='#/users']").count(), 0, "no users page for a viewer");
    await viewer.close();

    for (const name of ["dashboard", "users", "settings", "audit"]) {
      await page.goto(server.url + "/#/" + name);
      await page.waitForSelector("main#page .card");
      await shot(page, name);
    }

    // Delete the offline device from the devices page.
    await page.goto(server.url + "/#/devices");
    await page.selectOption("#device-by", "id");
    await page.fill("#device-query", offline.body.device_id);
    await page.click("#device-search button[type=submit]");
    // Bind it to a user with two topics from the page; the API and the row agree.
    await page.click("#device-results button.edit-device");
    await page.fill("#device-user", "alice");
    await page.fill("#device-topics", "news, sale");
    await page.click("#device-edit button[type=submit]");
    await page.waitForSelector("#device-results td:text-is('alice')");
    const bound = await server.call("GET", "/v1/apps/shop/devices?id=" + offline.body.device_id, server.creds.admin_token);
    assert.equal(bound.body.devices[0].user, "alice");
    assert.deepEqual(bound.body.devices[0].topics, ["news", "sale"]);
    await page.click("#device-results button.danger");
    await page.waitForSelector("#device-results p");
    const gone = await server.call("GET", "/v1/apps/shop/devices?id=" + offline.body.device_id, server.creds.admin_token);
    assert.deepEqual(gone.body.devices, [], "the device is deleted");

    // Revoke the key from the apps page: it stops working at once.
    await page.goto(server.url + "/#/apps");
    const row = page.locator("#keys tr", { hasText: "from the console" });
    await row.locator("button.danger").click();
    await row.waitFor({ state: "detached" });
    const refused = await server.call("GET", "/v1/stats", apiKey);
    assert.equal(refused.status, 401, "a revoked key is refused");

    // A phone: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(server.url + "/#/dashboard");
    await page.waitForSelector("#dashboard .tile");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, "no horizontal scrolling on a phone (" + overflow + " px)");
    await shot(page, "phone-dashboard");
    await page.setViewportSize({ width: 1280, height: 800 });

    // 简体中文: the navigation is translated, then sign out.
    await page.selectOption("#lang", "zh");
    await page.waitForSelector("nav a:has-text('仪表盘')");
    assert.equal(await page.textContent("#logout"), "退出登录");
    await page.waitForSelector("#dashboard .tile");
    await shot(page, "dashboard-zh");
    await page.click("#logout");
    await page.waitForSelector("form.login");
    assert.equal(await page.textContent("form.login h1"), "登录 Warbler");
    await shot(page, "login-zh");
    const me = await page.evaluate(async () => (await fetch("/v1/admin/me")).status);
    assert.equal(me, 401, "the session ended on the server");
    assert.deepEqual(errors().filter((e) => !/401|Unauthorized/.test(e.text)), [], "no page errors");
    await device.session.close();
  });
  await close();
});
