// Apps: list, create, suspend, limits, API keys (a new key is shown once), revoke.

import { api, enc } from './api.js';
import { h, clear, table, when } from './dom.js';
import { t } from './i18n.js';
import { flash } from './app.js';

const LIMITS = ['max_message_bytes', 'pushes_per_second', 'default_ttl', 'max_ttl', 'mailbox_cap', 'max_connections'];

export async function appsPage(main, ctx) {
  main.append(h('h1', { text: t('apps.title') }));
  const isOwner = ctx.me.role === 'owner';
  const canManage = isOwner || ctx.me.role === 'admin';
  const list = h('section.card');
  const detail = h('section.card', { id: 'app-detail' });
  if (isOwner) main.append(createForm(main, ctx));
  main.append(list, detail);
  const { apps } = await api('GET', '/v1/apps');
  const rows = apps.map((a) => h('tr', {},
    h('td', {}, h('a', { href: '#/apps', text: a.name, on: { click: (e) => { e.preventDefault(); showApp(main, detail, a.name, canManage); } } })),
    h('td', { text: a.suspended ? t('apps.suspended') : t('apps.active') }),
    h('td', { text: when(a.created_at) })));
  list.append(h('h2', { text: t('apps.list') }), table([t('apps.name'), t('apps.state'), t('apps.created')], rows));
  if (ctx.app) await showApp(main, detail, ctx.app, canManage);
}

function createForm(main, ctx) {
  const name = h('input', { id: 'new-app-name', required: true, pattern: '[a-z0-9][a-z0-9\\-]{0,31}', placeholder: 'shop' });
  const out = h('div');
  return h('form.card.row', {
    id: 'create-app',
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          const created = await api('POST', '/v1/apps', { name: name.value });
          await ctx.refreshMe();
          clear(out).append(secretBox(t('apps.created_once'), [
            [t('apps.client_key'), created.client_key],
            [t('apps.signing_secret'), created.signing_secret],
          ]));
          localStorage.setItem('warbler.app', created.id);
        } catch (err) {
          flash(main, err);
        }
      },
    },
  }, h('label', { for: 'new-app-name', text: t('apps.new') }), name, h('button', { type: 'submit', text: t('apps.create') }), out);
}

// Secrets shown once, with a note that they will not be shown again.
function secretBox(note, pairs) {
  return h('div.secret', { role: 'status' },
    h('p', { text: note }),
    pairs.map(([label, value]) => h('div.kv', {}, h('span', { text: label }), h('code.secret-value', { text: value }))));
}

async function showApp(main, box, name, canManage) {
  clear(box);
  let app;
  try {
    app = await api('GET', `/v1/apps/${enc(name)}`);
  } catch (err) {
    flash(main, err);
    return;
  }
  box.append(h('h2', { text: t('apps.detail', { name: app.name }) }));
  const suspend = h('button', {
    id: 'toggle-suspend',
    disabled: !canManage,
    text: app.suspended ? t('apps.resume') : t('apps.suspend'),
    on: {
      click: async () => {
        try {
          await api('PATCH', `/v1/apps/${enc(name)}`, { suspended: !app.suspended });
          await showApp(main, box, name, canManage);
        } catch (err) {
          flash(main, err);
        }
      },
    },
  });
  box.append(h('p', {}, h('span', { text: app.suspended ? t('apps.suspended') : t('apps.active') }), ' ', suspend));
  const inputs = {};
  const limits = h('form.grid', {
    id: 'limits',
    on: {
      submit: async (e) => {
        e.preventDefault();
        const patch = {};
        for (const k of LIMITS) {
          const v = inputs[k].value.trim();
          patch[k] = v === '' ? null : Number(v);
        }
        try {
          await api('PATCH', `/v1/apps/${enc(name)}`, { limits: patch });
          await showApp(main, box, name, canManage);
        } catch (err) {
          flash(main, err);
        }
      },
    },
  }, LIMITS.map((k) => {
    inputs[k] = h('input', { id: `limit-${k}`, type: 'number', min: 0, value: app.limits[k] ?? '', placeholder: t('apps.default'), disabled: !canManage });
    return h('label', {}, h('span', { text: t(`limit.${k}`) }), inputs[k]);
  }), canManage ? h('button', { type: 'submit', text: t('apps.save_limits') }) : null);
  box.append(h('h3', { text: t('apps.limits') }), limits);
  await keysSection(main, box, name, canManage);
}

async function keysSection(main, box, app, canManage) {
  const section = h('div', { id: 'keys' });
  box.append(section);
  const { keys } = await api('GET', `/v1/apps/${enc(app)}/keys`);
  const rows = keys.map((k) => h('tr', {},
    h('td', { text: k.name }),
    h('td', { text: t(`kind.${k.kind}`) }),
    h('td', { text: (k.scopes || []).join(", ") }),
    h('td', { text: when(k.created_at) }),
    h('td', {}, canManage && k.kind === 'api_key'
      ? h('button.danger', {
        text: t('keys.revoke'),
        on: {
          click: async () => {
            if (!window.confirm(t('keys.revoke_confirm', { name: k.name }))) return;
            try {
              await api('DELETE', `/v1/apps/${enc(app)}/keys/${enc(k.id)}`);
              clear(section).remove();
              await keysSection(main, box, app, canManage);
            } catch (err) {
              flash(main, err);
            }
          },
        },
      })
      : '')));
  section.append(h('h3', { text: t('keys.title') }),
    table([t('keys.name'), t('keys.kind'), t('keys.scopes'), t('keys.created'), ''], rows));
  if (!canManage) return;
  const keyName = h('input', { id: 'key-name', placeholder: t('keys.name'), maxlength: 64 });
  const scopes = ['push', 'read', 'manage'].map((s) => [s, h('input', { type: 'checkbox', value: s, checked: s !== 'manage', id: `scope-${s}` })]);
  const out = h('div', { id: 'new-key' });
  section.append(h('form.row', {
    id: 'create-key',
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          const chosen = scopes.filter(([, box2]) => box2.checked).map(([s]) => s);
          const created = await api('POST', `/v1/apps/${enc(app)}/keys`, { name: keyName.value || undefined, scopes: chosen });
          clear(section).remove();
          await keysSection(main, box, app, canManage);
          const again = box.querySelector('#new-key');
          if (again) again.append(secretBox(t('keys.shown_once'), [[t('keys.key'), created.key]]));
        } catch (err) {
          flash(main, err);
        }
      },
    },
  }, keyName, scopes.map(([s, input]) => h('label.inline', {}, input, h('span', { text: s }))),
  h('button', { type: 'submit', text: t('keys.create') })), out);
}
