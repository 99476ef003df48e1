// A post's file and its versions (spec/moments.md section 9): the versions listed, any
// one downloaded, a new one uploaded, siblings side by side to pick one or merge.

import * as api from './api.js';
import { h, icon, person, size, timeEl, toast, errorText } from './dom.js';
import { canPost, circleById, isMe } from './state.js';

const url = (id, n) => `${api.API}/moments/${api.q(id)}/versions/${n}/file`;

function who(p) {
  return isMe(p) ? 'You' : person(p).name;
}

function possessive(p) {
  return isMe(p) ? 'your' : `${person(p).name}'s`;
}

/**
 * What the feed shows of a post's file with versions, in place of its first file (which
 * is version 1): the newest, or the siblings side by side while they are unresolved.
 */
export function newestFile(m, refresh) {
  const v = m.versions;
  if (!v) return null;
  if (v.siblings.length) {
    const names = v.siblings.map((s) => possessive(s.author));
    const title = `${names.slice(0, -1).join(', ')} and ${names.at(-1)} versions of ${v.newest.name}`;
    const box = h('div', { class: 'siblings', role: 'group', 'aria-label': title },
      h('p', { class: 'siblings-title' }, icon('file'), h('span', {}, title.charAt(0).toUpperCase() + title.slice(1))),
      h('div', { class: 'sibling-row' }, v.siblings.map((s) => h('div', { class: 'sibling' },
        h('a', { href: url(m.id, s.n), download: s.name }, `Version ${s.n}`),
        h('small', {}, `${who(s.author)} · ${size(s.size)}`, s.note ? ` · ${s.note}` : ''),
        h('button', { type: 'button', class: 'button small pick', dataset: { n: s.n }, 'aria-label': `Keep version ${s.n}` },
          'Keep this one')))));
    box.addEventListener('click', async (event) => {
      const button = event.target.closest('button.pick');
      if (!button) return;
      button.disabled = true;
      try {
        await api.post(`/moments/${api.q(m.id)}/versions/${Number(button.dataset.n)}/pick`, {});
        refresh(m.id);
      } catch (error) {
        toast(errorText(error), 'error');
        button.disabled = false;
      }
    });
    return box;
  }
  return h('ul', { class: 'files newest-version' }, h('li', {},
    h('a', { href: url(m.id, v.newest.n), download: v.newest.name }, icon('file'),
      h('span', {}, `${v.newest.name}, version ${v.newest.n}`)),
    h('small', {}, `${size(v.newest.size)} · ${who(v.newest.author)}`)));
}

/** The Versions panel of a post with a file: the list (opened on demand) and the upload. */
export function versionsPanel(m, refresh) {
  if (!m.files.length) return null;
  const list = h('ul', { class: 'version-list' });
  const details = h('details', { class: 'versions' },
    h('summary', {}, m.versions ? `Versions (${m.versions.count})` : 'Versions'), list);
  details.addEventListener('toggle', async () => {
    if (!details.open) return;
    try {
      const shown = await api.get(`/moments/${api.q(m.id)}/versions`);
      list.replaceChildren(...shown.versions.slice().reverse().map((v) => h('li', { class: v.dropped ? 'dropped' : '' },
        v.dropped ? h('span', {}, `Version ${v.n}`) : h('a', { href: url(m.id, v.n), download: v.name }, `Version ${v.n}`),
        h('small', {}, ` ${who(v.author)} · `, timeEl(v.time), ` · ${size(v.size)}`,
          v.note ? ` · ${v.note}` : '', v.dropped ? ' · no longer kept' : ''))));
    } catch (error) {
      toast(errorText(error), 'error');
    }
  });
  const circle = circleById(m.circle.id);
  if (circle && canPost(circle)) details.append(uploadForm(m, refresh));
  return h('div', { class: 'versions-box' }, details);
}

function uploadForm(m, refresh) {
  const file = h('input', { type: 'file', name: 'file', required: true, 'aria-label': 'The new version' });
  const note = h('input', { type: 'text', name: 'note', maxlength: 500, placeholder: 'What changed (optional)', 'aria-label': 'What changed' });
  const progress = h('progress', { max: 1, value: 0, hidden: true, 'aria-label': 'Uploading' });
  const merging = m.versions?.siblings.length
    ? h('p', { class: 'hint' }, 'A new version now follows all the versions shown side by side: it is their merge.')
    : null;
  const form = h('form', { class: 'version-upload' }, merging, file, note,
    h('button', { type: 'submit', class: 'button small primary' }, 'Upload a new version'), progress);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    if (note.value.trim()) body.append('note', note.value.trim());
    body.append('file', file.files[0], file.files[0].name);
    progress.hidden = false;
    try {
      await api.upload(`/moments/${api.q(m.id)}/versions`, body, (done) => { progress.value = done; });
      refresh(m.id);
    } catch (error) {
      toast(errorText(error), 'error');
    } finally {
      progress.hidden = true;
    }
  });
  return form;
}
