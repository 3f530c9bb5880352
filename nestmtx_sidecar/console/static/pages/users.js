// Users: list, add, change password, disable or enable log-in, delete (never yourself).

import { byId, el, labelled, setText } from '../dom.js';

export class UsersPage {
  constructor({ connection, session }) {
    this.connection = connection;
    this.me = session.user?.id;
    this.users = [];
    byId('user-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.create(event.currentTarget);
    });
  }

  async create(form) {
    setText(byId('user-form-error'), '');
    try {
      await this.connection.request('users', 'create', { payload: {
        username: byId('user-username').value.trim(), password: byId('user-password').value } });
      form.reset();
      await this.show();
    } catch (error) {
      setText(byId('user-form-error'), error.text ?? error.message);
    }
  }

  async show() {
    try {
      const page = await this.connection.request('users', 'list',
        { payload: { itemsPerPage: -1, sortBy: 'username' } });
      this.users = page.items;
      setText(byId('users-error'), '');
      this.render();
    } catch (error) {
      setText(byId('users-error'), error.text ?? error.message);
    }
  }

  async change(user, payload, status, done = 'Saved.') {
    setText(status, 'Saving…');
    try {
      await this.connection.request('users', 'update', { entity: user.id, payload });
      await this.show();
      setText(byId(`user-status-${user.id}`), done);
    } catch (error) {
      setText(status, error.text ?? error.message);
    }
  }

  async remove(user, status) {
    if (!window.confirm(`Delete user "${user.username}"?`)) return;
    try {
      await this.connection.request('users', 'delete', { entity: user.id });
      await this.show();
    } catch (error) {
      setText(status, error.text ?? error.message);
    }
  }

  passwordForm(user, status) {
    const input = el('input', { type: 'password', minlength: 8, maxlength: 1024, required: true,
      autocomplete: 'new-password' });
    const form = el('form', { className: 'inline-form', hidden: true },
    labelled(`New password for ${user.username}`, input),
    el('button', { type: 'submit' }, 'Set password'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.change(user, { password: input.value }, status, 'Password changed.');
    });
    return form;
  }

  render() {
    byId('users-table').tBodies[0].replaceChildren(...this.users.map((user) => {
      const self = user.id === this.me;
      const status = el('p', { className: 'row-status', role: 'status',
        id: `user-status-${user.id}` });
      const form = this.passwordForm(user, status);
      const toggle = el('button', { type: 'button', 'aria-expanded': 'false',
        'aria-label': `Change password of ${user.username}` }, 'Change password');
      toggle.addEventListener('click', () => {
        form.hidden = !form.hidden;
        toggle.setAttribute('aria-expanded', String(!form.hidden));
        if (!form.hidden) form.querySelector('input').focus();
      });
      const actions = [toggle];
      if (!self) {
        actions.push(el('button', { type: 'button',
          'aria-label': `${user.can_login ? 'Disable' : 'Enable'} ${user.username}`,
          onclick: () => this.change(user, { can_login: !user.can_login }, status) },
        user.can_login ? 'Disable' : 'Enable'));
        actions.push(el('button', { type: 'button', className: 'danger',
          'aria-label': `Delete ${user.username}`, onclick: () => this.remove(user, status) },
        'Delete'));
      }
      return el('tr', { role: 'row' },
        el('td', { role: 'cell', 'data-label': 'User' }, el('strong', {}, user.username),
          self ? el('span', { className: 'muted' }, ' (you)') : null),
        el('td', { role: 'cell', 'data-label': 'Log-in' },
          user.can_login ? 'may log in' : 'disabled'),
        el('td', { role: 'cell', 'data-label': 'Actions' },
          el('div', { className: 'actions' }, actions), form, status));
    }));
  }
}
