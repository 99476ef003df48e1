// Photos full size: a modal dialog, the thumbnail first then the photo itself;
// arrow keys, buttons or a swipe move between the moment's photos; Escape closes.
// The whole photo fits the stage; a click on it (or the zoom button) shows it pixel
// for pixel, panned by scrolling, and another click fits it again.

import * as api from './api.js';
import { h, icon, person } from './dom.js';
import { on } from './live.js';

export function openViewer(moment, start) {
  const photos = moment.photos;
  let index = start;
  let zoomed = false;
  const img = h('img', { class: 'full', alt: '', draggable: false });
  const counter = h('span', { class: 'counter', 'aria-live': 'polite' });
  const zoom = h('button', {
    type: 'button', class: 'icon-button', 'aria-label': 'Actual size', title: 'Actual size', 'aria-pressed': 'false',
    onclick: () => setZoom(!zoomed),
  }, icon('zoom'));
  const download = h('a', { class: 'icon-button', 'aria-label': 'Download this photo', title: 'Download' }, icon('download'));
  const prev = h('button', { type: 'button', class: 'nav-button prev', 'aria-label': 'Previous photo', onclick: () => go(-1) }, icon('left'));
  const next = h('button', { type: 'button', class: 'nav-button next', 'aria-label': 'Next photo', onclick: () => go(1) }, icon('right'));
  const close = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close', onclick: () => dialog.close() }, icon('close'));
  const stage = h('div', { class: 'stage' }, img);
  const caption = h('p', { class: 'viewer-caption', hidden: true });
  // A moment's photos, or (the gallery) photos of many moments: each then names its own
  // moment and author.
  const idOf = (photo) => photo.moment ?? moment.id;
  const authorOf = (photo) => person(photo.author ?? moment.author).name;
  const dialog = h('dialog', { class: 'viewer', 'aria-label': moment.label ?? `Photos from ${person(moment.author).name}` },
    h('div', { class: 'viewer-bar' }, counter, h('span', { class: 'spacer' }), zoom, download, close),
    stage, caption, prev, next);

  // The photo's own size: from the moment, or from the image once it is loaded.
  function natural() {
    const photo = photos[index];
    if (photo.width > 0 && photo.height > 0) return [photo.width, photo.height];
    return img.dataset.full === 'yes' ? [img.naturalWidth || 1, img.naturalHeight || 1] : [1, 1];
  }

  // Fit: as large as the stage allows, never larger than the photo itself, whole.
  // Zoomed: pixel for pixel, the stage scrolls. The thumbnail shown first takes the
  // same box, so nothing jumps when the photo itself arrives.
  function layout() {
    const [width, height] = natural();
    const fit = Math.min(1, stage.clientWidth / width, stage.clientHeight / height);
    zoom.hidden = fit >= 1;
    if (fit >= 1 && zoomed) zoomed = false;
    const scale = zoomed ? 1 : fit;
    img.style.width = `${Math.round(width * scale)}px`;
    img.style.height = `${Math.round(height * scale)}px`;
    stage.classList.toggle('zoomed', zoomed);
    zoom.setAttribute('aria-pressed', String(zoomed));
    const label = zoomed ? 'Fit to the screen' : 'Actual size';
    zoom.setAttribute('aria-label', label);
    zoom.title = label;
  }

  /** Zoom in on the point (x, y) of the photo as drawn (its centre by default). */
  function setZoom(wanted, at) {
    const before = img.getBoundingClientRect();
    const fx = at ? (at.x - before.left) / before.width : 0.5;
    const fy = at ? (at.y - before.top) / before.height : 0.5;
    zoomed = wanted;
    layout();
    if (zoomed) {
      stage.scrollLeft = fx * img.offsetWidth - stage.clientWidth / 2;
      stage.scrollTop = fy * img.offsetHeight - stage.clientHeight / 2;
    }
  }

  function show() {
    const photo = photos[index];
    const label = `Photo ${index + 1} of ${photos.length} from ${authorOf(photo)}`;
    counter.textContent = `${index + 1} / ${photos.length}`;
    caption.textContent = photo.caption ?? '';
    caption.hidden = !photo.caption;
    img.alt = label;
    img.classList.add('preview');
    img.src = api.urls.thumbnail(idOf(photo), photo.n);
    download.href = api.urls.photo(idOf(photo), photo.n);
    download.download = `photo-${index + 1}`;
    prev.hidden = index === 0;
    next.hidden = index === photos.length - 1;
    img.dataset.full = 'no';
    zoomed = false;
    layout();
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
      layout();
    });
    attempt += 1;
    full.src = api.urls.photo(idOf(photo), photo.n) + (attempt > 1 ? `?try=${attempt}` : '');
  }
  const retry = () => { if (img.dataset.full === 'no') loadFull(); };
  const offs = [
    on('transfer.done', (data) => { if (data.moment === idOf(photos[index])) retry(); }),
    on('transfer.chunk', (data) => { if (data.moment === idOf(photos[index]) && data.held === data.total) retry(); }),
  ];
  const resized = () => layout();
  window.addEventListener('resize', resized);

  function go(step) {
    const to = index + step;
    if (to < 0 || to >= photos.length) return;
    index = to;
    show();
  }

  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft' && !zoomed) go(-1);
    else if (e.key === 'ArrowRight' && !zoomed) go(1);
  });
  // A swipe moves between photos; a click on the photo zooms. Zoomed, a drag pans
  // (the stage scrolls) and a click fits the photo again.
  let startX = null;
  let moved = false;
  stage.addEventListener('pointerdown', (e) => { startX = e.clientX; moved = false; });
  stage.addEventListener('pointerup', (e) => {
    if (startX === null) return;
    const dx = e.clientX - startX;
    startX = null;
    moved = Math.abs(dx) > 40;
    if (moved && !zoomed) go(dx < 0 ? 1 : -1);
  });
  img.addEventListener('click', (e) => {
    if (moved || zoom.hidden) return;
    setZoom(!zoomed, { x: e.clientX, y: e.clientY });
  });
  dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(); });
  dialog.addEventListener('close', () => {
    for (const off of offs) off();
    window.removeEventListener('resize', resized);
    dialog.remove();
  });
  document.body.append(dialog);
  dialog.showModal();
  show();
  close.focus();
}
