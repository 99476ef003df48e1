// Building the page. Text from anyone goes in only as text (textContent and text
// nodes): there is no HTML string anywhere, and Trusted Types would refuse one.

/**
 * h('button', {class: 'x', onclick: fn, 'aria-label': 'Close'}, 'text', child)
 * Properties: class, text, dataset, style (object), on* (listeners), hidden, value,
 * checked, disabled…; anything with a dash or unknown is set as an attribute.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key in el && !key.includes('-')) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  return append(el, children);
}

/**
 * Add children at the end of `el`, as h() does: null, undefined and false (an optional
 * piece left out: `cond ? piece : null`) add nothing, and arrays are flattened. The
 * DOM's own el.append() would show a null as the text "null": views use this one.
 */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  heart: 'M12 20s-7-4.4-7-10a4 4 0 0 1 7-2.6A4 4 0 0 1 19 10c0 5.6-7 10-7 10z',
  comment: 'M20 12a7.5 7.5 0 0 1-11.2 6.5L4 20l1.5-4.3A7.5 7.5 0 1 1 20 12z',
  more: 'M6 12h.01M12 12h.01M18 12h.01',
  photo: 'M4 6.5A1.5 1.5 0 0 1 5.5 5h13A1.5 1.5 0 0 1 20 6.5v11a1.5 1.5 0 0 1-1.5 1.5h-13A1.5 1.5 0 0 1 4 17.5zM4 15l4.5-4.5L13 15l2.5-2.5L20 17M15.5 9h.01',
  file: 'M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5',
  send: 'M4 12l16-8-6 16-2.5-6.5z',
  close: 'M6 6l12 12M18 6L6 18',
  left: 'M15 5l-7 7 7 7',
  right: 'M9 5l7 7-7 7',
  clock: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM12 7v5l3 2',
  camera: 'M4 8.5A1.5 1.5 0 0 1 5.5 7H8l1.5-2h5L16 7h2.5A1.5 1.5 0 0 1 20 8.5v9a1.5 1.5 0 0 1-1.5 1.5h-13A1.5 1.5 0 0 1 4 17.5zM12 16a3 3 0 1 0 0-6 3 3 0 0 0 0 6z',
  link: 'M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1',
  plus: 'M12 5v14M5 12h14',
  download: 'M12 4v11M7 10l5 5 5-5M5 20h14',
  trash: 'M5 7h14M10 7V5h4v2M7 7l1 13h8l1-13',
  back: 'M15 5l-7 7 7 7',
  zoom: 'M10.5 17.5a7 7 0 1 0 0-14 7 7 0 0 0 0 14zM15.5 15.5L20 20M10.5 8v5M8 10.5h5',
  smile: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM8.5 14.5a4.5 4.5 0 0 0 7 0M9 10h.01M15 10h.01',
  pencil: 'M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4',
};

export function icon(name, label) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

// --- people ------------------------------------------------------------------

/** A person in an API answer is {identity, name, friend} or, in older answers, a name. */
export function person(p) {
  if (p && typeof p === 'object') return { identity: p.identity ?? '', name: p.name ?? '?', friend: p.friend };
  return { identity: '', name: String(p ?? '?'), friend: undefined };
}

// Muted, warm tones, each dark enough for white initials (contrast 4.5:1 or more).
const TONES = ['#8f3b2e', '#2f6f5e', '#5b4b8a', '#3b6a9a', '#8a5a1f', '#8e3b63', '#4f6b2a', '#2d5f7a'];

function tone(text) {
  let x = 7;
  for (const ch of text) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return TONES[x % TONES.length];
}

// Profile pictures held by the daemon (GET /pictures): identity -> digest.
const pictures = new Map();

function letter(who, size) {
  const initial = [...who.name.trim()][0]?.toUpperCase() ?? '?';
  const el = h('span', { class: `avatar avatar-${size}`, 'aria-hidden': 'true' }, initial);
  el.style.setProperty('--tone', tone(who.identity || who.name));
  return el;
}

/** A person's picture where we hold one (spec/identity.md section 5), else their letter. */
export function avatar(p, size = 'm') {
  const who = person(p);
  const digest = who.identity && pictures.get(who.identity);
  const el = digest
    ? h('img', {
      class: `avatar avatar-${size} avatar-picture`,
      alt: '',
      'aria-hidden': 'true',
      decoding: 'async',
      src: `/api/v1/people/${encodeURIComponent(who.identity)}/picture?v=${digest}`,
    })
    : letter(who, size);
  if (digest) el.addEventListener('error', () => el.replaceWith(letter(who, size)), { once: true });
  Object.assign(el.dataset, { avatar: who.identity, avatarName: who.name, avatarSize: size });
  return el;
}

export const hasPicture = (identity) => pictures.has(identity);

/** The pictures changed: keep the new ones, and redraw every avatar on the page. */
export function setPictures(map) {
  pictures.clear();
  for (const [identity, digest] of Object.entries(map)) pictures.set(identity, digest);
  for (const el of document.querySelectorAll('[data-avatar]')) {
    const { avatar: identity, avatarName: name, avatarSize: size } = el.dataset;
    if (identity) el.replaceWith(avatar({ identity, name }, size));
  }
}

// --- time and sizes -------------------------------------------------------------

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const yearFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });

export function relativeTime(seconds, now = Date.now() / 1000) {
  const ago = now - seconds;
  if (ago < 45) return 'just now';
  if (ago < 3600) return rtf.format(-Math.round(ago / 60), 'minute');
  if (ago < 86400) return rtf.format(-Math.round(ago / 3600), 'hour');
  if (ago < 2 * 86400) return rtf.format(-1, 'day');
  if (ago < 7 * 86400) return rtf.format(-Math.round(ago / 86400), 'day');
  const date = new Date(seconds * 1000);
  return (date.getFullYear() === new Date().getFullYear() ? dateFormat : yearFormat).format(date);
}

export function untilTime(seconds, now = Date.now() / 1000) {
  const left = seconds - now;
  const minutes = Math.max(1, Math.round(left / 60));
  if (minutes < 60) return rtf.format(minutes, 'minute');
  if (left < 2 * 86400) return rtf.format(Math.round(left / 3600), 'hour');
  return rtf.format(Math.round(left / 86400), 'day');
}

export const fullTime = (seconds) => fullFormat.format(new Date(seconds * 1000));
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const dayYearFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });

const midnight = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
/** Whole days between a time and now, on the local calendar (0: today, 1: yesterday). */
export function daysAgo(seconds, now = Date.now() / 1000) {
  return Math.round((midnight(new Date(now * 1000)) - midnight(new Date(seconds * 1000))) / 86400000);
}

/** A day as a chat's separator names it: Today, Yesterday, Monday 7 December, 7 December 2025. */
export function dayLabel(seconds, now = Date.now() / 1000) {
  const days = daysAgo(seconds, now);
  const date = new Date(seconds * 1000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (date.getFullYear() === new Date(now * 1000).getFullYear()) return dayFormat.format(date);
  return dayYearFormat.format(date);
}

/** When, as a list row says it: 14:05 today, Yesterday, a weekday this week, else a date. */
export function shortTime(seconds, now = Date.now() / 1000) {
  const days = daysAgo(seconds, now);
  const date = new Date(seconds * 1000);
  if (days === 0) return clockFormat.format(date);
  if (days === 1) return 'Yesterday';
  if (days > 1 && days < 7) return weekdayFormat.format(date);
  return (date.getFullYear() === new Date(now * 1000).getFullYear() ? dateFormat : yearFormat).format(date);
}
export const clockTime = (seconds) => clockFormat.format(new Date(seconds * 1000));

/** A <time> that keeps itself up to date (see refreshTimes). */
export function timeEl(seconds) {
  return h('time', {
    datetime: new Date(seconds * 1000).toISOString(),
    title: fullTime(seconds),
    dataset: { at: String(seconds) },
  }, relativeTime(seconds));
}

export function refreshTimes(root = document) {
  for (const el of root.querySelectorAll('time[data-at]')) {
    el.textContent = relativeTime(Number(el.dataset.at));
  }
}

export function size(n) {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB'];
  let value = n / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// --- feedback -------------------------------------------------------------------

export function toast(message, kind = 'info') {
  const box = document.querySelector('[data-toasts]');
  const el = h('div', { class: `toast toast-${kind}` }, message);
  box.append(el);
  setTimeout(() => el.classList.add('leaving'), 3500);
  setTimeout(() => el.remove(), 4000);
}

/** A modal question; resolves true (OK) or false. */
export function confirmDialog({ title, text, ok = 'OK', danger = false }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' });
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.append(
      h('h2', { id: 'dialog-title' }, title),
      ...[text].flat().map((line) => h('p', {}, line)),
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'button quiet', onclick: () => done(false) }, 'Cancel'),
        h('button', { type: 'button', class: `button ${danger ? 'danger' : 'primary'}`, onclick: () => done(true) }, ok)),
    );
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector('.dialog-actions button:last-child').focus();
  });
}

/** A modal asking for one line of text; resolves the text, or null. */
export function promptDialog({ title, label, value = '', ok = 'Save', maxBytes = 32 }) {
  return new Promise((resolve) => {
    const input = h('input', { type: 'text', value, required: true, maxLength: maxBytes, autocomplete: 'off' });
    const error = h('p', { class: 'form-error', role: 'alert' });
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' });
    const finish = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    const form = h('form', {
      method: 'dialog',
      onsubmit: (e) => {
        e.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        if (new TextEncoder().encode(text).length > maxBytes) {
          error.textContent = `At most ${maxBytes} bytes, please.`;
          return;
        }
        finish(text);
      },
    },
    h('h2', { id: 'dialog-title' }, title),
    h('label', { class: 'field' }, h('span', {}, label), input),
    error,
    h('div', { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'button quiet', onclick: () => finish(null) }, 'Cancel'),
      h('button', { type: 'submit', class: 'button primary' }, ok)));
    dialog.append(form);
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      finish(null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.select();
  });
}

/** An error as a sentence: a capital letter first and a stop at the end (the daemon's
 * messages are written to follow a colon). */
export function errorText(error) {
  const text = String(error?.message || 'Something went wrong.').trim();
  const sentence = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?…]$/.test(sentence) ? sentence : `${sentence}.`;
}

/** UTF-8 bytes in a text: the daemon's limits count these. */
export const byteLength = (text) => new TextEncoder().encode(text).length;

/**
 * A counter for a field with a limit in bytes: silent until the text nears the limit,
 * then "12.1 of 16 KB"; `over()` tells whether it is past it.
 */
export function byteCounter(field, limit) {
  const el = h('small', { class: 'byte-counter', 'aria-live': 'polite', hidden: true });
  const kb = (n) => (n / 1024).toFixed(1).replace(/\.0$/, '');
  const update = () => {
    const used = byteLength(field.value);
    el.hidden = used < limit * 0.75;
    el.textContent = `${kb(used)} of ${kb(limit)} KB`;
    el.classList.toggle('over', used > limit);
  };
  field.addEventListener('input', update);
  return { el, update, over: () => byteLength(field.value) > limit };
}

/** An unread count as a pill ("3", read out as "3 unread"); nothing for 0. */
export function count(n) {
  return n ? h('span', { class: 'count' }, ...unreadText(n)) : null;
}

/** "3" and, for screen readers, " unread". */
export function unreadText(n) {
  return [String(n), h('span', { class: 'visually-hidden' }, ' unread')];
}

export function empty(title, text, ...actions) {
  return h('div', { class: 'empty' }, h('h2', {}, title), h('p', {}, text), ...actions);
}
