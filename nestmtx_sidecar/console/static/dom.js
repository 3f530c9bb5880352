// DOM helpers. Every value from the API goes in as text (textContent, attributes), never as
// HTML: a camera named `<img onerror=...>` shows those characters and runs nothing.

let uniqueCounter = 0;

// el('button', {type: 'button', onclick: fn}, 'Save') -> <button type="button">Save</button>
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (name === 'className') {
      node.className = value;
    } else if (name === 'checked' || name === 'value') {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

export function uniqueId(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

export function byId(id) {
  return document.getElementById(id);
}

export function setText(node, text) {
  node.textContent = text ?? '';
}

// A labelled control: returns [label, control] for a form row.
export function labelled(text, control) {
  control.id ||= uniqueId('field');
  return [el('label', { for: control.id }, text), control];
}

// A button that copies `text` to the clipboard and says so. Where the clipboard API is not
// offered (plain http on a LAN address is no secure context), it selects `shown` instead.
export function copyButton(label, text, shown = null) {
  const status = el('span', { className: 'copied', role: 'status' });
  const button = el('button', {
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        setText(status, 'Copied');
      } catch {
        if (shown) window.getSelection().selectAllChildren(shown);
        setText(status, 'Selected: press Ctrl+C (⌘C) to copy');
      }
      setTimeout(() => setText(status, ''), 4000);
    },
  }, label);
  return el('span', { className: 'copy' }, button, status);
}

export function formatTime(iso) {
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? String(iso ?? '') : moment.toLocaleTimeString();
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'],
    [Math.floor(s / 60) % 60, 'min'], [s % 60, 's']];
  const shown = parts.filter(([n]) => n > 0).slice(0, 2);
  return shown.length ? shown.map(([n, unit]) => `${n} ${unit}`).join(' ') : '0 s';
}

// A bounded list: keeps the newest `limit` items, so a long session cannot grow without end.
export class Ring {
  constructor(limit) {
    this.limit = limit;
    this.items = [];
  }

  push(item) {
    this.items.push(item);
    if (this.items.length > this.limit) this.items.splice(0, this.items.length - this.limit);
  }

  clear() {
    this.items = [];
  }
}
