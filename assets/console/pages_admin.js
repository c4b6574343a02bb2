// Administration pages: users and roles, the audit log, settings (effective configuration,
// certificate, CA download) and changing one's own password.

import { api, enc } from './api.js';
import { h, clear, table, when } from './dom.js';
import { t } from './i18n.js';
import { flash } from './app.js';

const ROLES = ['owner', 'admin', 'operator', 'viewer'];

export async function usersPage(main, ctx) {
  main.append(h('h1', { text: t('users.title') }));
  const list = h('section.card', { id: 'user-list' });
  const user = h('input', { id: 'new-user', required: true, maxlength: 64 });
  const password = h('input', { id: 'new-user-password', type: 'password', required: true, minlength: 10, autocomplete: 'new-password' });
  const role = h('select', { id: 'new-user-role' }, ROLES.map((r) => h('option', { value: r, text: t(`role.${r}`), selected: r === 'viewer' })));
  const apps = h('select', { id: 'new-user-apps', multiple: true }, (ctx.me.apps || []).map((a) => h('option', { value: a, text: a })));
  const draw = async () => {
    const { users } = await api('GET', '/v1/admin/users');
    clear(list).append(h('h2', { text: t('users.list') }), table(
      [t('users.user'), t('users.role'), t('users.apps'), t('users.created'), ''],
      users.map((u) => h('tr', {},
        h('td', { text: u.user }),
        h('td', {}, h('select', {
          'aria-label': t('users.role'),
          on: {
            change: async (e) => {
              try {
                await api('PATCH', `/v1/admin/users/${enc(u.user)}`, { role: e.target.value });
              } catch (err) {
                flash(main, err);
              }
              await draw();
            },
          },
        }, ROLES.map((r) => h('option', { value: r, text: t(`role.${r}`), selected: r === u.role })))),
        h('td', {}, u.role === 'owner' ? t('users.all_apps') : appsEditor(main, u, ctx.me.apps || [], draw)),
        h('td', { text: when(u.created_at) }),
        h('td', {}, h('button.danger', {
          text: t('users.delete'),
          on: {
            click: async () => {
              if (!window.confirm(t('users.delete_confirm', { user: u.user }))) return;
              try {
                await api('DELETE', `/v1/admin/users/${enc(u.user)}`);
              } catch (err) {
                flash(main, err);
              }
              await draw();
            },
          },
        }))))));
  };
  main.append(h('form.card.grid', {
    id: 'create-user',
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          await api('POST', '/v1/admin/users', {
            user: user.value,
            password: password.value,
            role: role.value,
            apps: [...apps.selectedOptions].map((o) => o.value),
          });
          user.value = '';
          password.value = '';
          await draw();
        } catch (err) {
          flash(main, err);
        }
      },
    },
  },
  h('h2', { text: t('users.new') }),
  h('label', {}, h('span', { text: t('users.user') }), user),
  h('label', {}, h('span', { text: t('users.password') }), password),
  h('label', {}, h('span', { text: t('users.role') }), role),
  h('label', {}, h('span', { text: t('users.apps') }), apps),
  h('button', { type: 'submit', text: t('users.create') })), list);
  await draw();
}

// The apps a non-owner user may see: a multi-select of the apps and a save button.
function appsEditor(main, u, allApps, draw) {
  const names = [...new Set([...allApps, ...u.apps])].sort();
  const select = h('select.user-apps', { multiple: true, 'aria-label': t('users.apps'), 'data-user': u.user },
    names.map((a) => h('option', { value: a, text: a, selected: u.apps.includes(a) })));
  const save = h('button', {
    type: 'button',
    text: t('users.save_apps'),
    on: {
      click: async () => {
        try {
          await api('PATCH', `/v1/admin/users/${enc(u.user)}`, { apps: [...select.selectedOptions].map((o) => o.value) });
        } catch (err) {
          flash(main, err);
        }
        await draw();
      },
    },
  });
  return h('div.apps-editor', {}, select, save);
}

export async function auditPage(main) {
  main.append(h('h1', { text: t('audit.title') }));
  const rows = (entries) => entries.map((e) => h('tr', {},
    h('td', { text: when(e.at) }),
    h('td', { text: e.actor }),
    h('td', {}, h('code', { text: e.action })),
    h('td', { text: e.app ?? '—' }),
    h('td', { text: e.target ?? '—' }),
    h('td', { text: e.from ?? '—' })));
  const { entries } = await api('GET', '/v1/admin/audit?limit=200');
  const list = table(
    [t('audit.at'), t('audit.actor'), t('audit.action'), t('audit.app'), t('audit.target'), t('audit.from')],
    rows(entries));
  let last = entries.length ? entries[entries.length - 1].at : null;
  // Pages back with `before` = the time of the oldest entry shown.
  const older = h('button', {
    id: 'audit-older',
    type: 'button',
    text: t('audit.older'),
    hidden: entries.length < 200,
    on: {
      click: async () => {
        try {
          const page = await api('GET', `/v1/admin/audit?limit=200&before=${enc(String(last))}`);
          list.querySelector('tbody').append(...rows(page.entries));
          if (page.entries.length) last = page.entries[page.entries.length - 1].at;
          older.hidden = page.entries.length < 200;
        } catch (err) {
          flash(main, err);
        }
      },
    },
  });
  main.append(h('section.card', { id: 'audit-log' }, list, older));
}

function flatten(prefix, value, out) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, out);
  } else {
    out.push([prefix, Array.isArray(value) ? value.join(", ") : String(value ?? '—')]);
  }
  return out;
}

export async function settingsPage(main) {
  main.append(h('h1', { text: t('settings.title') }));
  const s = await api('GET', '/v1/admin/settings');
  const cert = s.certificate || {};
  main.append(
    h('section.card', { id: 'certificate' },
      h('h2', { text: t('settings.certificate') }),
      cert.error
        ? h('p.error', { text: cert.error })
        : h('dl', {},
          h('dt', { text: t('settings.subject') }), h('dd', { text: cert.subject ?? '—' }),
          h('dt', { text: t('settings.issuer') }), h('dd', { text: cert.issuer ?? '—' }),
          h('dt', { text: t('settings.names') }), h('dd', { text: (cert.names || []).join(", ") }),
          h('dt', { text: t('settings.expires') }), h('dd', { text: `${when(cert.not_after)} (${t('settings.days_left', { days: cert.days_left })})`, class: cert.days_left < 30 ? 'warn' : '' })),
      s.ca_available ? h('a.button', { href: '/v1/admin/ca.crt', download: 'warbler-ca.crt', id: 'ca-download', text: t('settings.ca_download') }) : null),
    h('section.card', { id: 'config' },
      h('h2', { text: t('settings.config') }),
      h('p.meta', { text: t('settings.masked') }),
      table([t('settings.key'), t('settings.value')], flatten('', s.config, []).map(([k, v]) => h('tr', {}, h('td', {}, h('code', { text: k })), h('td', { text: v }))))),
    h('p.meta', { text: `Warbler ${s.version}` }));
}

export async function passwordPage(main, ctx) {
  main.append(h('h1', { text: t('password.title') }));
  if (!ctx.me.user) {
    main.append(h('p', { text: t('password.token') }));
    return;
  }
  const old = h('input', { id: 'old-password', type: 'password', required: true, autocomplete: 'current-password' });
  const next = h('input', { id: 'new-password', type: 'password', required: true, minlength: 10, autocomplete: 'new-password' });
  const done = h('p.ok', { role: 'status', hidden: true, text: t('password.changed') });
  main.append(h('form.card', {
    id: 'password-form',
    on: {
      submit: async (e) => {
        e.preventDefault();
        done.hidden = true;
        try {
          await api('POST', '/v1/admin/password', { old: old.value, new: next.value });
          old.value = '';
          next.value = '';
          done.hidden = false;
        } catch (err) {
          flash(main, err);
        }
      },
    },
  },
  h('label', { for: 'old-password', text: t('password.old') }), old,
  h('label', { for: 'new-password', text: t('password.new') }), next,
  h('p.meta', { text: t('password.rule') }),
  h('button', { type: 'submit', text: t('password.submit') }), done));
}
