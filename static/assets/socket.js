// The live connection (WebSocket /api/v1/ws): frames in and out, reconnection, and resuming
// replies that were being written when the connection dropped.
//
// Every reply the page has seen announced is remembered with the last piece (`seq`) it
// received. After a reconnect each unfinished one is resumed from that piece, so no text is
// lost or shown twice; pieces at or below the remembered `seq` are dropped. A ping every
// 25 s notices a connection that died without closing (a laptop waking, a lost network).

import { refresh, sessionLost, token, user } from './api.js';

const PING_EVERY = 25_000;
const PONG_WITHIN = 10_000;

export class Live {
  constructor() {
    this.handlers = new Map();
    this.replies = new Map(); // messageId -> last seq received
    this.outbox = [];
    this.socket = null;
    this.wanted = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.state = 'closed';
    window.addEventListener('online', () => this.reconnectNow());
    window.addEventListener('offline', () => this.socket && this.socket.close());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    });
  }

  /// `handler(frame)` for frames of `type` ('message', 'token', 'error', 'state').
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type).delete(handler);
  }

  emit(type, frame) {
    for (const handler of this.handlers.get(type) || []) {
      try {
        handler(frame);
      } catch (error) {
        console.warn('frame handler failed', error);
      }
    }
  }

  setState(state) {
    this.state = state;
    this.emit('state', { state });
  }

  start() {
    this.wanted = true;
    if (!this.socket) this.connect();
  }

  stop() {
    this.wanted = false;
    this.replies.clear();
    this.outbox = [];
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000, 'signed out');
    this.socket = null;
    this.setState('closed');
  }

  reconnectNow() {
    if (!this.wanted || this.socket) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.connect();
  }

  async connect() {
    clearTimeout(this.retryTimer);
    if (!this.wanted || !user()) return;
    this.setState('connecting');
    let bearer;
    try {
      bearer = await token();
    } catch {
      bearer = null;
    }
    if (!bearer) {
      this.later();
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`, ['bearer', bearer]);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.attempt = 0;
      this.setState('open');
      for (const [messageId, afterSeq] of this.replies) {
        this.raw({ type: 'resume', messageId, afterSeq, ref: `resume:${messageId}` });
      }
      const waiting = this.outbox.splice(0);
      for (const frame of waiting) this.raw(frame);
      this.heartbeat();
    });
    socket.addEventListener('message', (event) => this.receive(event.data));
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      clearTimeout(this.pongTimer);
      if (!this.wanted) return;
      this.setState('reconnecting');
      if (event.code === 1008) {
        // The session ended or the token is no longer accepted.
        sessionLost().then(() => this.later());
      } else {
        this.later();
      }
    });
  }

  later() {
    if (!this.wanted) return;
    const delay = Math.min(15_000, 500 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  heartbeat() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.raw({ type: 'ping' })) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.socket && this.socket.close(4000, 'no pong'), PONG_WITHIN);
    }, PING_EVERY);
  }

  raw(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /// Sends a frame now, or as soon as the connection is back. Returns whether it went now.
  send(frame) {
    if (this.raw(frame)) return true;
    this.outbox.push(frame);
    this.start();
    return false;
  }

  /// Follows a reply already being written (seen in history): its text after `seq`.
  follow(messageId, seq) {
    if (this.replies.has(messageId)) return;
    this.replies.set(messageId, seq);
    this.raw({ type: 'resume', messageId, afterSeq: seq, ref: `resume:${messageId}` });
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'pong':
        clearTimeout(this.pongTimer);
        return;
      case 'token': {
        const last = this.replies.get(frame.messageId) ?? 0;
        if (frame.seq <= last) return;
        this.replies.set(frame.messageId, frame.seq);
        this.emit('token', frame);
        return;
      }
      case 'message': {
        const message = frame.message;
        if (message.status === 'streaming') {
          if (!this.replies.has(message.id)) this.replies.set(message.id, message.seq || 0);
        } else {
          this.replies.delete(message.id);
        }
        this.emit('message', frame);
        return;
      }
      case 'subscription':
        // The plan changed (an upgrade, a lapse): the next token carries the new tier.
        refresh()
          .catch(() => {})
          .finally(() => this.emit('subscription', frame));
        return;
      case 'error':
        // A reply that cannot be resumed (gone, or not ours) is not followed any more.
        if (frame.ref && frame.ref.startsWith('resume:')) this.replies.delete(frame.ref.slice(7));
        this.emit('error', frame);
        return;
      default:
    }
  }
}

export const live = new Live();
