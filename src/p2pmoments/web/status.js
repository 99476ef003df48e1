// Me: my name (editable), my identity, who is connected, transfers in progress,
// and logging out.

import * as api from './api.js';
import {
  append, avatar, clear, errorText, h, hasPicture, icon, relativeTime, size, toast,
} from './dom.js';
import { devicesCard } from './devices.js';
import { on } from './live.js';
import { settingsCard } from './settings.js';
import { loadMe, loadPictures, onChange, state } from './state.js';

function grouped(identity) {
  return identity.match(/.{1,4}/g).join(' ');
}

export function statusView(root) {
  const profile = h('section', { class: 'card profile', 'aria-label': 'You' });
  // Each section has its heading from the start: a section named by a heading not yet
  // drawn would be a nameless region (axe: aria-prohibited-attr).
  const peers = h('section', { class: 'card', 'aria-labelledby': 'peers-title' }, h('h2', { id: 'peers-title' }, 'Connected now'));
  const transfers = h('section', { class: 'card', 'aria-labelledby': 'transfers-title' });
  const daemon = h('section', { class: 'card', 'aria-labelledby': 'daemon-title' }, h('h2', { id: 'daemon-title' }, 'This device'));
  // Said at the top while the disk is full: posts are refused, photos and files wait.
  const diskAlert = h('p', { class: 'form-error', role: 'alert', hidden: true });

  function drawProfile() {
    const name = h('input', { type: 'text', value: state.me.name, maxLength: 32, required: true, 'aria-label': 'Your name', autocomplete: 'off' });
    const error = h('p', { class: 'form-error', role: 'alert' });
    clear(profile,
      h('div', { class: 'profile-head' }, h('div', { class: 'picture-col' }, avatar(state.me, 'l'), pictureButtons(error)),
        h('form', {
          class: 'name-form',
          onsubmit: async (e) => {
            e.preventDefault();
            error.textContent = '';
            try {
              await api.patch('/profile', { name: name.value.trim() });
              await loadMe();
              toast('Your name is changed. Friends see it when they next connect.');
            } catch (failure) {
              error.textContent = errorText(failure);
            }
          },
        }, h('label', { class: 'field' }, h('span', {}, 'Your name, as friends first see it'),
          h('div', { class: 'input-row' }, name, h('button', { type: 'submit', class: 'button' }, 'Save'))), error)),
      h('details', { class: 'details' },
        h('summary', {}, 'Details: your identity'),
        h('p', { class: 'muted' }, 'Friends can compare it with what their app shows for you. Its last characters are a check.'),
        h('code', { class: 'identity', dataset: { identity: state.me.identity } }, grouped(state.me.identity))));
  }

  // Our profile picture: the daemon makes a small square of whatever is chosen, and
  // friends and co-members get it (spec/identity.md section 5).
  function pictureButtons(error) {
    async function change(send, done) {
      error.textContent = '';
      try {
        await send();
        await loadPictures();
        drawProfile();
        toast(done);
      } catch (failure) {
        error.textContent = errorText(failure);
      }
    }
    const input = h('input', {
      type: 'file', accept: 'image/*', class: 'visually-hidden', tabIndex: -1, 'aria-label': 'Picture to choose',
      onchange: (e) => {
        const [file] = e.target.files;
        e.target.value = '';
        if (file) change(() => api.postImage('/profile/picture', file, 'PUT'), 'Your picture is changed. Friends see it when they next connect.');
      },
    });
    const mine = hasPicture(state.me.identity);
    return h('div', { class: 'picture-buttons' }, input,
      h('button', { type: 'button', class: 'button small', onclick: () => input.click() }, mine ? 'Change picture' : 'Choose a picture'),
      mine ? h('button', {
        type: 'button',
        class: 'button quiet small',
        onclick: () => change(() => api.del('/profile/picture'), 'Your picture is removed.'),
      }, 'Remove picture') : null);
  }

  // What carries each link (spec/tor.md section 7).
  const PATHS = { lan: 'on this network', static: 'at a fixed address', tor: 'through Tor' };
  // How a friend's device was found, for the details (spec/discovery.md).
  const FOUND = {
    incoming: 'their device reached yours',
    address: 'your device reached theirs',
    static: 'your device reached theirs at a fixed address',
    mdns: 'found on this network',
    onion: 'your device reached theirs through Tor',
  };

  function torText(tor) {
    if (tor.state === 'off') return 'off';
    if (tor.state === 'missing') return `not installed: ${tor.error}`;
    if (tor.state === 'failed') return `not working, trying again: ${tor.error}`;
    if (!tor.bootstrapped) return `starting (${tor.bootstrap} %)`;
    return tor.published ? 'on: friends can reach you from anywhere' : 'on: publishing your onion service';
  }

  async function drawPeers() {
    try {
      const answer = await api.get('/peers');
      clear(peers, h('h2', { id: 'peers-title' }, 'Connected now'),
        answer.peers.length ? h('ul', { class: 'rows' }, answer.peers.map((p) => h('li', { class: 'row' },
          avatar(p, 's'),
          h('span', { class: 'row-main' }, h('strong', {}, p.name),
            h('small', {}, `Connected ${PATHS[p.path] ?? ''} since ${relativeTime(p.since)}`.replace('  ', ' ')),
            h('details', { class: 'details' }, h('summary', {}, 'Details'),
              h('small', {}, [p.address, FOUND[p.found_via],
                `received ${size(p.bytes_in)}, sent ${size(p.bytes_out)}`].filter(Boolean).join(' · ')))))))
          : h('p', { class: 'muted' }, 'No one right now. Friends connect when their devices are on the same network, reachable at a known address, or through Tor.'));
    } catch (error) {
      clear(peers, h('h2', { id: 'peers-title' }, 'Connected now'), h('p', {}, errorText(error)));
    }
  }

  function drawTransfers() {
    const rows = [...state.transfers.entries()];
    clear(transfers, h('h2', { id: 'transfers-title' }, 'Arriving'),
      rows.length ? h('ul', { class: 'rows' }, rows.map(([id, t]) => h('li', { class: 'row' },
        icon('download'),
        h('span', { class: 'row-main' }, h('strong', {}, `Photos and files of moment ${id.slice(0, 8)}`),
          h('progress', { max: t.total, value: t.held, 'aria-label': 'Progress' }),
          h('small', {}, `${t.held} of ${t.total} pieces`)))))
        : h('p', { class: 'muted' }, 'Nothing is arriving right now.'));
  }

  async function drawDaemon() {
    try {
      const s = await api.get('/status');
      diskAlert.hidden = !s.disk.full;
      diskAlert.textContent = s.disk.full
        ? `The disk is full: free space on ${s.disk.path}. Posting fails and arriving photos and files wait until there is room; nothing is lost.`
        : '';
      clear(daemon, h('h2', { id: 'daemon-title' }, 'This device'),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Friends'), h('dd', {}, String(s.friends)),
          h('dt', {}, 'Circles'), h('dd', {}, String(s.circles)),
          h('dt', {}, 'Moments'), h('dd', {}, String(s.moments)),
          h('dt', {}, 'Running since'), h('dd', {}, relativeTime(s.started_at)),
          h('dt', {}, 'Tor'), h('dd', {}, torText(s.tor)),
          h('dt', {}, 'Disk'), h('dd', {}, s.disk.full ? `full: free space on ${s.disk.path}` : `${size(s.disk.free)} free`)),
        h('details', { class: 'details' }, h('summary', {}, 'Details'),
          h('dl', { class: 'facts' },
            h('dt', {}, 'Friends’ devices connect to'), h('dd', {}, s.listen.join(', ')),
            h('dt', {}, 'Version'), h('dd', {}, s.version))),
        h('button', {
          type: 'button',
          class: 'button quiet',
          onclick: async () => {
            try {
              await api.del('/session');
            } catch { /* already gone */ }
            window.dispatchEvent(new CustomEvent('p2pm:logged-out'));
          },
        }, 'Log out of this browser'));
    } catch (error) {
      clear(daemon, h('p', {}, errorText(error)));
    }
  }

  const devices = devicesCard();
  append(root, h('h1', { class: 'view-title' }, 'Me'), diskAlert, profile, settingsCard(), devices.card, peers, transfers, daemon);
  drawProfile();
  drawPeers();
  drawTransfers();
  drawDaemon();
  const offs = [
    onChange((what) => {
      if (what === 'me') drawProfile();
      if (what === 'transfers') drawTransfers();
    }),
    on('peer.connected', drawPeers),
    on('peer.disconnected', drawPeers),
    on('gap', () => { drawPeers(); drawDaemon(); }),
    on('disk.full', drawDaemon),
    on('disk.room', drawDaemon),
  ];
  return () => { devices.close(); for (const off of offs) off(); };
}
