// Notes written together (spec/notes.md): a circle's notes, and an editor.
//
// The browser runs no CRDT: the daemon does (pycrdt). The editor sends what changed in
// its text area as a splice of the version it last had (`base`), and the daemon makes
// of it an edit that lands where it belongs after whatever others wrote since; the
// answer is the note as merged, onto which the page moves what was typed meanwhile.
// So the page ships no yjs (about 30 KB gzipped, and a second copy of the merge rules
// to keep equal to the daemon's), and an edit is signed and sent by the daemon at once.

import * as api from './api.js';
import {
  append, clear, empty, errorText, h, icon, relativeTime, toast,
} from './dom.js';
import { on } from './live.js';
import { circleById, state } from './state.js';

const TITLE_WAIT = 400; // ms after the last key in the title before it is sent

export function notesView(root, [circleId]) {
  let gone = false;
  const draw = async () => {
    const c = circleById(circleId);
    let notes = [];
    try {
      notes = (await api.get(`/circles/${api.q(circleId)}/notes`)).notes;
    } catch (error) {
      if (!gone) clear(root, empty('No notes here', errorText(error)));
      return;
    }
    if (gone) return;
    const title = h('input', {
      name: 'title', required: true, maxLength: 200, placeholder: 'Title', 'aria-label': 'Title of a new note',
    });
    clear(root,
      h('p', { class: 'crumbs' }, h('a', { href: `#/circle/${encodeURIComponent(circleId)}` }, icon('back'), c ? c.name : 'Circle')),
      h('h1', { class: 'view-title' }, `Notes${c ? ` in ${c.name}` : ''}`),
      h('p', { class: 'muted' }, 'Every member who may post here can edit these notes, at the same time.'),
      h('form', {
        class: 'card note-new',
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const note = await api.post(`/circles/${api.q(circleId)}/notes`, { title: title.value });
            location.hash = `#/note/${encodeURIComponent(note.id)}`;
          } catch (error) {
            toast(errorText(error), 'error');
          }
        },
      }, title, h('button', { type: 'submit', class: 'button primary' }, 'New note')),
      notes.length ? h('ul', { class: 'rows card', 'aria-label': 'Notes' }, notes.map((n) => h('li', { class: 'row' },
        h('a', { class: 'row-main', href: `#/note/${encodeURIComponent(n.id)}` },
          h('strong', {}, n.title),
          h('small', {}, `${n.chars} characters · ${relativeTime(n.updated)}`,
            n.editing.length ? ` · editing now: ${n.editing.map((p) => p.name).join(', ')}` : ''))))) : empty('No notes yet', 'Start one above.'));
  };
  draw();
  const off = on('moment.added', (data) => {
    if (data.circle === circleId && data.kind === 'note') draw();
  });
  return () => { gone = true; off(); };
}

// What changed between two texts: one splice, in UTF-16 units, never splitting a
// surrogate pair.
function splice(a, b) {
  let start = 0;
  const most = Math.min(a.length, b.length);
  while (start < most && a[start] === b[start]) start += 1;
  if (start > 0 && isHigh(a.charCodeAt(start - 1))) start -= 1;
  let end = 0;
  while (end < most - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end += 1;
  if (end > 0 && isLow(a.charCodeAt(a.length - end))) end -= 1;
  return { at: start, delete: a.length - start - end, insert: b.slice(start, b.length - end) };
}
const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;
const codePoints = (text) => [...text].length;
const applied = (text, s) => text.slice(0, s.at) + s.insert + text.slice(s.at + s.delete);

// Where a position of a text is after a splice of it.
function moved(pos, s) {
  if (pos <= s.at) return pos;
  if (pos >= s.at + s.delete) return pos + s.insert.length - s.delete;
  return s.at + s.insert.length;
}

export function noteView(root, [noteId]) {
  let gone = false;
  let base = null; // the version the text area was last equal to, and its text
  let baseText = '';
  let busy = false; // a request in flight
  let again = false; // something changed while it was
  let titleTimer = null;
  const title = h('input', { class: 'note-title', maxLength: 200, 'aria-label': 'Title' });
  const text = h('textarea', { class: 'note-text', 'aria-label': 'Text', spellcheck: true, rows: 20 });
  const editing = h('p', { class: 'muted note-editing', 'aria-live': 'polite' });
  const crumbs = h('p', { class: 'crumbs' });

  // The note as merged (`note`), given that the text area held `sent` when asked: what
  // was typed since is moved onto it.
  const adopt = (note, sent) => {
    const now = text.value;
    const local = splice(sent, now);
    const remote = splice(sent, note.text);
    const at = moved(local.at, remote);
    const end = Math.max(at, moved(local.at + local.delete, remote));
    const mine = local.delete === 0 && local.insert === '' ? note.text
      : note.text.slice(0, at) + local.insert + note.text.slice(end);
    if (mine !== now) {
      const [from, to] = [text.selectionStart, text.selectionEnd];
      const change = splice(now, mine);
      text.value = mine;
      if (document.activeElement === text) text.setSelectionRange(moved(from, change), moved(to, change));
    }
    base = note.version;
    baseText = note.text;
    if (document.activeElement !== title && !titleTimer) title.value = note.title;
    const others = note.editing.filter((p) => p.identity !== state.me?.identity);
    editing.textContent = others.length ? `Editing now: ${others.map((p) => p.name).join(', ')}` : '';
    if (text.value !== baseText) again = true;
  };

  const sync = async (body = null) => {
    if (busy) { again = true; return; }
    busy = true;
    again = false;
    const sent = text.value;
    try {
      let note;
      if (base === null) {
        note = await api.get(`/notes/${api.q(noteId)}`);
        text.value = note.text;
        clear(crumbs, h('a', { href: `#/notes/${encodeURIComponent(note.circle)}` }, icon('back'), 'Notes'));
        adopt(note, note.text);
      } else if (body || sent !== baseText) {
        const change = splice(baseText, sent);
        const edit = { base, ...(body ?? {}) };
        if (sent !== baseText) {
          edit.splice = {
            at: codePoints(baseText.slice(0, change.at)),
            delete: codePoints(baseText.slice(change.at, change.at + change.delete)),
            insert: change.insert,
          };
        }
        note = await api.post(`/notes/${api.q(noteId)}/edits`, edit);
        adopt(note, sent);
      } else {
        note = await api.get(`/notes/${api.q(noteId)}`);
        adopt(note, sent);
      }
      root.dataset.version = note.version;
    } catch (error) {
      if (error.code === 'stale') base = null; // read it again, keep what was typed
      else toast(errorText(error), 'error');
    } finally {
      busy = false;
    }
    if (again && !gone) sync();
  };

  text.addEventListener('input', () => sync());
  title.addEventListener('input', () => {
    clearTimeout(titleTimer);
    titleTimer = setTimeout(() => {
      titleTimer = null;
      if (title.value.trim()) sync({ title: title.value });
    }, TITLE_WAIT);
  });
  clear(root, crumbs, h('div', { class: 'note-editor card' }, title, editing, text));
  append(root, h('p', { class: 'muted' }, 'Saved as you type, and sent to the circle at once.'));
  sync();
  const off = on('moment.added', (data) => {
    if (data.reply_to === noteId && (data.kind === 'note_edit' || data.kind === 'note_snapshot')) sync();
  });
  const offGap = on('gap', () => sync());
  return () => { gone = true; off(); offGap(); clearTimeout(titleTimer); };
}
