// A circle's photos by date, as shared albums show them: a header for each day, a grid
// of thumbnails (each loaded only as it nears the screen), the viewer on a click, and
// "Download all" (a zip the daemon makes as it sends it). Pages of photos come as the
// person scrolls (GET /circles/{ref}/photos).

import * as api from './api.js';
import {
  append, clear, dayLabel, empty, errorText, h, icon, person,
} from './dom.js';
import { on } from './live.js';
import { circleById, onChange } from './state.js';
import { openViewer } from './viewer.js';

const FIRST_PAGE = 120; // enough to fill a large screen; the rest as the person scrolls
const PAGE = 500;

const dayKey = (seconds) => {
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
};

export function galleryView(root, [circleId]) {
  const circle = circleById(circleId);
  const photos = []; // every photo loaded, newest first: the viewer moves through them all
  const days = new Map(); // day key -> its grid
  const sections = h('div', { class: 'gallery' });
  const status = h('p', { class: 'feed-status', role: 'status' });
  const sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const name = circle?.name ?? 'this circle';
  let cursor = '';
  let loading = false;
  let stopped = false;
  let retryTimer = null;
  const backoff = new api.Backoff();

  append(root,
    h('p', { class: 'crumbs' }, h('a', { href: `#/circle/${encodeURIComponent(circleId)}` }, icon('back'), name)),
    h('div', { class: 'view-head' },
      h('h1', { class: 'view-title' }, `Photos in ${name}`),
      h('a', {
        class: 'button quiet small download-all',
        href: `${api.API}/circles/${api.q(circleId)}/photos.zip`,
        download: `${name} photos.zip`,
      }, icon('download'), 'Download all')),
    sections, status, sentinel);

  function tile(photo) {
    const index = photos.length;
    photos.push(photo);
    const here = photo.chunks_held >= photo.chunks;
    const who = person(photo.author).name;
    const label = photo.caption ? `Photo from ${who}: ${photo.caption}` : `Photo from ${who}`;
    const img = h('img', {
      alt: label, loading: 'lazy', decoding: 'async', width: 160, height: 160,
      src: api.urls.thumbnail(photo.moment, photo.n) + (here ? '' : `?try=${photo.chunks_held}`),
    });
    const button = h('button', {
      type: 'button',
      class: 'photo tile loading',
      'aria-label': `Open ${label.charAt(0).toLowerCase()}${label.slice(1)}`,
      onclick: () => openViewer({ photos, label: `Photos in ${name}` }, index),
    }, img);
    img.addEventListener('load', () => button.classList.remove('loading'));
    img.addEventListener('error', () => button.classList.add('waiting'));
    return h('li', {}, button);
  }

  function add(page) {
    for (const photo of page) {
      // A post's time is its author's word: one no calendar holds goes under "Undated".
      const dated = Number.isFinite(new Date(photo.time * 1000).getTime());
      const key = dated ? dayKey(photo.time) : 'undated';
      let grid = days.get(key);
      if (!grid) {
        const id = `day-${days.size}`;
        grid = h('ul', { class: 'gallery-grid', 'aria-labelledby': id });
        days.set(key, grid);
        sections.append(h('section', { class: 'gallery-day' },
          h('h2', { id, class: 'day-header' }, dated ? dayLabel(photo.time) : 'Undated'), grid));
      }
      grid.append(tile(photo));
    }
  }

  async function loadMore() {
    if (loading || stopped || cursor === null || retryTimer) return;
    loading = true;
    status.textContent = 'Loading…';
    let loaded = false;
    try {
      const limit = photos.length ? PAGE : FIRST_PAGE;
      const page = await api.get(`/circles/${api.q(circleId)}/photos?limit=${limit}${cursor ? `&cursor=${api.q(cursor)}` : ''}`);
      if (stopped) return;
      backoff.reset();
      add(page.photos);
      cursor = page.next_cursor;
      loaded = true;
      status.textContent = cursor === null && photos.length ? `${photos.length} ${photos.length === 1 ? 'photo' : 'photos'}.` : '';
      if (!photos.length && cursor === null) {
        clear(sections, empty('No photos here yet', `Photos posted to ${name} show here, by day.`));
      }
      if (!window.p2pmGallery) {
        window.p2pmGallery = performance.now();
        performance.mark('p2pm-gallery-rendered');
      }
    } catch (error) {
      if (stopped) return;
      if (error.status === 404) {
        clear(sections, empty('This circle no longer exists', 'It was deleted, so there are no photos to see here.'));
        cursor = null;
        status.textContent = '';
        return;
      }
      const wait = backoff.next();
      status.textContent = `${errorText(error)} Trying again in ${Math.round(wait / 1000)} s.`;
      retryTimer = setTimeout(() => { retryTimer = null; loadMore(); }, wait);
    } finally {
      loading = false;
    }
    if (loaded && cursor !== null && sentinel.getBoundingClientRect().top < window.innerHeight * 2) loadMore();
  }

  // New photos posted meanwhile: start again from the newest.
  function reload() {
    photos.length = 0;
    days.clear();
    sections.replaceChildren();
    cursor = '';
    loadMore();
  }

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: '1200px 0px' });
  observer.observe(sentinel);
  const offs = [
    on('moment.added', (data) => { if (data.kind === 'post' && data.circle === circleId && !loading) reload(); }),
    on('gap', reload),
    onChange((what) => { if (what === 'circles' && !circleById(circleId)) reload(); }),
  ];
  loadMore();
  return () => {
    stopped = true;
    clearTimeout(retryTimer);
    observer.disconnect();
    for (const off of offs) off();
  };
}
