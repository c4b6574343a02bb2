// Traffic pages: the dashboard (live connections, pushes per second and delivery rate over
// the last hour), devices (find, send a test push and watch it arrive), recent messages
// with each push's funnel.

import { api, enc } from './api.js';
import { h, clear, table, when, lineChart, funnel } from './dom.js';
import { t } from './i18n.js';
import { every, flash } from './app.js';

export async function dashboardPage(main) {
  main.append(h('h1', { text: t('dash.title') }));
  const body = h('div', { id: 'dashboard' });
  main.append(body);
  const draw = async () => {
    const o = await api('GET', '/v1/admin/overview');
    const s = o.series;
    const sum = (k) => s.reduce((n, p) => n + p[k], 0);
    const accepted = sum('accepted');
    // Pushes per second over the current minute so far and the whole minute before it.
    const now = new Date();
    const seconds = 60 + now.getUTCSeconds();
    const recent = s.slice(-2).reduce((n, p) => n + p.accepted, 0);
    // Of the copies that reached an outcome in the hour, the share delivered (not expired).
    const delivered = sum('delivered');
    const expired = sum('expired');
    const rate = delivered + expired > 0 ? Math.round((delivered * 100) / (delivered + expired)) : null;
    clear(body).append(
      h('div.tiles', {},
        tile(t('dash.connections'), o.connections, 'tile-connections'),
        tile(t('dash.pushes_per_second'), (recent / seconds).toFixed(2), 'tile-pps'),
        tile(t('dash.pushes_hour'), accepted, 'tile-hour'),
        tile(t('dash.delivery_rate'), rate === null ? '—' : `${rate}%`, 'tile-rate')),
      h('section.card', {},
        h('h2', { text: t('dash.chart_title') }),
        lineChart([
          { label: t('funnel.accepted'), cls: 'accepted', values: s.map((p) => p.accepted) },
          { label: t('funnel.delivered'), cls: 'delivered', values: s.map((p) => p.delivered) },
          { label: t('funnel.acked'), cls: 'acked', values: s.map((p) => p.acked) },
        ], {
          title: t('dash.chart_title'),
          from: new Date(s[0].t).toLocaleTimeString(document.documentElement.lang || undefined, { hour: '2-digit', minute: '2-digit' }),
          to: t('dash.now'),
        }),
        h('p.legend', {},
          h('span.key.accepted', { text: t('funnel.accepted') }),
          h('span.key.delivered', { text: t('funnel.delivered') }),
          h('span.key.acked', { text: t('funnel.acked') }))),
      h('section.card', {},
        h('h2', { text: t('dash.apps') }),
        table([t('apps.name'), t('dash.connections'), t('apps.state')], o.apps.map((a) => h('tr', {},
          h('td', { text: a.id }),
          h('td', { text: a.connections }),
          h('td', { text: a.suspended ? t('apps.suspended') : t('apps.active') }))))));
  };
  await draw();
  every(5000, () => draw().catch(() => {}));
}

function tile(label, value, id) {
  return h('div.tile', { id }, h('span.value', { text: value }), h('span.label', { text: label }));
}

function funnelOf(counts) {
  return funnel([
    { label: t('funnel.targeted'), value: counts.targeted, cls: 'targeted' },
    { label: t('funnel.delivered'), value: counts.delivered, cls: 'delivered' },
    { label: t('funnel.acked'), value: counts.acked, cls: 'acked' },
    { label: t('funnel.opened'), value: counts.opened, cls: 'opened' },
    { label: t('funnel.expired'), value: counts.expired, cls: 'expired' },
  ]);
}

export async function devicesPage(main, ctx) {
  main.append(h('h1', { text: t('devices.title', { app: ctx.app }) }));
  const by = h('select', { id: 'device-by', 'aria-label': t('devices.by') },
    h('option', { value: 'user', text: t('devices.by_user') }),
    h('option', { value: 'id', text: t('devices.by_id') }));
  const q = h('input', { id: 'device-query', required: true, placeholder: 'alice / dev_…' });
  const results = h('div', { id: 'device-results' });
  const canManage = ctx.me.role === 'owner' || ctx.me.role === 'admin';
  const search = async () => {
    const { devices } = await api('GET', `/v1/apps/${enc(ctx.app)}/devices?${by.value}=${enc(q.value.trim())}`);
    clear(results);
    if (!devices.length) {
      results.append(h('p', { text: t('devices.none') }));
      return;
    }
    results.append(table(
      [t('devices.id'), t('devices.platform'), t('devices.user'), t('devices.topics'), t('devices.online'), t('devices.last_seen'), ''],
      devices.map((d) => h('tr', {},
        h('td', {}, h('code', { text: d.id })),
        h('td', { text: d.platform }),
        h('td', { text: d.user ?? '—' }),
        h('td', { text: (d.topics || []).join(", ") || '—' }),
        h('td', {}, h('span', { class: d.online ? 'badge on' : 'badge off', text: d.online ? t('devices.is_online') : t('devices.is_offline') })),
        h('td', { text: when(d.last_seen) }),
        h('td.actions', {},
          ctx.me.role === 'viewer' ? '' : h('button', { class: 'test-push', text: t('devices.test_push'), on: { click: () => testPush(main, ctx, d.id) } }),
          canManage ? h('button', { class: 'edit-device', text: t('devices.edit'), on: { click: () => editDevice(main, ctx, d, search) } }) : '',
          canManage ? h('button.danger', {
            text: t('devices.delete'),
            on: {
              click: async () => {
                if (!window.confirm(t('devices.delete_confirm', { device: d.id }))) return;
                try {
                  await api('DELETE', `/v1/apps/${enc(ctx.app)}/devices/${enc(d.id)}`);
                  await search();
                } catch (err) {
                  flash(main, err);
                }
              },
            },
          }) : '')))));
  };
  main.append(h('form.card.row', {
    id: 'device-search',
    on: { submit: async (e) => { e.preventDefault(); try { await search(); } catch (err) { flash(main, err); } } },
  }, by, q, h('button', { type: 'submit', text: t('devices.find') })), results, h('div', { id: 'test-push' }));
}

// Binds a device to a user and sets its topics (PATCH); an empty user unbinds it.
function editDevice(main, ctx, d, search) {
  const box = clear(main.querySelector('#test-push'));
  const user = h('input', { id: 'device-user', value: d.user ?? '', maxlength: 128 });
  const topics = h('input', { id: 'device-topics', value: (d.topics || []).join(", "), placeholder: t('devices.topics_hint') });
  box.append(h('form.card', {
    id: 'device-edit',
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          await api('PATCH', `/v1/apps/${enc(ctx.app)}/devices/${enc(d.id)}`, {
            user: user.value.trim() || null,
            topics: topics.value.split(",").map((x) => x.trim()).filter((x) => x),
          });
          clear(box);
          await search();
        } catch (err) {
          flash(main, err);
        }
      },
    },
  },
  h('h2', { text: t('devices.edit_title', { device: d.id }) }),
  h('label', { for: 'device-user', text: t('devices.user') }), user,
  h('label', { for: 'device-topics', text: t('devices.topics') }), topics,
  h('button', { type: 'submit', text: t('devices.save') })));
}

function testPush(main, ctx, device) {
  const box = clear(main.querySelector('#test-push'));
  const title = h('input', { id: 'push-title', value: t('devices.test_title'), maxlength: 200 });
  const body = h('input', { id: 'push-body', value: t('devices.test_body'), maxlength: 1000 });
  const status = h('div', { id: 'push-status' });
  box.append(h('form.card', {
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          const sent = await api('POST', `/v1/apps/${enc(ctx.app)}/messages`, {
            to: { device },
            notification: { title: title.value, body: body.value },
          });
          watch(ctx.app, sent.id, status);
        } catch (err) {
          flash(main, err);
        }
      },
    },
  },
  h('h2', { text: t('devices.test_push_to', { device }) }),
  h('label', { for: 'push-title', text: t('devices.push_title') }), title,
  h('label', { for: 'push-body', text: t('devices.push_body') }), body,
  h('button', { type: 'submit', id: 'send-test', text: t('devices.send') }),
  status));
}

// Polls a push's counts until it is acked (or 60 s pass), redrawing its funnel.
function watch(app, id, box) {
  let rounds = 0;
  const draw = async () => {
    const m = await api('GET', `/v1/apps/${enc(app)}/messages/${enc(id)}`);
    clear(box).append(
      h('p', {}, h('code', { text: m.id }), ' ', h('span', { class: `state state-${m.state}`, text: t(`state.${m.state}`) })),
      funnelOf(m.counts));
    return m.counts.acked >= m.counts.targeted && m.counts.targeted > 0;
  };
  const timer = setInterval(async () => {
    rounds += 1;
    const done = await draw().catch(() => true);
    if (done || rounds > 60) clearInterval(timer);
  }, 1000);
  draw().catch(() => {});
}

export async function messagesPage(main, ctx) {
  main.append(h('h1', { text: t('messages.title', { app: ctx.app }) }));
  const list = h('div', { id: 'message-list' });
  main.append(list);
  const draw = async () => {
    const { messages } = await api('GET', `/v1/apps/${enc(ctx.app)}/messages?limit=50`);
    clear(list);
    if (!messages.length) {
      list.append(h('p', { text: t('messages.none') }));
      return;
    }
    for (const m of messages) {
      list.append(h('article.card.message', {},
        h('header.row', {},
          h('strong.title', { text: m.title ?? t('messages.no_title') }),
          h('span', { class: `state state-${m.state}`, text: t(`state.${m.state}`) })),
        h('p.meta', {}, h('code', { text: m.id }), ` · ${when(m.created_at)} · `, h('span', { text: m.target })),
        funnelOf(m.counts)));
    }
  };
  await draw();
  every(5000, () => draw().catch(() => {}));
}
