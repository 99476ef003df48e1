// Pairing: show my code (a fresh one for each friend, refreshed before it expires);
// scan a friend's with the camera, paste their link, or pick a photo of their code.
// Where the browser has no BarcodeDetector (desktop Chromium on Linux), camera frames
// go to the daemon, which reads codes with zxing-cpp (POST /api/v1/pairing/decode).

import * as api from './api.js';
import { startChat } from './chat.js';
import { append, clear, errorText, h, icon } from './dom.js';
import { on } from './live.js';
import { loadFriends } from './state.js';

const FRAME_MS = 250;
const MAX_FRAME = 960; // pixels on the longer side sent to the daemon

/** "You and Bob are now friends", with what to do next. */
function friendsNow(p) {
  return h('div', { class: 'success' },
    h('h3', {}, `You and ${p.name} are now friends`),
    h('div', { class: 'button-row' },
      h('button', {
        type: 'button',
        class: 'button primary',
        onclick: () => startChat({ identity: p.identity, name: p.name }),
      }, `Chat with ${p.name}`),
      h('a', { class: 'button', href: '#/circles' }, 'Add them to a circle')));
}

function myCode(onFriend) {
  const met = h('div', { class: 'pair-result', role: 'status', 'aria-live': 'polite' });
  const img = h('img', { class: 'qr', alt: 'Your pairing code', width: 280, height: 280 });
  const link = h('input', { type: 'text', readOnly: true, class: 'link-text', 'aria-label': 'Your pairing link', dataset: { pairingLink: '' } });
  const when = h('p', { class: 'muted', role: 'status' });
  const copy = h('button', {
    type: 'button',
    class: 'button small',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(link.value);
        copy.textContent = 'Copied';
      } catch {
        link.select();
      }
    },
  }, icon('link'), 'Copy link');
  let timer = null;
  let ticker = null;
  let expires = 0;
  let picture = null;
  const backoff = new api.Backoff(2000);

  function countdown() {
    const left = Math.max(0, Math.round((expires - Date.now() / 1000) / 60));
    when.textContent = `It works once, for one friend, for ${left > 1 ? `${left} more minutes` : 'about a minute'}. A new one appears by itself.`;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      // The link and its picture come together: they are always the same code.
      const answer = await api.get('/pairing/code');
      expires = answer.expires_at;
      link.value = answer.link;
      if (picture) URL.revokeObjectURL(picture);
      picture = URL.createObjectURL(new Blob([answer.svg], { type: 'image/svg+xml' }));
      img.src = picture;
      copy.textContent = 'Copy link';
      copy.prepend(icon('link'));
      countdown();
      backoff.reset();
      // A new code shortly before this one expires (each is good for one friend).
      timer = setTimeout(refresh, Math.max(5, expires - Date.now() / 1000 - 30) * 1000);
    } catch (error) {
      when.textContent = errorText(error);
      timer = setTimeout(refresh, backoff.next());
    }
  }

  ticker = setInterval(countdown, 30000);
  const offs = [
    // Our code was used: say who is now a friend, and show a fresh code for the next.
    on('pairing.confirmed', (data) => {
      if (data.direction !== 'in') return;
      clear(met, friendsNow(data));
      onFriend();
      refresh();
    }),
    on('gap', refresh),
  ];
  refresh();
  const el = h('section', { class: 'card my-code', 'aria-labelledby': 'my-code-title' },
    h('h2', { id: 'my-code-title' }, 'Show your code'),
    h('p', { class: 'muted' }, 'Let your friend scan it with their Moments app.'),
    met,
    h('div', { class: 'qr-frame' }, img),
    when,
    h('div', { class: 'link-row' }, link, copy));
  const stop = () => {
    clearTimeout(timer);
    clearInterval(ticker);
    if (picture) URL.revokeObjectURL(picture);
    for (const off of offs) off();
  };
  return { el, stop };
}

function scanner(report) {
  const video = h('video', { class: 'camera', muted: true, playsInline: true, autoplay: true, 'aria-label': 'Camera' });
  const status = h('p', { class: 'scan-status', role: 'status' });
  const start = h('button', { type: 'button', class: 'button primary' }, icon('camera'), 'Scan with the camera');
  const stopButton = h('button', { type: 'button', class: 'button quiet', hidden: true }, 'Stop the camera');
  const frame = h('div', { class: 'camera-frame', hidden: true }, video, h('span', { class: 'aim', 'aria-hidden': 'true' }));
  let stream = null;
  let running = false;
  const canvas = document.createElement('canvas');

  async function decodeFrame() {
    if ('BarcodeDetector' in window) {
      const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
      const codes = await detector.detect(video);
      const links = codes.map((c) => c.rawValue).filter((t) => t.toUpperCase().startsWith('P2PM:'));
      return { links, codes: codes.length };
    }
    const scale = Math.min(1, MAX_FRAME / Math.max(video.videoWidth, video.videoHeight));
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.85));
    return api.postImage('/pairing/decode', blob);
  }

  async function loop() {
    while (running) {
      const started = performance.now();
      if (video.readyState >= 2 && video.videoWidth) {
        try {
          const found = await decodeFrame();
          if (!running) return;
          if (found.links.length) {
            stop();
            status.textContent = 'Got their code.';
            report(found.links[0]);
            return;
          }
          status.textContent = found.codes ? 'That code is not a Moments code.' : 'Looking for a code… hold it inside the frame.';
        } catch (error) {
          status.textContent = errorText(error);
        }
      }
      await new Promise((r) => setTimeout(r, Math.max(0, FRAME_MS - (performance.now() - started))));
    }
  }

  function stop() {
    running = false;
    for (const track of stream?.getTracks() ?? []) track.stop();
    stream = null;
    video.srcObject = null;
    frame.hidden = true;
    stopButton.hidden = true;
    start.hidden = false;
  }

  start.addEventListener('click', async () => {
    if (!navigator.mediaDevices?.getUserMedia) {
      status.textContent = 'This browser cannot use a camera here. Paste the link, or pick a photo of the code.';
      return;
    }
    status.textContent = 'Starting the camera…';
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: 'environment' }, width: { ideal: 1280 } },
        audio: false,
      });
    } catch (error) {
      status.textContent = error.name === 'NotAllowedError'
        ? 'The camera was not allowed. Paste the link, or pick a photo of the code.'
        : 'No camera could be opened. Paste the link, or pick a photo of the code.';
      return;
    }
    video.srcObject = stream;
    frame.hidden = false;
    start.hidden = true;
    stopButton.hidden = false;
    status.textContent = 'Looking for a code…';
    running = true;
    loop();
  });
  stopButton.addEventListener('click', () => {
    stop();
    status.textContent = '';
  });
  return { el: h('div', { class: 'scanner' }, frame, h('div', { class: 'button-row' }, start, stopButton), status), stop };
}

export function pairView(root) {
  const result = h('div', { class: 'pair-result', role: 'status', 'aria-live': 'polite' });

  async function pair(link) {
    clear(result, h('p', { class: 'working' }, 'Reaching your friend’s device…'));
    try {
      const answer = await api.post('/friends', { link: link.trim(), wait: 15 });
      const p = answer.pairing;
      loadFriends().catch(() => {});
      if (p.state === 'confirmed') {
        clear(result, friendsNow(p));
      } else if (p.state === 'pending') {
        clear(result, h('div', { class: 'pending' },
          h('h3', {}, `Waiting for ${p.name}’s device`),
          h('p', {}, 'It could not be reached yet. Pairing finishes by itself when your devices meet, while the code is valid.')));
      } else {
        clear(result, h('div', { class: 'failure' },
          h('h3', {}, `Pairing with ${p.name || 'them'}: ${p.state}`),
          h('p', {}, p.reason ? errorText({ message: p.reason }) : 'Ask them for a fresh code.')));
      }
    } catch (error) {
      clear(result, h('div', { class: 'failure' }, h('h3', {}, 'That did not work'), h('p', {}, errorText(error))));
    }
  }

  // On a phone the two halves are two tabs, My code first (as messengers do); on a
  // wider screen they sit side by side and the tabs are not shown.
  const grid = h('div', { class: 'pair-grid', dataset: { tab: 'code' } });
  const tabs = [['code', 'My code'], ['scan', 'Scan']].map(([name, label]) => h('button', {
    type: 'button',
    class: 'pair-tab',
    'aria-pressed': name === 'code' ? 'true' : 'false',
    dataset: { tab: name },
    onclick: () => show(name),
  }, label));
  function show(name) {
    grid.dataset.tab = name;
    for (const tab of tabs) tab.setAttribute('aria-pressed', String(tab.dataset.tab === name));
    if (name !== 'scan' && getComputedStyle(tabs[0].parentElement).display !== 'none') scan.stop();
  }
  const code = myCode(() => show('code'));
  const scan = scanner(pair);
  const pasted = h('input', { type: 'text', name: 'link', placeholder: 'P2PM:1/…', autocomplete: 'off', spellcheck: false, 'aria-label': 'A friend’s pairing link' });
  const photo = h('input', { type: 'file', accept: 'image/*', class: 'visually-hidden', tabIndex: -1, 'aria-label': 'A photo of a friend’s code' });
  photo.addEventListener('change', async () => {
    const file = photo.files[0];
    photo.value = '';
    if (!file) return;
    clear(result, h('p', { class: 'working' }, 'Reading the code…'));
    try {
      const found = await api.postImage('/pairing/decode', file);
      if (found.links.length) pair(found.links[0]);
      else {
        clear(result, h('div', { class: 'failure' }, h('h3', {}, 'No Moments code in that picture'),
          h('p', {}, found.codes ? 'It has a QR code, but not a pairing code.' : 'Try a sharper photo, with the whole code in it.')));
      }
    } catch (error) {
      clear(result, h('div', { class: 'failure' }, h('h3', {}, 'That picture could not be read'), h('p', {}, errorText(error))));
    }
  });

  append(root,
    h('h1', { class: 'view-title' }, 'Add a friend'),
    h('p', { class: 'lead' }, 'Friends are made face to face, with one scan. Either of you can scan the other.'),
    h('div', { class: 'pair-tabs', role: 'group', 'aria-label': 'Show your code or scan theirs' }, tabs),
    append(grid,
      code.el,
      h('section', { class: 'card scan', 'aria-labelledby': 'scan-title' },
        h('h2', { id: 'scan-title' }, 'Scan their code'),
        scan.el,
        h('form', {
          class: 'paste',
          onsubmit: (e) => {
            e.preventDefault();
            if (pasted.value.trim()) pair(pasted.value);
            else {
              clear(result, h('div', { class: 'failure' }, h('p', {}, 'Paste a link first.')));
              pasted.focus();
            }
          },
        }, h('label', { class: 'field' }, h('span', {}, 'Or paste the link they sent you'),
          h('div', { class: 'input-row' }, pasted, h('button', { type: 'submit', class: 'button' }, 'Pair')))),
        h('p', {}, h('button', { type: 'button', class: 'link-button', onclick: () => photo.click() }, icon('photo'), 'Or pick a photo of their code'), photo),
        result)));
  pasted.addEventListener('paste', (e) => {
    const text = e.clipboardData?.getData('text') ?? '';
    if (text.trim().toUpperCase().startsWith('P2PM:')) {
      e.preventDefault();
      pasted.value = text.trim();
      pair(text);
    }
  });
  return () => {
    code.stop();
    scan.stop();
  };
}
