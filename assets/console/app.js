// The Warbler console: sign-in, the page shell (navigation, app picker, language switch),
// and a hash router over the pages.

import { api, setCsrf, ApiError } from './api.js';
import { h, clear } from './dom.js';
import { load, saved, t, language } from './i18n.js';
import { appsPage } from './pages_apps.js';
import { dashboardPage, devicesPage, messagesPage } from './pages_traffic.js';
import { usersPage, auditPage, settingsPage, passwordPage } from './pages_admin.js';

const root = document.getElementById('root');

const PAGES = [
  { id: 'dashboard', label: 'nav.dashboard', render: dashboardPage },
  { id: 'apps', label: 'nav.apps', render: appsPage },
  { id: 'devices', label: 'nav.devices', render: devicesPage, needsApp: true },
  { id: 'messages', label: 'nav.messages', render: messagesPage, needsApp: true },
  { id: 'users', label: 'nav.users', render: usersPage, owner: true },
  { id: 'audit', label: 'nav.audit', render: auditPage, admin: true },
  { id: 'settings', label: 'nav.settings', render: settingsPage, admin: true },
  { id: 'password', label: 'nav.password', render: passwordPage, hidden: true },
];

const state = { me: null, app: null, timers: [] };

// Timers a page starts; stopped when the page changes.
export function every(ms, fn) {
  state.timers.push(setInterval(fn, ms));
}

function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

function visible(page) {
  const role = state.me ? state.me.role : 'viewer';
  if (page.owner) return role === 'owner';
  if (page.admin) return role === 'owner' || role === 'admin';
  return true;
}

function languageSwitch() {
  const select = h('select', {
    'aria-label': t('lang.label'),
    id: 'lang',
    on: {
      change: async (e) => {
        await load(e.target.value);
        route();
      },
    },
  },
  h('option', { value: 'en', text: 'English', selected: language() === 'en' }),
  h('option', { value: 'zh', text: '简体中文', selected: language() === 'zh' }));
  return select;
}

export function errorText(err) {
  if (err instanceof ApiError) {
    const known = `error.${err.code}`;
    const text = t(known);
    return text === known ? err.message : `${text} (${err.message})`;
  }
  return String(err && err.message ? err.message : err);
}

export function flash(container, err) {
  const box = h('p.error', { role: 'alert', text: errorText(err) });
  container.prepend(box);
  setTimeout(() => box.remove(), 8000);
}

function loginPage() {
  stopTimers();
  const user = h('input', { name: 'user', autocomplete: 'username', required: true, id: 'login-user' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, id: 'login-password' });
  const message = h('p.error', { role: 'alert', hidden: true });
  const form = h('form.card.login', {
    on: {
      submit: async (e) => {
        e.preventDefault();
        message.hidden = true;
        try {
          const me = await api('POST', '/v1/admin/login', { user: user.value, password: password.value });
          setCsrf(me.csrf_token);
          state.me = me;
          location.hash = '#/dashboard';
          route();
        } catch (err) {
          message.textContent = errorText(err);
          message.hidden = false;
        }
      },
    },
  },
  h('h1', { text: t('login.title') }),
  h('label', { for: 'login-user', text: t('login.user') }), user,
  h('label', { for: 'login-password', text: t('login.password') }), password,
  message,
  h('button', { type: 'submit', text: t('login.submit') }),
  languageSwitch());
  clear(root).append(h('main.center', {}, form));
}

function shell(current) {
  const nav = h('nav', { 'aria-label': t('nav.label') },
    PAGES.filter((p) => !p.hidden && visible(p)).map((p) =>
      h('a', { href: `#/${p.id}`, class: p.id === current ? 'active' : '', text: t(p.label) })));
  const apps = state.me.apps || [];
  const picker = h('select', {
    'aria-label': t('app.pick'),
    id: 'app-picker',
    on: {
      change: (e) => {
        state.app = e.target.value;
        localStorage.setItem('warbler.app', state.app);
        route();
      },
    },
  }, apps.map((a) => h('option', { value: a, text: a, selected: a === state.app })));
  const logout = h('button.link', {
    id: 'logout',
    text: t('nav.logout'),
    on: {
      click: async () => {
        try {
          await api('POST', '/v1/admin/logout');
        } finally {
          state.me = null;
          setCsrf(null);
          location.hash = '#/login';
          route();
        }
      },
    },
  });
  const header = h('header', {},
    h('span.brand', { text: 'Warbler' }),
    nav,
    h('div.tools', {},
      h('label.inline', {}, h('span', { text: t('app.label') }), picker),
      languageSwitch(),
      h('a', { href: '#/password', text: t('nav.password') }),
      h('span.who', { text: `${state.me.user || t('me.token')} · ${t(`role.${state.me.role}`)}` }),
      logout));
  const main = h('main', { id: 'page' });
  clear(root).append(header, main);
  return main;
}

async function route() {
  stopTimers();
  if (!state.me) {
    try {
      state.me = await api('GET', '/v1/admin/me');
      setCsrf(state.me.csrf_token);
    } catch {
      loginPage();
      return;
    }
  }
  const apps = state.me.apps || [];
  const stored = localStorage.getItem('warbler.app');
  if (!state.app || !apps.includes(state.app)) {
    state.app = apps.includes(stored) ? stored : apps[0] || null;
  }
  const id = (location.hash.replace(/^#\//, '') || 'dashboard').split("?")[0];
  const page = PAGES.find((p) => p.id === id && visible(p)) || PAGES[0];
  const main = shell(page.id);
  document.title = `${t(page.label)} · Warbler`;
  if (page.needsApp && !state.app) {
    main.append(h('p', { text: t('app.none') }));
    return;
  }
  try {
    await page.render(main, { me: state.me, app: state.app, refreshMe });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      state.me = null;
      loginPage();
      return;
    }
    flash(main, err);
  }
}

async function refreshMe() {
  state.me = await api('GET', '/v1/admin/me');
  setCsrf(state.me.csrf_token);
}

window.addEventListener('hashchange', route);
load(saved()).then(route);
