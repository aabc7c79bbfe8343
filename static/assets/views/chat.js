// Chats: the conversation list and one conversation, with replies streamed over the live
// connection.
//
// What the person types is never lost: the draft is saved in localStorage as they type and
// stays there until the server has announced their message; if the server refuses it, the
// text comes back into the box. A message sent while the connection is down waits in the
// socket's outbox and goes when it is back.

import { del, get, patch, post } from '../api.js';
import { navigate } from '../app.js';
import { live } from '../socket.js';
import { ago, avatar, clear, confirmDialog, dialog, empty, errorBox, field, h, spinner, toast, toastError } from '../ui.js';

const PAGE = 50;
const draftKey = (id) => `companion.draft.${id}`;

// ---- the list

function conversationItem(summary, activeId, onChange) {
  const character = summary.character || {};
  const rename = async () => {
    const title = await dialog('Rename conversation', (close) => {
      const input = h('input', { name: 'title', value: summary.title || '', maxlength: 200, required: true });
      const form = h(
        'form.stack',
        field('Title', input),
        h('div.actions', h('button', { type: 'button', onclick: () => close(null) }, 'Cancel'), h('button.primary', { type: 'submit' }, 'Save')),
      );
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        close(input.value.trim() || null);
      });
      setTimeout(() => input.select(), 0);
      return form;
    });
    if (!title) return;
    try {
      await patch(`/conversations/${summary.id}`, { title });
      onChange();
    } catch (error) {
      toastError(error);
    }
  };
  const remove = async () => {
    if (!(await confirmDialog('Delete this conversation?', `“${summary.title}” and all its messages will be deleted for good.`, 'Delete', true))) return;
    try {
      await del(`/conversations/${summary.id}`);
      localStorage.removeItem(draftKey(summary.id));
      toast('Conversation deleted.');
      if (summary.id === activeId) navigate('/chats');
      else onChange();
    } catch (error) {
      toastError(error);
    }
  };
  return h(
    'li.conversation-item',
    { class: summary.id === activeId ? 'active' : '' },
    h(
      'a.conversation-link',
      { href: `#/chats/${summary.id}`, 'aria-current': summary.id === activeId ? 'page' : false },
      avatar(character.avatarUrl, character.name, 'md'),
      h(
        'span.conversation-text',
        h('span.conversation-title', summary.pinned ? h('span.pin', { title: 'Pinned' }, '★ ') : '', summary.title || character.name),
        h('span.conversation-preview', summary.lastMessagePreview || ''),
        h('span.conversation-time', h('time', { datetime: summary.lastMessageAt || summary.createdAt }, ago(summary.lastMessageAt || summary.createdAt))),
      ),
    ),
    h(
      'span.conversation-actions',
      h('button.icon', { type: 'button', title: 'Rename', 'aria-label': `Rename ${summary.title}`, onclick: rename }, '✎'),
      h('button.icon', { type: 'button', title: 'Delete', 'aria-label': `Delete ${summary.title}`, onclick: remove }, '✕'),
    ),
  );
}

function conversationList(activeId) {
  const list = h('ol.conversation-items');
  const status = h('div.list-status');
  const box = h('aside.conversation-list', { 'aria-label': 'Conversations' }, h('h2.list-title', 'Chats'), list, status);
  let page = 0;
  let totalPages = 1;
  async function load(reset) {
    if (reset) {
      page = 0;
      totalPages = 1;
    }
    if (page >= totalPages) return;
    clear(status, spinner());
    try {
      const answer = await get(`/conversations?page=${page}&size=30`);
      if (reset) clear(list);
      totalPages = answer.totalPages;
      page += 1;
      for (const summary of answer.content) list.append(conversationItem(summary, activeId, () => load(true)));
      clear(status);
      if (answer.totalElements === 0) {
        status.append(empty('No conversations yet', 'Pick a character to start talking.', h('a.button.primary', { href: '#/' }, 'Discover characters')));
      } else if (page < totalPages) {
        status.append(h('button.ghost', { type: 'button', onclick: () => load(false) }, 'Older conversations'));
      }
    } catch (error) {
      clear(status, errorBox(error, () => load(reset)));
    }
  }
  load(true);
  return { el: box, reload: () => load(true) };
}

// ---- one conversation

function statusNote(message) {
  switch (message.status) {
    case 'stopped':
      return 'Stopped';
    case 'interrupted':
      return 'Interrupted — regenerate to try again';
    case 'failed':
      return message.failure ? `Failed: ${message.failure.message}` : 'Failed';
    default:
      return null;
  }
}

class Conversation {
  constructor(id, onActivity) {
    this.id = id;
    this.onActivity = onActivity;
    this.messages = [];
    this.nodes = new Map();
    this.hasMore = false;
    this.before = null;
    this.loadingOlder = false;
    this.pending = null;
    this.unsubscribe = [];
  }

  get last() {
    return this.messages[this.messages.length - 1];
  }

  get streaming() {
    return this.messages.find((m) => m.status === 'streaming');
  }

  async mount(root) {
    const [conversation, page] = await Promise.all([get(`/conversations/${this.id}`), get(`/conversations/${this.id}/messages?limit=${PAGE}`)]);
    this.conversation = conversation;
    this.build(root);
    this.setPage(page);
    this.scrollToEnd();
    this.unsubscribe.push(live.on('message', (frame) => this.onMessage(frame.message)));
    this.unsubscribe.push(live.on('token', (frame) => this.onToken(frame)));
    this.unsubscribe.push(live.on('error', (frame) => this.onError(frame)));
    this.unsubscribe.push(live.on('state', () => this.updateComposer()));
    const streaming = this.streaming;
    if (streaming) live.follow(streaming.id, streaming.seq || 0);
    this.input.focus();
  }

  unmount() {
    for (const off of this.unsubscribe) off();
    if (this.observer) this.observer.disconnect();
  }

  build(root) {
    const c = this.conversation;
    const character = c.character || { id: c.characterId, name: c.characterName, avatarUrl: c.characterAvatarUrl };
    this.title = h('h1.conversation-heading', c.title || character.name);
    this.list = h('ol.messages', { 'aria-label': 'Messages' });
    this.topStatus = h('div.history-status');
    this.sentinel = h('div.sentinel', { 'aria-hidden': 'true' });
    this.scroller = h('div.messages-scroll', this.sentinel, this.topStatus, this.list);
    this.input = h('textarea', {
      name: 'content',
      rows: 1,
      maxlength: 32768,
      placeholder: `Message ${character.name || ''}`.trim(),
      'aria-label': 'Your message',
    });
    this.input.value = localStorage.getItem(draftKey(this.id)) || '';
    this.input.addEventListener('input', () => {
      this.autosize();
      if (this.input.value) localStorage.setItem(draftKey(this.id), this.input.value);
      else if (!this.pending) localStorage.removeItem(draftKey(this.id));
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    this.sendButton = h('button.primary', { type: 'submit' }, 'Send');
    this.stopButton = h('button.danger', { type: 'button', onclick: () => this.stop(), hidden: true }, 'Stop');
    this.notice = h('p.composer-notice', { role: 'status' });
    const composer = h('form.composer', this.notice, h('div.composer-row', this.input, this.stopButton, this.sendButton));
    composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    const head = h(
      'header.conversation-head',
      h('a.back', { href: '#/chats', 'aria-label': 'All chats' }, '‹'),
      h('a.conversation-character', { href: `#/characters/${character.id}` }, avatar(character.avatarUrl, character.name, 'md')),
      h('div.head-text', this.title, h('p.muted.small', 'with ', character.name)),
    );
    root.append(head, this.scroller, composer);
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: this.scroller, rootMargin: '200px' });
    this.observer.observe(this.sentinel);
    this.autosize();
    this.updateComposer();
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
  }

  setPage(page) {
    this.messages = page.messages;
    this.hasMore = page.hasMore;
    this.before = page.before;
    this.nodes.clear();
    clear(this.list, this.messages.map((m) => this.node(m)));
    this.drawTop();
    this.updateComposer();
  }

  drawTop() {
    clear(this.topStatus, this.hasMore ? null : h('p.muted.small.center', 'The beginning of your conversation'));
  }

  async loadOlder() {
    if (!this.hasMore || this.loadingOlder) return;
    this.loadingOlder = true;
    clear(this.topStatus, spinner('Loading earlier messages…'));
    try {
      const page = await get(`/conversations/${this.id}/messages?limit=${PAGE}&before=${encodeURIComponent(this.before)}`);
      const height = this.scroller.scrollHeight;
      const top = this.scroller.scrollTop;
      this.messages = [...page.messages, ...this.messages];
      this.hasMore = page.hasMore;
      this.before = page.before;
      this.list.prepend(...page.messages.map((m) => this.node(m)));
      // Keep what the person was reading where it was.
      this.scroller.scrollTop = top + (this.scroller.scrollHeight - height);
      this.drawTop();
    } catch (error) {
      clear(this.topStatus, errorBox(error, () => this.loadOlder()));
    } finally {
      this.loadingOlder = false;
    }
  }

  nearEnd() {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 120;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  node(message) {
    const content = h('div.message-content', message.content);
    const note = h('p.message-note');
    const meta = h('div.message-meta');
    const el = h('li.message', { class: message.role, dataset: { id: message.id } }, h('div.bubble', content, note), meta);
    const entry = { el, content, note, meta };
    this.nodes.set(message.id, entry);
    this.decorate(message, entry);
    return el;
  }

  decorate(message, entry) {
    entry.el.classList.toggle('streaming', message.status === 'streaming');
    entry.el.dataset.status = message.status;
    const note = statusNote(message);
    entry.note.textContent = note || '';
    entry.note.hidden = !note;
    const isLast = message === this.last;
    const busy = Boolean(this.streaming);
    const parts = [];
    if (message.siblingCount > 1) {
      parts.push(
        h(
          'span.swipes',
          h('button.icon', { type: 'button', 'aria-label': 'Previous version', disabled: busy || message.siblingIndex === 0, onclick: () => this.swipe(message, -1) }, '‹'),
          h('span.swipe-count', { 'aria-label': `Version ${message.siblingIndex + 1} of ${message.siblingCount}` }, `${message.siblingIndex + 1}/${message.siblingCount}`),
          h('button.icon', { type: 'button', 'aria-label': 'Next version', disabled: busy || message.siblingIndex >= message.siblingCount - 1, onclick: () => this.swipe(message, 1) }, '›'),
        ),
      );
    }
    if (message.role === 'assistant' && isLast && !busy) {
      parts.push(h('button.link', { type: 'button', onclick: () => this.regenerate(message) }, 'Regenerate'));
    }
    if (message.role === 'user' && !busy) {
      parts.push(h('button.link', { type: 'button', onclick: () => this.edit(message, entry) }, 'Edit'));
    }
    if (message.role === 'assistant' && message.model) parts.push(h('span.model', { title: 'Who wrote this reply' }, message.model));
    parts.push(h('time.message-time', { datetime: message.timestamp, title: new Date(message.timestamp).toLocaleString() }, ago(message.timestamp)));
    clear(entry.meta, parts);
  }

  redecorate() {
    for (const message of this.messages) {
      const entry = this.nodes.get(message.id);
      if (entry) this.decorate(message, entry);
    }
    this.updateComposer();
  }

  updateComposer() {
    if (!this.sendButton) return;
    const streaming = this.streaming;
    this.stopButton.hidden = !streaming;
    this.sendButton.hidden = Boolean(streaming);
    const offline = live.state !== 'open';
    if (this.pending && offline) this.notice.textContent = 'Reconnecting… your message will be sent when the connection is back.';
    else if (offline && live.state !== 'connecting') this.notice.textContent = 'Reconnecting…';
    else if (streaming) this.notice.textContent = `${this.conversation.character?.name || this.conversation.characterName || 'The character'} is writing…`;
    else this.notice.textContent = '';
  }

  // ---- live frames

  onMessage(message) {
    if (message.conversationId !== this.id) return;
    this.onActivity();
    const stick = this.nearEnd();
    const index = this.messages.findIndex((m) => m.id === message.id);
    if (index >= 0) {
      this.messages[index] = message;
      this.nodes.get(message.id).content.textContent = message.content;
    } else {
      this.place(message);
    }
    if (message.role === 'user' && this.pending && message.content === this.pending.content) {
      this.pending = null;
      if (!this.input.value) localStorage.removeItem(draftKey(this.id));
    }
    this.redecorate();
    if (stick) this.scrollToEnd();
  }

  /// A message not on the page: after the last one (a new turn), beside one (a regenerated
  /// reply, an edit: the branch moves to it), or elsewhere (history reloads).
  place(message) {
    const last = this.last;
    if (!last ? !message.parentId || !this.hasMore : message.parentId === last.id) {
      this.messages.push(message);
      this.list.append(this.node(message));
      return;
    }
    const sibling = this.messages.findIndex((m) => m.parentId === message.parentId);
    if (sibling >= 0) {
      for (const gone of this.messages.splice(sibling)) {
        this.nodes.get(gone.id)?.el.remove();
        this.nodes.delete(gone.id);
      }
      this.messages.push(message);
      this.list.append(this.node(message));
      return;
    }
    this.reload();
  }

  async reload() {
    try {
      this.setPage(await get(`/conversations/${this.id}/messages?limit=${PAGE}`));
      this.scrollToEnd();
    } catch (error) {
      toastError(error);
    }
  }

  onToken(frame) {
    if (frame.conversationId !== this.id) return;
    const message = this.messages.find((m) => m.id === frame.messageId);
    if (!message) return;
    const stick = this.nearEnd();
    message.content += frame.delta;
    message.seq = frame.seq;
    this.nodes.get(message.id).content.textContent = message.content;
    if (stick) this.scrollToEnd();
  }

  onError(frame) {
    if (!frame.ref || !frame.ref.startsWith(`send:${this.id}:`)) return;
    if (this.pending && frame.ref === this.pending.ref) {
      if (!this.input.value) {
        this.input.value = this.pending.content;
        this.autosize();
      }
      this.pending = null;
    }
    toast(frame.message, 'error');
    this.updateComposer();
  }

  // ---- actions

  send() {
    const content = this.input.value.trim();
    if (!content) return;
    if (this.streaming) {
      toast('Wait for the reply to finish, or stop it.', 'error');
      return;
    }
    const ref = `send:${this.id}:${crypto.randomUUID()}`;
    this.pending = { ref, content };
    localStorage.setItem(draftKey(this.id), content);
    this.input.value = '';
    this.autosize();
    live.send({ type: 'message', conversationId: this.id, content, ref });
    this.updateComposer();
  }

  stop() {
    const streaming = this.streaming;
    live.send({ type: 'stop', conversationId: this.id, ...(streaming ? { messageId: streaming.id } : {}) });
  }

  /// Asks over HTTP; the reply streams in over the live connection like any other. The
  /// answer (at the reply's end) is applied too, in case the connection was down.
  async run(path, body) {
    try {
      const answer = await post(`/conversations/${this.id}/messages/${path}`, body);
      if (answer && answer.userMessage) this.onMessage(answer.userMessage);
      if (answer && answer.reply) this.onMessage(answer.reply);
    } catch (error) {
      toastError(error);
    }
  }

  regenerate(message) {
    this.run(`${message.id}/regenerate`);
  }

  async swipe(message, step) {
    try {
      const { messages } = await get(`/conversations/${this.id}/messages/${message.id}/siblings`);
      const index = messages.findIndex((m) => m.id === message.id);
      const target = messages[index + step];
      if (!target) return;
      await post(`/conversations/${this.id}/messages/${target.id}/select`);
      await this.reload();
    } catch (error) {
      toastError(error);
    }
  }

  edit(message, entry) {
    const box = h('textarea.edit-box', { 'aria-label': 'Edit your message', maxlength: 32768, rows: 3 });
    box.value = message.content;
    const form = h(
      'form.edit-form',
      box,
      h('div.actions', h('button', { type: 'button', onclick: () => cancel() }, 'Cancel'), h('button.primary', { type: 'submit' }, 'Save and resend')),
    );
    const cancel = () => {
      form.replaceWith(entry.content);
      this.decorate(message, entry);
    };
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const content = box.value.trim();
      if (!content || content === message.content) {
        cancel();
        return;
      }
      cancel();
      this.run(`${message.id}/edit`, { content });
    });
    entry.content.replaceWith(form);
    clear(entry.meta);
    box.focus();
  }
}

export async function render(root, { params: [id] }) {
  root.classList.add('chat-page');
  const list = conversationList(id);
  const pane = h('section.conversation', { class: id ? '' : 'placeholder' });
  const layout = h('div.chat-layout', { class: id ? 'has-conversation' : '' }, list.el, pane);
  root.append(layout);
  let conversation = null;
  if (!id) {
    pane.append(empty('Choose a conversation', 'Or start a new one from a character’s page.', h('a.button', { href: '#/' }, 'Discover characters')));
  } else {
    pane.append(spinner('Opening the conversation…'));
    // New messages refresh the list's previews and order, at most every 1.5 s.
    let timer = null;
    conversation = new Conversation(id, () => {
      clearTimeout(timer);
      timer = setTimeout(() => list.reload(), 1500);
    });
    try {
      clear(pane);
      await conversation.mount(pane);
    } catch (error) {
      clear(pane, errorBox(error), h('p', h('a', { href: '#/chats' }, 'All conversations')));
      conversation = null;
    }
  }
  return () => {
    root.classList.remove('chat-page');
    if (conversation) conversation.unmount();
  };
}

