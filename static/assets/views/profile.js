// Profile: who you are here, your plan and level, consents, password, your data (export)
// and the closing of the account.

import { del, describe, get, put, post, request, setUser, signOut, user } from '../api.js';
import { navigate } from '../app.js';
import { avatar, busy, bytes, clear, dateTime, download, field, h, showFormError, spinner, toast, toastError } from '../ui.js';
import { live } from '../socket.js';
import { uploadImage } from './editor.js';

function section(title, ...children) {
  return h('section.panel', h('h2', title), ...children);
}

function profileForm(me) {
  const preview = h('div.avatar-preview', avatar(me.avatarUrl, me.displayName, 'xl'));
  const file = h('input', { type: 'file', name: 'avatar', accept: 'image/png,image/jpeg,image/webp,image/gif' });
  file.addEventListener('change', () => {
    if (!file.files[0]) return;
    clear(preview, h('span.avatar.xl', h('img', { src: URL.createObjectURL(file.files[0]), alt: 'Preview of your new picture' })));
  });
  const name = h('input', { name: 'displayName', value: me.displayName, required: true, maxlength: 50, autocomplete: 'nickname' });
  const bio = h('textarea', { name: 'bio', rows: 3, maxlength: 500 });
  bio.value = me.bio || '';
  const save = h('button.primary', { type: 'submit' }, 'Save profile');
  const form = h(
    'form.stack',
    { novalidate: true },
    h('p.form-error', { role: 'alert' }),
    h('div.editor-avatar', preview, field('Picture', file, 'PNG, JPEG, WebP or GIF, up to 10 MiB. Only you see it.')),
    field('Display name', name),
    field('About you', bio, 'Characters can call you by your name; the rest is for you.'),
    h('div.actions', save),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    showFormError(form, null);
    try {
      await busy(save, 'Saving…', async () => {
        const body = { displayName: name.value.trim(), bio: bio.value };
        if (file.files[0]) body.avatarMediaId = (await uploadImage(file.files[0])).id;
        setUser(await put('/users/profile', body));
        toast('Profile saved.');
      });
    } catch (error) {
      showFormError(form, error);
    }
  });
  return form;
}

function levelBar(me) {
  const start = me.levelStartsAt ?? 0;
  const next = me.nextLevelAt || 0;
  const span = Math.max(1, next - start);
  const done = Math.min(span, Math.max(0, me.experience - start));
  return h(
    'div.level',
    h('p', h('strong', `Level ${me.level}`), ` · ${me.experience} experience`, next ? ` · next level at ${next}` : ''),
    h('progress', { max: span, value: done, 'aria-label': `Progress to level ${me.level + 1}` }),
  );
}

const STATUS = {
  active: '',
  trialing: ' · trial',
  past_due: ' · payment due',
  canceled: ' · cancelled',
  expired: ' · expired',
};

/// The plan, and this month's use of it (tokens against the quota, replies, storage).
function plan(me) {
  const sub = me.subscription || {};
  const usage = h('div.usage', spinner('Loading this month’s use…'));
  get('/billing/subscription')
    .then((now) => {
      const quota = now.plan.monthlyTokens;
      const used = now.usage.tokens;
      clear(
        usage,
        h('p', `Tokens this month: ${used.toLocaleString()}`, quota ? ` of ${quota.toLocaleString()}` : ' (unlimited)'),
        quota ? h('progress', { max: quota, value: Math.min(quota, used), 'aria-label': 'Tokens used this month' }) : null,
        h(
          'p.muted.small',
          `${now.usage.requests} replies this month · storage ${bytes(now.usage.storageBytes)}`,
          now.plan.storageBytes ? ` of ${bytes(now.plan.storageBytes)}` : '',
          ` · renews ${dateTime(now.period.resetsAt)}`,
        ),
      );
    })
    .catch((error) => clear(usage, h('p', describe(error))));
  return h(
    'div',
    h(
      'p',
      'Plan: ',
      h('strong.tier', sub.tier || 'free'),
      STATUS[sub.status] || '',
      sub.validUntil ? ` · until ${dateTime(sub.validUntil)}` : '',
    ),
    usage,
    h('p.muted.small', `Member since ${dateTime(me.createdAt)}`, me.emailVerified === false ? ' · your address is not confirmed yet' : ''),
  );
}

async function consents() {
  const box = h('div');
  const labels = {
    marketing: ['News and offers by email', 'We write rarely, and never share your address.'],
    analytics: ['Usage statistics', 'Counts of how features are used, to improve them.'],
    tracking: ['Personalised recommendations', 'Suggestions based on the characters you talk with.'],
  };
  let state;
  try {
    state = await get('/users/consents');
  } catch (error) {
    box.append(h('p', describe(error)));
    return box;
  }
  for (const [purpose, [label, hint]] of Object.entries(labels)) {
    const input = h('input', { type: 'checkbox', name: purpose, checked: Boolean(state[purpose]) });
    input.addEventListener('change', async () => {
      input.disabled = true;
      try {
        state = await put('/users/consents', { [purpose]: input.checked });
        toast('Your choice is saved.');
      } catch (error) {
        input.checked = !input.checked;
        toastError(error);
      } finally {
        input.disabled = false;
      }
    });
    const id = `consent-${purpose}`;
    input.id = id;
    box.append(h('div.check', input, h('label', { for: id }, h('span', label), h('span.hint', hint))));
  }
  return box;
}

function passwordForm() {
  const save = h('button', { type: 'submit' }, 'Change password');
  const form = h(
    'form.stack',
    { novalidate: true },
    h('p.form-error', { role: 'alert' }),
    field('Current password', h('input', { type: 'password', name: 'currentPassword', required: true, autocomplete: 'current-password' })),
    field('New password', h('input', { type: 'password', name: 'newPassword', required: true, minlength: 8, maxlength: 128, autocomplete: 'new-password' }), 'At least 8 characters. Your other devices will be signed out.'),
    h('div.actions', save),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    showFormError(form, null);
    try {
      await busy(save, 'Changing…', () => put('/users/password', Object.fromEntries(new FormData(form).entries())));
      form.reset();
      toast('Password changed. Other devices are signed out.');
    } catch (error) {
      showFormError(form, error);
    }
  });
  return form;
}

const exportStates = {
  queued: 'Waiting to start…',
  running: 'Being written…',
  ready: 'Ready',
  failed: 'Failed — you can ask again',
  expired: 'Expired',
};

function exports() {
  const list = h('ul.exports');
  const ask = h('button.primary', { type: 'button' }, 'Request an archive');
  const note = h('p.muted.small', { role: 'status' });
  let timer = null;
  const fetchArchive = async (job, button) => {
    try {
      await busy(button, 'Downloading…', async () => {
        const response = await request('GET', `/users/data-export/${job.jobId}/download`, { raw: true });
        download(await response.blob(), `companion-export-${job.jobId}.zip`);
      });
    } catch (error) {
      toastError(error);
    }
  };
  const draw = (jobs) => {
    clear(
      list,
      jobs.map((job) => {
        const button = h('button', { type: 'button' }, 'Download');
        button.addEventListener('click', () => fetchArchive(job, button));
        return h(
          'li.export',
          { dataset: { status: job.status } },
          h('span', `Asked ${dateTime(job.createdAt)}`),
          h('span.export-status', exportStates[job.status] || job.status),
          job.status === 'ready' ? h('span.muted.small', `${bytes(job.size)}, until ${dateTime(job.expiresAt)}`) : null,
          job.status === 'ready' ? button : null,
        );
      }),
    );
  };
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const { content } = await get('/users/data-exports');
      draw(content);
      if (content.some((job) => job.status === 'queued' || job.status === 'running')) timer = setTimeout(refresh, 1500);
    } catch (error) {
      note.textContent = describe(error);
    }
  };
  ask.addEventListener('click', async () => {
    try {
      await busy(ask, 'Requesting…', () => post('/users/data-export'));
      note.textContent = 'We are preparing your archive. It appears below when ready, and we email you too.';
      refresh();
    } catch (error) {
      note.textContent = describe(error);
    }
  });
  const json = h('button', { type: 'button' }, 'Download as JSON now');
  json.addEventListener('click', async () => {
    try {
      await busy(json, 'Preparing…', async () => {
        const response = await request('GET', '/users/data-export?format=json', { raw: true });
        download(await response.blob(), 'companion-export.json');
      });
    } catch (error) {
      note.textContent = describe(error);
    }
  });
  refresh();
  return {
    el: h(
      'div',
      h('p', 'Get a copy of everything we keep about you: profile, conversations with every version of every reply, characters, pictures and your security history. Archives are kept for 7 days; you can ask for one a day.'),
      h('div.actions', ask, json),
      note,
      list,
    ),
    stop: () => clearTimeout(timer),
  };
}

/// The installation's grace period before an erasure (the server writes it into the page).
function graceDays() {
  const meta = document.querySelector('meta[name="companion:deletion-grace-days"]');
  const days = meta ? Number(meta.content) : NaN;
  return Number.isFinite(days) ? days : 30;
}

function closeAccount() {
  const days = graceDays();
  const confirmBox = h('input', { type: 'checkbox', name: 'understood', required: true, id: 'close-understood' });
  const password = h('input', { type: 'password', name: 'password', required: true, autocomplete: 'current-password' });
  const button = h('button.danger', { type: 'submit' }, 'Delete my account');
  const form = h(
    'form.stack',
    { novalidate: true },
    h(
      'p',
      days > 0
        ? `Your account closes at once: you are signed out everywhere and your characters leave the catalog. Everything is erased for good after a grace period of ${days} day${days === 1 ? '' : 's'}. Until then you can restore the account from the restore page, with your email and password.`
        : 'Your account closes at once and everything is erased for good right away. This cannot be undone.',
    ),
    h('p.form-error', { role: 'alert' }),
    field('Password', password),
    h('div.check', confirmBox, h('label', { for: 'close-understood' }, 'I understand that my data will be erased after the grace period.')),
    h('div.actions', button),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    showFormError(form, null);
    // Closing the account ends every session, this page's connection included: stop it
    // first, so it does not try to come back.
    live.stop();
    try {
      const answer = await busy(button, 'Deleting…', () => del('/users/account', { password: password.value }));
      await signOut(false);
      toast(`Your account is closed. It will be erased on ${dateTime(answer.scheduledFor)}.`);
      navigate('/login');
    } catch (error) {
      live.start();
      showFormError(form, error);
    }
  });
  return form;
}

export async function render(root) {
  let me;
  try {
    me = await get('/users/profile');
    setUser(me);
  } catch (error) {
    me = user();
    toastError(error);
  }
  const exportBox = exports();
  root.append(
    h('h1', 'Your profile'),
    h('div.profile-grid', section('About you', profileForm(me)), section('Plan and level', plan(me), levelBar(me))),
    section('Privacy choices', await consents()),
    section('Password', passwordForm()),
    section('Your data', exportBox.el),
    section('Delete your account', closeAccount()),
  );
  return () => exportBox.stop();
}
