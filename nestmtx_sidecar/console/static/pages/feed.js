// A live feed page (Events, Logs): the newest entries kept in a ring and shown newest first,
// filtered by the page, pausable without losing what arrives meanwhile.

import { byId, Ring, setText } from '../dom.js';

export class LiveFeed {
  // `prefix` names the page's elements (`<prefix>-list`, `-filter`, `-pause`, `-paused`);
  // `noun` is what the pause note counts. Subclasses give `matches(entry)` and `item(entry)`.
  constructor(prefix, kept, noun) {
    this.prefix = prefix;
    this.kept = kept;
    this.noun = noun;
    this.entries = new Ring(kept);
    this.paused = false;
    this.missed = 0;
    byId(`${prefix}-filter`).addEventListener('submit', (event) => event.preventDefault());
    byId(`${prefix}-pause`).addEventListener('click', () => this.togglePause());
  }

  show() {
    this.render();
  }

  togglePause() {
    this.paused = !this.paused;
    const button = byId(`${this.prefix}-pause`);
    button.setAttribute('aria-pressed', String(this.paused));
    setText(button, this.paused ? 'Resume' : 'Pause');
    if (!this.paused) {
      this.missed = 0;
      this.render();
    }
    this.renderPaused();
  }

  renderPaused() {
    const note = byId(`${this.prefix}-paused`);
    note.hidden = !this.paused;
    setText(note, `Paused: ${this.missed} new ${this.noun} held back.`);
  }

  add(entry) {
    this.entries.push(entry);
    if (this.paused) {
      this.missed += 1;
      this.renderPaused();
    } else if (this.matches(entry)) {
      const list = byId(`${this.prefix}-list`);
      list.prepend(this.item(entry));
      while (list.childElementCount > this.kept) list.lastElementChild.remove();
    }
  }

  render() {
    if (this.paused) return;
    const shown = this.entries.items.filter((entry) => this.matches(entry)).reverse();
    byId(`${this.prefix}-list`).replaceChildren(...shown.map((entry) => this.item(entry)));
  }
}
