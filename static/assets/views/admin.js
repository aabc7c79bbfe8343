// Administration (admins): the audit log, filtered by user and action, a page at a time.
// Users and character moderation lists come with the administration API (issue 9).

import { get, user } from '../api.js';
import { clear, dateTime, empty, errorBox, h, spinner } from '../ui.js';

const SIZE = 25;

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

export async function render(root) {
  if (user().role !== 'admin') {
    root.append(h('section.panel', h('h1', 'Administration'), h('p', 'This page is for administrators.')));
    return;
  }
  const action = h('input', { name: 'action', placeholder: 'e.g. auth.login', 'aria-label': 'Action' });
  const userId = h('input', { name: 'userId', placeholder: 'account id', 'aria-label': 'Account id', pattern: '[0-9a-fA-F-]{36}' });
  const results = h('div');
  const pager = h('div.pager');
  let page = 0;
  async function load() {
    clear(results, spinner('Loading the audit log…'));
    clear(pager);
    const params = new URLSearchParams({ page, size: SIZE });
    if (action.value.trim()) params.set('action', action.value.trim());
    if (userId.value.trim()) params.set('userId', userId.value.trim());
    try {
      const answer = await get(`/admin/audit-log?${params}`);
      clear(results, answer.content.length ? auditTable(answer.content) : empty('No entries', 'Nothing matches these filters.'));
      clear(
        pager,
        h('button', { type: 'button', disabled: page === 0, onclick: () => ((page -= 1), load()) }, '‹ Newer'),
        h('span', `Page ${page + 1} of ${Math.max(1, answer.totalPages)} · ${answer.totalElements} entries`),
        h('button', { type: 'button', disabled: page + 1 >= answer.totalPages, onclick: () => ((page += 1), load()) }, 'Older ›'),
      );
    } catch (error) {
      clear(results, errorBox(error, load));
    }
  }
  const filters = h('form.filters', action, userId, h('button.primary', { type: 'submit' }, 'Filter'));
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!filters.reportValidity()) return;
    page = 0;
    load();
  });
  root.append(h('h1', 'Administration'), h('section.panel', h('h2', 'Audit log'), filters, results, pager));
  load();
}
