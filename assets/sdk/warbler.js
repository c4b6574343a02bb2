/*! Warbler JavaScript SDK 0.1.0. Served by every Warbler server at /sdk/warbler.js (UMD:
 * a global `Warbler`, or CommonJS) and /sdk/warbler.mjs (ES module). No dependencies.
 * Apache-2.0. Documentation: docs/sdk.md. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.Warbler = factory();
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";
  // <core> (warbler.mjs is this block with ES module exports; a test keeps them equal)
  const VERSION = "0.1.0";
  const TRANSPORTS = ["websocket", "sse", "poll"];
  /** WebSocket close codes and SSE close reasons after which reconnecting cannot help. */
  const FINAL = {
    1002: "protocol_error", 1003: "protocol_error", 1008: "protocol_error",
    4001: "unauthenticated", 4004: "device_removed", 4009: "replaced",
    replaced: "replaced", device_removed: "device_removed",
  };
  const MAX_IDS = 1000;

  /** An error with the server's stable code (`unauthenticated`, `not_found`, …). */
  class WarblerError extends Error {
    constructor(code, message, status) {
      super(message);
      this.name = "WarblerError";
      this.code = code;
      this.status = status;
    }
  }

  const trimUrl = (url) => String(url).replace(/\/+$/, "");
  const defaultFetch = () => (typeof fetch === "function" ? fetch.bind(globalThis) : null);

  async function errorFrom(res) {
    let code = "http_" + res.status;
    let message = res.statusText || "request failed";
    try {
      const body = await res.json();
      if (body && body.error) ({ code, message } = body.error);
    } catch (_) { /* not JSON */ }
    return new WarblerError(code, message, res.status);
  }

  /** A 403 from Warbler itself (the app is suspended), not from a proxy on the way. */
  async function isSuspended(res) {
    return (await errorFrom(res)).code === "forbidden";
  }

  /** Registers a device with the app's client key; resolves to `{deviceId, token}`. */
  async function register({ url, clientKey, platform = "web", userToken, fetch: f } = {}) {
    const doFetch = f || defaultFetch();
    const body = { platform };
    if (userToken) body.user_token = userToken;
    const res = await doFetch(trimUrl(url) + "/v1/devices/register", {
      method: "POST",
      headers: { authorization: "Bearer " + clientKey, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (res.status !== 201) throw await errorFrom(res);
    const reply = await res.json();
    return { deviceId: reply.device_id, token: reply.token };
  }

  /** A bounded map of recently seen message ids to their state, oldest evicted first. */
  class Recent {
    constructor(max) { this.max = max; this.map = new Map(); }
    get(id) { return this.map.get(id); }
    set(id, state) {
      this.map.delete(id);
      this.map.set(id, state);
      if (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
    }
    delete(id) { this.map.delete(id); }
  }

  /**
   * A device's connection: WebSocket, else Server-Sent Events, else long-poll; reconnects
   * with exponential backoff and jitter; hands each message to `onMessage` once (ids are
   * remembered across reconnects) and acks it when `onMessage` returns.
   */
  class Client {
    constructor(options) {
      const o = options || {};
      if (!o.url || !o.token) throw new TypeError("Warbler.Client needs {url, token}");
      this.url = trimUrl(o.url);
      this.token = o.token;
      this.onMessage = o.onMessage || (() => {});
      this.onGap = o.onGap || (() => {});
      this.onStateChange = o.onStateChange || (() => {});
      this.onError = o.onError || (() => {});
      this.autoAck = o.autoAck !== false;
      this.WebSocket = o.WebSocket || (typeof WebSocket === "function" ? WebSocket : null);
      this.fetch = o.fetch || defaultFetch();
      this.transports = (o.transports || TRANSPORTS).filter(
        (t) => TRANSPORTS.includes(t) && (t !== "websocket" || this.WebSocket));
      if (!this.transports.length) throw new TypeError("Warbler.Client: no usable transport");
      this.backoff = Object.assign({ initial: 500, max: 30000 }, o.backoff);
      this.recent = new Recent(o.dedupeSize || 1000);
      this.state = "idle";
      this.transport = null;
      this.deviceId = null;
      this._gen = 0;
      this._ti = 0;
      this._attempt = 0;
      this._strikes = 0;
      this._conn = null;
      this._timer = null;
      this._stopped = true;
      this._outbox = { ack: new Set(), opened: new Set() };
      this._flushing = null;
      this._queue = Promise.resolve();
    }

    /** Starts connecting (and reconnecting until `close()` or a final close). */
    connect() {
      if (!this._stopped) return this;
      this._stopped = false;
      this._ti = 0;
      this._attempt = 0;
      this._open();
      return this;
    }

    /** Stops: closes the connection and cancels any reconnect. Queued acks are sent first. */
    close() {
      if (this._stopped && this.state === "closed") return;
      this._flush();
      this._stopped = true;
      this._gen++;
      clearTimeout(this._timer);
      if (this._conn) this._conn.close();
      this._conn = null;
      this._setState("closed", { reason: "closed" });
    }

    /** Acknowledges messages (needed only with `autoAck: false`). */
    ack(...ids) { this._queueIds("ack", ids.flat()); }

    /** Reports that the user opened these messages (for example, clicked a notification). */
    opened(...ids) { this._queueIds("opened", ids.flat()); }

    /** Shows `message` with the browser's Notification API; a click reports `opened`. */
    showNotification(message, options) { return showNotification(this, message, options); }

    _queueIds(kind, ids) {
      for (const id of ids) {
        if (kind === "ack" && this.recent.get(id)) this.recent.set(id, "acked");
        this._outbox[kind].add(id);
      }
      this._flush();
    }

    _setState(state, info) {
      this.state = state;
      try { this.onStateChange(state, Object.assign({ transport: this.transport }, info)); } catch (e) { this._report(e); }
    }

    _report(error) { try { this.onError(error); } catch (_) { /* the app's own bug */ } }

    _open() {
      const gen = ++this._gen;
      this.transport = this.transports[this._ti];
      this._setState("connecting", { attempt: this._attempt });
      const open = { websocket: this._openWebSocket, sse: this._openSse, poll: this._openPoll }[this.transport];
      this._conn = open.call(this, gen);
    }

    _welcome(gen, frame) {
      if (gen !== this._gen) return;
      this._attempt = 0;
      this._strikes = 0;
      if (frame.device_id) this.deviceId = frame.device_id;
      this._setState("open", {});
      this._flush();
    }

    /** Every `message` and `gap` frame of every transport comes through here, in order. */
    _frame(frame) {
      if (frame.type === "gap") {
        this._enqueue(() => this.onGap(frame.dropped));
        return;
      }
      if (frame.type !== "message" || typeof frame.id !== "string") return;
      const seen = this.recent.get(frame.id);
      if (seen === "acked") { this._queueIds("ack", [frame.id]); return; }
      if (seen) return; // being handled, or handled and awaiting the app's own ack
      this.recent.set(frame.id, "handling");
      this._enqueue(async () => {
        try {
          await this.onMessage(frame);
        } catch (e) {
          this.recent.delete(frame.id); // not acked: the server sends it again next session
          this._report(e);
          return;
        }
        if (this.recent.get(frame.id) === "handling") this.recent.set(frame.id, "handled");
        if (this.autoAck) this.ack(frame.id);
      });
    }

    _enqueue(task) {
      this._queue = this._queue.then(task).catch((e) => this._report(e));
      return this._queue;
    }

    /** Sends queued acks and `opened` reports: as frames on an open WebSocket, else by POST. */
    _flush() {
      if (this._flushing) { this._flushAgain = true; return this._flushing; }
      this._flushing = (async () => {
        do {
          this._flushAgain = false;
          for (const kind of ["ack", "opened"]) {
            const box = this._outbox[kind];
            while (box.size) {
              const ids = Array.from(box).slice(0, MAX_IDS);
              const conn = this._conn;
              if (conn && conn.send && this.state === "open" && conn.send({ type: kind, ids })) {
                ids.forEach((id) => box.delete(id));
                continue;
              }
              try {
                await this._post("/v1/" + kind, { ids });
                ids.forEach((id) => box.delete(id));
              } catch (e) {
                return; // kept; retried after the next (re)connect
              }
            }
          }
        } while (this._flushAgain);
      })().finally(() => { this._flushing = null; });
      return this._flushing;
    }

    async _post(path, body) {
      const res = await this.fetch(this.url + path, {
        method: "POST",
        headers: { authorization: "Bearer " + this.token, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw await errorFrom(res);
    }

    /** Decides what follows the end of a connection: stop, fall back, or back off. */
    async _ended(gen, info) {
      if (gen !== this._gen || this._stopped) return;
      this._conn = null;
      if (info.final) {
        this._stopped = true;
        this._setState("closed", { reason: info.final });
        this._report(new WarblerError(info.final, "connection closed: " + info.final));
        return;
      }
      // Never got through twice in a row, yet the server answers HTTP: this transport is
      // blocked on the way (a proxy), so fall back. (Once is not enough: the server may have
      // come back between the failed attempt and the probe.)
      if (!info.welcomed && !info.through && this._ti < this.transports.length - 1) {
        const reachable = await this._reachable();
        if (gen !== this._gen || this._stopped) return;
        if (reachable && ++this._strikes < 2) { this._open(); return; }
        if (reachable) {
          const from = this.transport;
          this._strikes = 0;
          this._ti++;
          this._setState("reconnecting", { fallbackFrom: from, transport: this.transports[this._ti] });
          this._open();
          return;
        }
      }
      this._strikes = 0;
      // A fallback session that ended: try the preferred transport again first.
      if (info.welcomed) this._ti = 0;
      const ceiling = info.slow ? this.backoff.max
        : Math.min(this.backoff.max, this.backoff.initial * 2 ** Math.min(this._attempt, 16));
      const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      this._attempt++;
      this._setState("reconnecting", { attempt: this._attempt, delay });
      this._timer = setTimeout(() => { if (gen === this._gen && !this._stopped) this._open(); }, delay);
    }

    async _reachable() {
      try {
        const init = { cache: "no-store" };
        if (typeof document !== "undefined") init.mode = "no-cors"; // cross-origin pages
        await this.fetch(this.url + "/healthz", init);
        return true;
      } catch (_) {
        return false;
      }
    }

    _openWebSocket(gen) {
      let ws;
      try {
        ws = new this.WebSocket(this.url.replace(/^http/, "ws") + "/v1/connect");
      } catch (e) {
        Promise.resolve().then(() => this._ended(gen, {}));
        return null;
      }
      let through = false;
      let welcomed = false;
      ws.onopen = () => { through = true; ws.send(JSON.stringify({ type: "hello", token: this.token })); };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(String(event.data)); } catch (_) { return; }
        if (frame.type === "welcome") { welcomed = true; this._welcome(gen, frame); } else this._frame(frame);
      };
      ws.onerror = () => {}; // a close event follows
      ws.onclose = (event) => {
        this._ended(gen, { welcomed, through, final: FINAL[event.code], slow: event.code === 4003 });
      };
      return {
        send: (frame) => {
          if (ws.readyState !== 1) return false;
          ws.send(JSON.stringify(frame));
          return true;
        },
        close: () => { try { ws.close(1000); } catch (_) { /* closed already */ } },
      };
    }

    _openSse(gen) {
      const abort = new AbortController();
      this._stream(gen, abort);
      return { close: () => abort.abort() };
    }

    /** SSE over fetch streaming (works in browsers and Node 18+ alike, and sends a header). */
    async _stream(gen, abort) {
      const end = (info) => this._ended(gen, info);
      let res;
      try {
        res = await this.fetch(this.url + "/v1/events", {
          headers: { authorization: "Bearer " + this.token, accept: "text/event-stream" },
          cache: "no-store", signal: abort.signal,
        });
      } catch (_) { return end({}); }
      if (res.status === 401) return end({ final: "unauthenticated" });
      if (res.status === 403 && (await isSuspended(res))) return end({ through: true, slow: true });
      const type = res.headers.get("content-type") || "";
      if (!res.ok || !type.startsWith("text/event-stream") || !res.body) return end({ through: res.status >= 500 });
      const info = { through: true, welcomed: false };
      let heard = Date.now();
      let heartbeat = 25;
      const watchdog = setInterval(() => {
        if (Date.now() - heard > (2 * heartbeat + 10) * 1000) abort.abort();
      }, 5000);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let event = "message";
      let data = [];
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          heard = Date.now();
          buffer += decoder.decode(value, { stream: true });
          let newline;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).replace(/\r$/, "");
            buffer = buffer.slice(newline + 1);
            if (line === "") {
              if (data.length) {
                const frame = JSON.parse(data.join("\n"));
                if (event === "welcome") {
                  info.welcomed = true;
                  heartbeat = frame.heartbeat || heartbeat;
                  this._welcome(gen, frame);
                } else if (event === "close") {
                  info.final = FINAL[frame.reason];
                  info.slow = frame.reason === "app_closed";
                } else this._frame(frame);
              }
              event = "message";
              data = [];
            } else if (!line.startsWith(":")) {
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "event") event = value;
              else if (field === "data") data.push(value);
            }
          }
        }
      } catch (_) {
        /* dropped or aborted */
      } finally {
        clearInterval(watchdog);
      }
      end(info);
    }

    _openPoll(gen) {
      const abort = new AbortController();
      this._poll(gen, abort);
      return { close: () => abort.abort() };
    }

    /** Long-poll: poll, hand the frames to the app, ack by POST, poll again. */
    async _poll(gen, abort) {
      let welcomed = false;
      for (;;) {
        let res;
        let frames;
        try {
          // The first poll answers at once, so the state is `open` as soon as we got through.
          res = await this.fetch(this.url + "/v1/poll?wait=" + (welcomed ? 25 : 0), {
            headers: { authorization: "Bearer " + this.token }, cache: "no-store", signal: abort.signal,
          });
          if (res.status === 401) return this._ended(gen, { final: "unauthenticated" });
          if (res.status === 403 && (await isSuspended(res))) return this._ended(gen, { through: true, slow: true });
          if (!res.ok) return this._ended(gen, { welcomed, through: res.status >= 500 });
          frames = await res.json();
        } catch (_) {
          return this._ended(gen, { welcomed });
        }
        if (gen !== this._gen) return;
        if (!welcomed) { welcomed = true; this._welcome(gen, {}); }
        for (const frame of frames) this._frame(frame);
        await this._queue;
        await this._flush();
      }
    }
  }

  /**
   * Shows a message as a browser notification (the page must hold Notification permission:
   * call `Notification.requestPermission()` from a user gesture first). Clicking it reports
   * `opened`, then calls `options.onClick(message, event)` or opens `notification.url`.
   * Returns the Notification, or null when notifications are unavailable or not permitted.
   */
  function showNotification(client, message, options) {
    const o = options || {};
    const N = o.Notification || (typeof Notification === "function" ? Notification : null);
    if (!N || N.permission !== "granted") return null;
    const n = message.notification || {};
    const shown = new N(n.title || o.title || "", {
      body: n.body, icon: n.image, tag: message.collapse_key || message.id, data: message.data,
    });
    shown.onclick = (event) => {
      client.opened(message.id);
      if (o.onClick) o.onClick(message, event);
      else if (n.url && typeof window !== "undefined") { window.focus(); window.open(n.url, "_blank"); }
      shown.close();
    };
    return shown;
  }

  const Warbler = { Client, register, showNotification, WarblerError, VERSION };
  // </core>
  return Warbler;
});
