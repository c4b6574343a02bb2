// DOM helpers for the Warbler console. Text goes in with textContent only, never as HTML:
// every name, title and body a tenant controls is shown as text.

const SVG = 'http://www.w3.org/2000/svg';

// h('tag.class', {attr, on: {event: fn}}, ...children); strings become text nodes.
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked') {
      el.checked = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A line chart of several series over the same points: [{label, cls, values: [n…]}].
export function lineChart(series, { width = 1000, height = 220, title = '', from = '', to = '' } = {}) {
  const n = Math.max(1, ...series.map((s) => s.values.length));
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const pad = 28;
  const x = (i) => pad + (i * (width - pad - 6)) / Math.max(1, n - 1);
  const y = (v) => height - 22 - (v * (height - 34)) / max;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  root.append(svg('title', {}, title));
  root.append(svg('line', { x1: pad, y1: y(0), x2: width - 6, y2: y(0), class: 'axis' }));
  root.append(svg('text', { x: 2, y: y(max) + 4, class: 'tick' }, String(max)));
  root.append(svg('text', { x: 2, y: y(0) + 4, class: 'tick' }, '0'));
  root.append(svg('text', { x: pad, y: height - 4, class: 'tick' }, from));
  root.append(svg('text', { x: width - 6, y: height - 4, class: 'tick end' }, to));
  for (const s of series) {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    root.append(svg('polyline', { points, class: `line ${s.cls}` }, svg('title', {}, s.label)));
  }
  return root;
}

// Horizontal bars for a push's funnel: [{label, value, cls}], scaled to the first.
export function funnel(steps) {
  const width = 320;
  const row = 22;
  const max = Math.max(1, ...steps.map((s) => s.value));
  const root = svg('svg', { viewBox: `0 0 ${width} ${row * steps.length}`, class: 'funnel' });
  steps.forEach((s, i) => {
    const w = Math.max(1, Math.round((s.value * 170) / max));
    root.append(svg('text', { x: 0, y: i * row + 15, class: 'flabel' }, s.label));
    root.append(svg('rect', { x: 100, y: i * row + 4, width: w, height: 14, class: `bar ${s.cls}` }));
    root.append(svg('text', { x: 106 + w, y: i * row + 15, class: 'fvalue' }, String(s.value)));
  });
  return root;
}

export function table(headers, rows) {
  return h('div.table-wrap', {},
    h('table', {},
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { text: x })))),
      h('tbody', {}, rows)));
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(document.documentElement.lang || undefined);
}
