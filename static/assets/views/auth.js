// Sign in, create an account, forgotten and new password, address confirmation, and the
// restore of an account waiting for deletion.

import { ApiError, describe, post, signIn, user } from '../api.js';
import { afterSignIn, navigate } from '../app.js';
import { busy, clear, dateTime, field, h, showFormError, toast } from '../ui.js';

function input(name, type, attrs = {}) {
  return h('input', { name, type, required: true, ...attrs });
}

function card(title, intro, form, footer) {
  return h('section.auth-card', h('h1', title), intro ? h('p.muted', intro) : null, form, footer ? h('p.auth-footer', footer) : null);
}

function form(fields, submitLabel, busyLabel, submit) {
  const button = h('button.primary.wide', { type: 'submit' }, submitLabel);
  const el = h('form.stack', { novalidate: true }, h('p.form-error', { role: 'alert' }), fields, button);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!el.reportValidity()) return;
    showFormError(el, null);
    const values = Object.fromEntries(new FormData(el).entries());
    try {
      await busy(button, busyLabel, () => submit(values, el));
    } catch (error) {
      showFormError(el, error);
    }
  });
  return el;
}

function login(root) {
  const el = form(
    [
      field('Email', input('email', 'email', { autocomplete: 'email' })),
      field('Password', input('password', 'password', { autocomplete: 'current-password' })),
    ],
    'Sign in',
    'Signing in…',
    async (values, formEl) => {
      try {
        await signIn('/auth/login', values);
        afterSignIn();
      } catch (error) {
        if (error instanceof ApiError && error.code === 'ACCOUNT_PENDING_DELETION') {
          const when = error.details.scheduledFor ? ` on ${dateTime(error.details.scheduledFor)}` : '';
          const banner = formEl.querySelector('.form-error');
          clear(
            banner,
            `This account is closed and will be erased${when}. `,
            h('a', { href: '#/restore' }, 'Restore it'),
            ' to use it again.',
          );
          return;
        }
        throw error;
      }
    },
  );
  root.append(
    card('Welcome back', 'Sign in to continue your conversations.', el, [
      h('a', { href: '#/forgot-password' }, 'Forgotten password?'),
      ' · New here? ',
      h('a', { href: '#/register' }, 'Create an account'),
    ]),
  );
  el.querySelector('input').focus();
}

function register(root) {
  const el = form(
    [
      field('Display name', input('displayName', 'text', { autocomplete: 'nickname', maxlength: 50 })),
      field('Email', input('email', 'email', { autocomplete: 'email' })),
      field(
        'Password',
        input('password', 'password', { autocomplete: 'new-password', minlength: 8, maxlength: 128 }),
        'At least 8 characters. A long phrase is easiest to remember.',
      ),
    ],
    'Create account',
    'Creating…',
    async (values) => {
      await signIn('/auth/register', values);
      toast('Welcome! We sent you an email to confirm your address.');
      afterSignIn();
    },
  );
  root.append(
    card('Create your account', 'Meet characters and talk with them — your words stay yours.', el, [
      'Already have an account? ',
      h('a', { href: '#/login' }, 'Sign in'),
    ]),
  );
  el.querySelector('input').focus();
}

function forgot(root) {
  const done = h('p.notice', { role: 'status' });
  const el = form(
    [field('Email', input('email', 'email', { autocomplete: 'email' }))],
    'Send a reset link',
    'Sending…',
    async (values) => {
      const answer = await post('/auth/forgot-password', values, { auth: false });
      done.textContent = answer && answer.message ? answer.message : 'If the address has an account, a link is on its way.';
    },
  );
  root.append(card('Forgotten password', 'We will email you a link to choose a new one.', h('div', el, done), [h('a', { href: '#/login' }, 'Back to sign in')]));
}

function reset(root, query) {
  const el = form(
    [field('New password', input('password', 'password', { autocomplete: 'new-password', minlength: 8, maxlength: 128 }))],
    'Set the new password',
    'Saving…',
    async (values) => {
      await post('/auth/reset-password', { token: query.get('token') || '', password: values.password }, { auth: false });
      toast('Your password is changed. Sign in with it.');
      navigate('/login');
    },
  );
  root.append(card('Choose a new password', 'Every signed-in device will be signed out.', el));
}

async function verify(root, query) {
  const box = h('section.auth-card', h('h1', 'Confirming your address…'));
  root.append(box);
  try {
    await post('/auth/verify-email', { token: query.get('token') || '' }, { auth: false });
    clear(box, h('h1', 'Address confirmed'), h('p', 'Thank you.'), h('a.button.primary', { href: user() ? '#/' : '#/login' }, 'Continue'));
  } catch (error) {
    clear(box, h('h1', 'This link did not work'), h('p', describe(error)), h('a.button', { href: '#/' }, 'Home'));
  }
}

function restore(root) {
  const el = form(
    [
      field('Email', input('email', 'email', { autocomplete: 'email' })),
      field('Password', input('password', 'password', { autocomplete: 'current-password' })),
    ],
    'Restore my account',
    'Restoring…',
    async (values) => {
      await signIn('/users/account/restore', values);
      toast('Your account is restored. Welcome back!');
      navigate('/profile');
    },
  );
  root.append(
    card(
      'Restore your account',
      'A closed account can be restored until its erasure begins. Sign in with it to cancel the deletion.',
      el,
      [h('a', { href: '#/login' }, 'Back to sign in')],
    ),
  );
}

export function render(root, { mode, query }) {
  root.classList.add('centered');
  ({ login, register, forgot, reset, verify, restore })[mode](root, query);
  return () => root.classList.remove('centered');
}
