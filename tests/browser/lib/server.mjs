// The real warbler binary for the browser tests: the same harness as the Node SDK tests
// (target/debug/warbler or WARBLER_BIN, a temporary data dir, a free loopback port, the
// bootstrapped CA and initial-credentials.json read back, API calls trusting the CA), and
// its TLS-terminating proxy that refuses chosen requests (a WebSocket-blocking proxy).
export { BIN, Server, eventually, freePort, sleep, startProxy } from "../../sdk/harness.mjs";
