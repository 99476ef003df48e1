// Posting: a circle (the last used by default), text, photos and files (picker, drag
// and drop, paste; the phone's picker offers its camera), optional expiry, and upload
// progress. A failed post says why and keeps everything as it was.

import * as api from './api.js';
import { avatar, byteCounter, clear, errorText, h, icon, size } from './dom.js';
import { canPost, isConversation, state } from './state.js';

const MAX_TEXT = 16 * 1024; // bytes in a moment's text (spec/moments.md)
const MAX_CAPTION = 512; // bytes in a photo's caption (spec/moments.md section 4, key 13)
const PHOTO_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif']);
// iPhones' photos: posted as photos (the daemon makes them JPEGs), not previewed here
// (a browser may not read them).
const HEIC_TYPES = new Set(['image/heic', 'image/heif']);
const LAST_CIRCLE = 'p2pm.lastCircle';
const EXPIRY = [
  ['', 'Keep it'],
  [String(3600), '1 hour'],
  [String(86400), '1 day'],
  [String(7 * 86400), '1 week'],
  [String(30 * 86400), '30 days'],
];

/** Photos and files about to be posted, with previews; drop and paste feed it too. */
export function attachments() {
  const items = []; // {file, kind, url}
  const strip = h('ul', { class: 'attachments', 'aria-label': 'To be posted' });
  const listeners = new Set();

  function draw() {
    clear(strip, items.map((item, i) => h('li', { class: `attachment attachment-${item.kind}` },
      item.url ? h('img', { src: item.url, alt: `Photo to post: ${item.file.name}` })
        : h('span', { class: 'file-chip' }, icon('file'), h('span', {}, item.file.name), h('small', {}, size(item.file.size))),
      item.kind === 'photo' ? h('input', {
        type: 'text',
        class: 'caption-input',
        name: 'caption',
        value: item.caption ?? '',
        placeholder: 'Caption',
        maxLength: MAX_CAPTION,
        autocomplete: 'off',
        'aria-label': `Caption for ${item.file.name}`,
        oninput: (e) => { item.caption = e.target.value; },
      }) : null,
      h('button', {
        type: 'button',
        class: 'remove',
        'aria-label': `Remove ${item.file.name}`,
        onclick: () => {
          if (item.url) URL.revokeObjectURL(item.url);
          items.splice(i, 1);
          draw();
        },
      }, icon('close')))));
    strip.hidden = !items.length;
    for (const fn of listeners) fn();
  }

  function add(files) {
    for (const file of files) {
      const heic = HEIC_TYPES.has(file.type) || /\.hei[cf]$/i.test(file.name);
      const kind = PHOTO_TYPES.has(file.type) || heic ? 'photo' : 'file';
      items.push({ file, kind, url: kind === 'photo' && !heic ? URL.createObjectURL(file) : null });
    }
    draw();
  }

  function reset() {
    for (const item of items) if (item.url) URL.revokeObjectURL(item.url);
    items.length = 0;
    draw();
  }

  const photoInput = h('input', {
    type: 'file', accept: 'image/*', multiple: true, class: 'visually-hidden', tabIndex: -1, 'aria-label': 'Photos to add',
    onchange: (e) => { add(e.target.files); e.target.value = ''; },
  });
  const fileInput = h('input', {
    type: 'file', multiple: true, class: 'visually-hidden', tabIndex: -1, 'aria-label': 'Files to add',
    onchange: (e) => { add(e.target.files); e.target.value = ''; },
  });
  // On a phone the photo picker offers the camera too; this button goes straight to it.
  const cameraInput = h('input', {
    type: 'file', accept: 'image/*', capture: 'environment', class: 'visually-hidden', tabIndex: -1, 'aria-label': 'Photo to take',
    onchange: (e) => { add(e.target.files); e.target.value = ''; },
  });
  const buttons = [
    h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Add photos', title: 'Add photos', onclick: () => photoInput.click() }, icon('photo')),
    h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Add files', title: 'Add files', onclick: () => fileInput.click() }, icon('file')),
    photoInput, fileInput,
    h('button', { type: 'button', class: 'icon-button touch-only', 'aria-label': 'Take a photo', title: 'Take a photo', onclick: () => cameraInput.click() }, icon('camera')),
    cameraInput,
  ];

  /** Accept drops on `zone` and pasted files in `field`. */
  function listen(zone, field) {
    zone.addEventListener('dragover', (e) => {
      if (![...e.dataTransfer.types].includes('Files')) return;
      e.preventDefault();
      zone.classList.add('dropping');
    });
    zone.addEventListener('dragleave', (e) => {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove('dropping');
    });
    zone.addEventListener('drop', (e) => {
      e.preventDefault();
      zone.classList.remove('dropping');
      add(e.dataTransfer.files);
    });
    field.addEventListener('paste', (e) => {
      const files = [...(e.clipboardData?.files ?? [])];
      if (files.length) {
        e.preventDefault();
        add(files);
      }
    });
  }

  strip.hidden = true;
  return { items, strip, buttons, add, reset, listen, onChange: (fn) => listeners.add(fn) };
}

/** Send a post: JSON for text alone, else multipart with upload progress. */
export async function send({ circle, text, expires, items }, onProgress) {
  if (!items.length) {
    const body = { circle, text };
    if (expires) body.expires_in = Number(expires);
    return api.post('/moments', body);
  }
  const form = new FormData();
  form.append('circle', circle);
  form.append('text', text);
  if (expires) form.append('expires_in', expires);
  for (const item of items) {
    form.append(item.kind, item.file, item.file.name);
    // A photo's caption follows it (spec/openapi.yaml, POST /moments).
    const caption = item.kind === 'photo' ? (item.caption ?? '').trim() : '';
    if (caption) form.append('caption', caption);
  }
  return api.upload('/moments', form, onProgress);
}

export function composer({ circleId, onPosted }) {
  // The albums, or the one circle this feed is of (a conversation's own feed too).
  const postable = state.circles.filter((c) => canPost(c) && (!isConversation(c) || c.id === circleId));
  const remembered = localStorage.getItem(LAST_CIRCLE);
  const chosen = postable.find((c) => c.id === circleId) ?? postable.find((c) => c.id === remembered) ?? postable[0];
  const select = h('select', { name: 'circle', 'aria-label': 'Circle to share with' },
    postable.map((c) => h('option', { value: c.id, selected: c.id === chosen?.id }, c.name)));
  const expiry = h('select', { name: 'expires', 'aria-label': 'Delete it after' },
    EXPIRY.map(([value, label]) => h('option', { value }, label)));
  const text = h('textarea', {
    name: 'text',
    rows: 2,
    placeholder: `What's happening, ${state.me?.name ?? ''}?`,
    'aria-label': 'What to say',
    oninput: () => {
      text.style.height = 'auto';
      text.style.height = `${Math.min(text.scrollHeight, 320)}px`;
    },
  });
  const files = attachments();
  const counter = byteCounter(text, MAX_TEXT);
  const error = h('p', { class: 'form-error', role: 'alert' });
  const progress = h('progress', { class: 'upload', max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Share');

  const form = h('form', {
    class: 'composer card',
    'aria-label': 'Share a moment',
    onsubmit: async (e) => {
      e.preventDefault();
      const words = text.value.trim();
      if (!words && !files.items.length) {
        error.textContent = 'Write something or add a photo first.';
        text.focus();
        return;
      }
      if (counter.over()) {
        error.textContent = 'A moment’s text can be at most 16 KB.';
        text.focus();
        return;
      }
      error.textContent = '';
      submit.disabled = true;
      submit.textContent = 'Sharing…';
      progress.hidden = !files.items.length;
      progress.value = 0;
      try {
        const moment = await send(
          { circle: select.value, text: words, expires: expiry.value, items: files.items },
          (fraction) => { progress.value = fraction; },
        );
        localStorage.setItem(LAST_CIRCLE, select.value);
        text.value = '';
        text.style.height = '';
        counter.update();
        expiry.value = '';
        files.reset();
        onPosted(moment);
      } catch (failure) {
        // Keep the words and the files: the person can try again.
        error.textContent = `Not shared: ${errorText(failure)}`;
      } finally {
        submit.disabled = false;
        submit.textContent = 'Share';
        progress.hidden = true;
      }
    },
  },
  h('div', { class: 'composer-row' }, avatar(state.me), text),
  files.strip,
  progress,
  error,
  h('div', { class: 'composer-bar' },
    ...files.buttons,
    counter.el,
    h('label', { class: 'inline-select', title: 'Delete it everywhere after' }, icon('clock'), expiry),
    h('label', { class: 'inline-select to' }, h('span', {}, 'to'), select),
    submit));
  select.addEventListener('change', () => localStorage.setItem(LAST_CIRCLE, select.value));
  files.listen(form, text);
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  return form;
}
