// Photos full size: a modal dialog, the thumbnail first then the photo itself;
// arrow keys, buttons or a swipe move between the moment's photos; Escape closes.

import * as api from './api.js';
import { h, icon, person } from './dom.js';
import { on } from './live.js';

export function openViewer(moment, start) {
  const photos = moment.photos;
  let index = start;
  const img = h('img', { class: 'full', alt: '' });
  const counter = h('span', { class: 'counter', 'aria-live': 'polite' });
  const download = h('a', { class: 'icon-button', 'aria-label': 'Download this photo', title: 'Download' }, icon('download'));
  const prev = h('button', { type: 'button', class: 'nav-button prev', 'aria-label': 'Previous photo', onclick: () => go(-1) }, icon('left'));
  const next = h('button', { type: 'button', class: 'nav-button next', 'aria-label': 'Next photo', onclick: () => go(1) }, icon('right'));
  const close = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close', onclick: () => dialog.close() }, icon('close'));
  const stage = h('div', { class: 'stage' }, img);
  const dialog = h('dialog', { class: 'viewer', 'aria-label': `Photos from ${person(moment.author).name}` },
    h('div', { class: 'viewer-bar' }, counter, h('span', { class: 'spacer' }), download, close),
    stage, prev, next);

  function show() {
    const photo = photos[index];
    const label = `Photo ${index + 1} of ${photos.length} from ${person(moment.author).name}`;
    counter.textContent = `${index + 1} / ${photos.length}`;
    img.alt = label;
    img.classList.add('preview');
    img.src = api.urls.thumbnail(moment.id, photo.n);
    download.href = api.urls.photo(moment.id, photo.n);
    download.download = `photo-${index + 1}`;
    prev.hidden = index === 0;
    next.hidden = index === photos.length - 1;
    img.dataset.full = 'no';
    loadFull();
  }

  // The photo itself may still be arriving: try again as its pieces come in.
  let attempt = 0;
  function loadFull() {
    const wanted = index;
    const photo = photos[index];
    const full = new Image();
    full.addEventListener('load', () => {
      if (wanted !== index) return;
      img.src = full.src;
      img.classList.remove('preview');
      img.dataset.full = 'yes';
    });
    attempt += 1;
    full.src = api.urls.photo(moment.id, photo.n) + (attempt > 1 ? `?try=${attempt}` : '');
  }
  const retry = () => { if (img.dataset.full === 'no') loadFull(); };
  const offs = [
    on('transfer.done', (data) => { if (data.moment === moment.id) retry(); }),
    on('transfer.chunk', (data) => { if (data.moment === moment.id && data.held === data.total) retry(); }),
  ];

  function go(step) {
    const to = index + step;
    if (to < 0 || to >= photos.length) return;
    index = to;
    show();
  }

  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') go(-1);
    else if (e.key === 'ArrowRight') go(1);
  });
  let startX = null;
  stage.addEventListener('pointerdown', (e) => { startX = e.clientX; });
  stage.addEventListener('pointerup', (e) => {
    if (startX === null) return;
    const dx = e.clientX - startX;
    startX = null;
    if (Math.abs(dx) > 40) go(dx < 0 ? 1 : -1);
  });
  dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(); });
  dialog.addEventListener('close', () => {
    for (const off of offs) off();
    dialog.remove();
  });
  document.body.append(dialog);
  dialog.showModal();
  show();
  close.focus();
}
