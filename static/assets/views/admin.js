// Administration. Admins: the numbers that matter now, accounts (search; role, plan and
// access changed in place, each change confirmed and audited by the server), characters
// hidden by moderation, and the audit log. Moderators: character moderation only.

import { get, patch, user } from '../api.js';
import { busy, clear, confirmDialog, dateTime, dialog, empty, errorBox, h, spinner, toast, toastError } from '../ui.js';

const SIZE = 25;

/// A pager: ‹ prev · "Page n of m · k label" · next ›.
function pager(box, page, answer, label, go) {
  clear(
    box,
    h('button', { type: 'button', disabled: page === 0, onclick: () => go(page - 1) }, '‹ Previous'),
    h('span', `Page ${page + 1} of ${Math.max(1, answer.totalPages)} · ${answer.totalElements} ${label}`),
    h('button', { type: 'button', disabled: page + 1 >= answer.totalPages, onclick: () => go(page + 1) }, 'Next ›'),
  );
}

/// A search form that calls `onSearch()` on submit.
function searchForm(inputs, label, onSearch) {
  const form = h('form.filters', inputs, h('button.primary', { type: 'submit' }, label));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (form.reportValidity()) onSearch();
  });
  return form;
}

function stat(label, value) {
  return h('div.stat', h('strong', String(value)), h('span', label));
}

async function statsPanel() {
  const box = h('div.stats', spinner('Counting…'));
  try {
    const s = await get('/admin/stats');
    clear(
      box,
      stat('accounts', s.users.total),
      stat('active in 24 h', s.users.active24h),
      stat('premium', s.users.byTier.premium),
      stat('enterprise', s.users.byTier.enterprise),
      stat('messages today', s.messagesToday),
      stat('failed replies today', s.failedRepliesToday),
      stat('jobs waiting', s.jobs.queued),
      stat('dead jobs', s.jobs.dead),
    );
  } catch (error) {
    clear(box, errorBox(error));
  }
  return h('section.panel', h('h2', 'Now'), box);
}

/// One account's row: role, plan and access can be changed in place.
function userRow(account, reload) {
  const me = user();
  const self = account.id === me.id;
  const change = async (control, body, question) => {
    if (!(await confirmDialog('Change this account?', question, 'Change'))) {
      reload();
      return;
    }
    await busy(control, 'Saving…', async () => {
      try {
        await patch(`/admin/users/${account.id}`, body);
        toast(`${account.email} updated.`);
      } catch (error) {
        toastError(error);
      }
      reload();
    });
  };
  const role = h(
    'select',
    { 'aria-label': `Role of ${account.email}`, disabled: self },
    ['user', 'moderator', 'admin'].map((r) => h('option', { value: r, selected: r === account.role }, r)),
  );
  role.addEventListener('change', () =>
    change(role, { role: role.value }, `Make ${account.email} ${role.value}? Their sessions end and they sign in again.`),
  );
  const tier = h(
    'select',
    { 'aria-label': `Plan of ${account.email}` },
    ['free', 'premium', 'enterprise'].map((t) => h('option', { value: t, selected: t === account.tier }, t)),
  );
  tier.addEventListener('change', () => change(tier, { tier: tier.value }, `Put ${account.email} on the ${tier.value} plan?`));
  const disabled = account.status === 'disabled';
  const access = h(
    `button.${disabled ? 'primary' : 'danger'}`,
    { type: 'button', disabled: self || account.status === 'pending_deletion' },
    disabled ? 'Enable' : 'Disable',
  );
  access.addEventListener('click', () =>
    change(
      access,
      { disabled: !disabled },
      disabled
        ? `Let ${account.email} sign in again?`
        : `Disable ${account.email}? They are signed out everywhere at once and cannot sign in.`,
    ),
  );
  return h(
    'tr',
    { dataset: { status: account.status } },
    h('td', h('div', account.displayName), h('div.muted.small', account.email)),
    h('td', role),
    h('td', tier, account.subscription.validUntil ? h('div.muted.small', `until ${dateTime(account.subscription.validUntil)}`) : null),
    h('td', account.status.replace('_', ' ')),
    h('td', h('time', { datetime: account.createdAt }, dateTime(account.createdAt))),
    h('td', account.lastLoginAt ? h('time', { datetime: account.lastLoginAt }, dateTime(account.lastLoginAt)) : 'never'),
    h('td', access),
  );
}

function usersPanel() {
  const search = h('input', { type: 'search', name: 'search', placeholder: 'email or name', 'aria-label': 'Search accounts', maxlength: 200 });
  const results = h('div');
  const pages = h('div.pager');
  let page = 0;
  async function load() {
    clear(results, spinner('Loading accounts…'));
    clear(pages);
    const params = new URLSearchParams({ page, size: SIZE });
    if (search.value.trim()) params.set('search', search.value.trim());
    try {
      const answer = await get(`/admin/users?${params}`);
      clear(
        results,
        answer.content.length
          ? h(
              'div.table-wrap',
              h(
                'table.accounts',
                h('caption.sr-only', 'Accounts'),
                h('thead', h('tr', ['Account', 'Role', 'Plan', 'Status', 'Created', 'Last login', 'Access'].map((t) => h('th', { scope: 'col' }, t)))),
                h('tbody', answer.content.map((account) => userRow(account, load))),
              ),
            )
          : empty('No accounts', 'Nobody matches this search.'),
      );
      pager(pages, page, answer, 'accounts', (next) => ((page = next), load()));
    } catch (error) {
      clear(results, errorBox(error, load));
    }
  }
  load();
  return h('section.panel', h('h2', 'Accounts'), searchForm(search, 'Search', () => ((page = 0), load())), results, pages);
}

/// Asks why a character is hidden (kept with it, shown to staff); null when cancelled.
function hideReason(name) {
  return dialog(`Hide ${name}?`, (close) => {
    const reason = h('textarea', { name: 'reason', maxlength: 1000, rows: 3 });
    const form = h(
      'form',
      h('label', 'Why (staff see this)', reason),
      h(
        'div.actions',
        h('button', { type: 'button', onclick: () => close(null) }, 'Cancel'),
        h('button.danger', { type: 'submit' }, 'Hide'),
      ),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      close(reason.value);
    });
    return form;
  });
}

function charactersPanel() {
  const which = h(
    'select',
    { name: 'hidden', 'aria-label': 'Which characters' },
    h('option', { value: 'true' }, 'Hidden'),
    h('option', { value: 'false' }, 'Visible'),
  );
  const search = h('input', { type: 'search', name: 'search', placeholder: 'name', 'aria-label': 'Search characters', maxlength: 200 });
  const results = h('div');
  const pages = h('div.pager');
  let page = 0;
  const toggle = async (button, character) => {
    let reason;
    if (!character.hidden) {
      reason = await hideReason(character.name);
      if (reason === null) return;
    } else if (!(await confirmDialog('Show again?', `${character.name} becomes visible to everyone again.`, 'Show'))) {
      return;
    }
    await busy(button, 'Saving…', async () => {
      try {
        await patch(`/admin/characters/${character.id}`, character.hidden ? { hidden: false } : { hidden: true, reason: reason.trim() || null });
        toast(character.hidden ? `${character.name} is visible again.` : `${character.name} is hidden.`);
      } catch (error) {
        toastError(error);
      }
      load();
    });
  };
  async function load() {
    clear(results, spinner('Loading characters…'));
    clear(pages);
    const params = new URLSearchParams({ page, size: SIZE, hidden: which.value });
    if (search.value.trim()) params.set('search', search.value.trim());
    try {
      const answer = await get(`/admin/characters?${params}`);
      const rows = answer.content.map((character) => {
        const button = h(`button.${character.hidden ? 'primary' : 'danger'}`, { type: 'button' }, character.hidden ? 'Show again' : 'Hide');
        button.addEventListener('click', () => toggle(button, character));
        return h(
          'tr',
          h('td', h('a', { href: `#/characters/${character.id}` }, character.name)),
          h('td', character.visibility),
          h('td', character.hiddenAt ? dateTime(character.hiddenAt) : ''),
          h('td', character.hiddenReason || ''),
          h('td', button),
        );
      });
      clear(
        results,
        rows.length
          ? h(
              'div.table-wrap',
              h(
                'table.moderation',
                h('caption.sr-only', 'Characters'),
                h('thead', h('tr', ['Character', 'Visibility', 'Hidden', 'Reason', ''].map((t) => h('th', { scope: 'col' }, t)))),
                h('tbody', rows),
              ),
            )
          : empty(which.value === 'true' ? 'Nothing hidden' : 'No characters', 'Nothing matches.'),
      );
      pager(pages, page, answer, 'characters', (next) => ((page = next), load()));
    } catch (error) {
      clear(results, errorBox(error, load));
    }
  }
  which.addEventListener('change', () => ((page = 0), load()));
  load();
  return h('section.panel', h('h2', 'Character moderation'), searchForm([which, search], 'Search', () => ((page = 0), load())), results, pages);
}

function auditTable(rows) {
  return h(
    'div.table-wrap',
    h(
      'table.audit',
      h('caption.sr-only', 'Audit log entries'),
      h('thead', h('tr', ['When', 'Action', 'Outcome', 'Actor', 'Account', 'Resource', 'Address'].map((t) => h('th', { scope: 'col' }, t)))),
      h(
        'tbody',
        rows.map((row) =>
          h(
            'tr',
            { dataset: { outcome: row.outcome } },
            h('td', h('time', { datetime: row.occurredAt }, dateTime(row.occurredAt))),
            h('td', h('code', row.action)),
            h('td', row.outcome),
            h('td.mono', row.actorId || 'system'),
            h('td.mono', row.userId || ''),
            h('td', [row.resourceType, row.resourceId].filter(Boolean).join(' ')),
            h('td', row.ip || ''),
          ),
        ),
      ),
    ),
  );
}

function auditPanel() {
  const action = h('input', { name: 'action', placeholder: 'e.g. auth.login', 'aria-label': 'Action' });
  const userId = h('input', { name: 'userId', placeholder: 'account id', 'aria-label': 'Account id', pattern: '[0-9a-fA-F-]{36}' });
  const results = h('div');
  const pages = h('div.pager');
  let page = 0;
  async function load() {
    clear(results, spinner('Loading the audit log…'));
    clear(pages);
    const params = new URLSearchParams({ page, size: SIZE });
    if (action.value.trim()) params.set('action', action.value.trim());
    if (userId.value.trim()) params.set('userId', userId.value.trim());
    try {
      const answer = await get(`/admin/audit-log?${params}`);
      clear(results, answer.content.length ? auditTable(answer.content) : empty('No entries', 'Nothing matches these filters.'));
      pager(pages, page, answer, 'entries', (next) => ((page = next), load()));
    } catch (error) {
      clear(results, errorBox(error, load));
    }
  }
  load();
  return h('section.panel', h('h2', 'Audit log'), searchForm([action, userId], 'Filter', () => ((page = 0), load())), results, pages);
}

export async function render(root) {
  const role = user().role;
  if (role === 'moderator') {
    root.append(h('h1', 'Moderation'), charactersPanel());
    return;
  }
  if (role !== 'admin') {
    root.append(h('section.panel', h('h1', 'Administration'), h('p', 'This page is for administrators and moderators.')));
    return;
  }
  root.append(h('h1', 'Administration'), await statsPanel(), usersPanel(), charactersPanel(), auditPanel());
}
