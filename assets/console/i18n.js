// English and 简体中文 dictionaries (en.json, zh.json: the same keys, checked by a test).

const LANGS = ['en', 'zh'];
let dict = {};
let current = 'en';

export function language() {
  return current;
}

export async function load(lang) {
  const chosen = LANGS.includes(lang) ? lang : 'en';
  const res = await fetch(new URL(`./${chosen}.json`, import.meta.url));
  dict = await res.json();
  current = chosen;
  document.documentElement.lang = chosen === 'zh' ? 'zh-CN' : 'en';
  try {
    localStorage.setItem('warbler.lang', chosen);
  } catch {
    // Storage may be off; the choice lasts for this page only.
  }
  return chosen;
}

export function saved() {
  try {
    return localStorage.getItem('warbler.lang') || (navigator.language.startsWith('zh') ? 'zh' : 'en');
  } catch {
    return 'en';
  }
}

// The text for a key; {name} placeholders filled from vars.
export function t(key, vars = {}) {
  const s = dict[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}
