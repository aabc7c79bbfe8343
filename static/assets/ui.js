// Small DOM helpers shared by the views. Text always goes in as text nodes (never HTML), so
// nothing a user or a character card wrote can become markup.

import { describe, mediaUrl, user } from './api.js';

/// h('button.primary', { onclick, type: 'button' }, 'Send'): an element with classes from
/// the tag, attributes and properties, and children (strings, nodes, arrays, null).
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs instanceof Node || typeof attrs === 'string' || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className += (el.className ? ' ' : '') + value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== 'string') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// A labelled form field; `input` is an element made with h().
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const error = h('p.field-error', { id: `${id}-error`, role: 'alert' });
  input.setAttribute('aria-describedby', `${id}-error`);
  return h('div.field', h('label', { for: id }, label), input, hint ? h('p.hint', hint) : null, error);
}

/// Shows an API error on a form: field messages beside their inputs, the rest on top.
export function showFormError(form, error) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const fields = (error && error.fields) || {};
  let placed = false;
  for (const [name, message] of Object.entries(fields)) {
    const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      const slot = document.getElementById(`${input.id}-error`);
      if (slot) slot.textContent = message;
      placed = true;
    }
  }
  const banner = form.querySelector('.form-error');
  if (banner) banner.textContent = error ? (placed ? 'Please correct the fields marked below.' : describe(error)) : '';
}

/// Runs `action` with the button disabled and a busy label; errors go to `onError`.
export async function busy(button, label, action) {
  const before = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (label) button.textContent = label;
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    if (label) button.textContent = before;
  }
}

let toastRegion = null;

/// A short message at the bottom of the screen; `kind` is 'info' or 'error'.
export function toast(message, kind = 'info') {
  if (!toastRegion) {
    toastRegion = h('div.toasts', { role: 'status', 'aria-live': 'polite' });
    document.body.append(toastRegion);
  }
  const item = h(`div.toast.${kind}`, message);
  toastRegion.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 7000 : 4000);
}

export function toastError(error) {
  toast(describe(error), 'error');
}

export function spinner(label = 'Loading…') {
  return h('div.loading', { role: 'status' }, h('span.spinner', { 'aria-hidden': 'true' }), label);
}

export function empty(title, text, action) {
  return h('div.empty', h('p.empty-title', title), text ? h('p', text) : null, action || null);
}

export function errorBox(error, retry) {
  return h(
    'div.error-box',
    { role: 'alert' },
    h('p', describe(error)),
    retry ? h('button', { type: 'button', onclick: retry }, 'Try again') : null,
  );
}

const initialsColors = ['#8b5cf6', '#ec4899', '#f59e0b', '#10b981', '#3b82f6', '#ef4444'];

/// An avatar: the picture when there is one, else the name's initial on a colour. Signed
/// in, pictures are fetched with the token (a profile's picture and a private character's
/// are the owner's alone); signed out, only public ones exist to show.
export function avatar(url, name, size = 'md') {
  const letter = (name || '?').trim().charAt(0).toUpperCase() || '?';
  const color = initialsColors[[...(name || '')].reduce((n, c) => n + c.charCodeAt(0), 0) % initialsColors.length];
  const box = h(`span.avatar.${size}`, { 'aria-hidden': 'true' });
  box.style.setProperty('--avatar-color', color);
  box.textContent = letter;
  if (url) {
    const img = h('img', { alt: '', decoding: 'async' });
    img.addEventListener('load', () => {
      box.textContent = '';
      box.append(img);
      if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
    });
    if (user()) {
      mediaUrl(url)
        .then((local) => {
          img.src = local;
        })
        .catch(() => {});
    } else {
      img.src = url;
    }
  }
  return box;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export function ago(iso) {
  if (!iso) return '';
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const steps = [
    [60, 'second'],
    [3600, 'minute', 60],
    [86400, 'hour', 3600],
    [604800, 'day', 86400],
    [2629800, 'week', 604800],
    [31557600, 'month', 2629800],
    [Infinity, 'year', 31557600],
  ];
  for (const [limit, unit, divisor = 1] of steps) {
    if (Math.abs(seconds) < limit) return relative.format(Math.round(seconds / divisor), unit);
  }
  return '';
}

export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/// Stars for a rating out of 5, with the number for screen readers.
export function stars(rating, count) {
  const value = Number(rating) || 0;
  return h(
    'span.stars',
    { title: `${value.toFixed(1)} out of 5${count !== undefined ? ` from ${count} ratings` : ''}` },
    h('span.stars-fill', { 'aria-hidden': 'true' }, '★'.repeat(Math.round(value)) + '☆'.repeat(5 - Math.round(value))),
    h('span.sr-only', `${value.toFixed(1)} out of 5`),
  );
}

/// A modal dialog built on <dialog>; resolves with what `body(close)` passes to close.
export function dialog(title, body) {
  return new Promise((resolve) => {
    const el = h('dialog.modal', { 'aria-labelledby': 'dialog-title' });
    const close = (value) => {
      el.close();
      el.remove();
      resolve(value);
    };
    el.append(h('h2', { id: 'dialog-title' }, title), body(close));
    el.addEventListener('cancel', (event) => {
      event.preventDefault();
      close(null);
    });
    document.body.append(el);
    el.showModal();
  });
}

export function confirmDialog(title, text, action = 'Confirm', danger = false) {
  return dialog(title, (close) =>
    h(
      'div',
      h('p', text),
      h(
        'div.actions',
        h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'),
        h(`button.${danger ? 'danger' : 'primary'}`, { type: 'button', onclick: () => close(true) }, action),
      ),
    ),
  );
}

/// Saves a Blob as a download with `name`.
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
