// A character's page: who they are, their rating (and yours), and the start of a talk.

import { del, get, post, request, user } from '../api.js';
import { navigate } from '../app.js';
import { avatar, busy, confirmDialog, download, errorBox, h, stars, toast, toastError } from '../ui.js';

function ratingWidget(character, rating) {
  const me = user();
  const summary = h('p.rating-summary');
  const drawSummary = (r) =>
    summary.replaceChildren(stars(r.rating, r.ratingCount), ` ${Number(r.rating || 0).toFixed(1)} · ${r.ratingCount} rating${r.ratingCount === 1 ? '' : 's'}`);
  drawSummary(rating);
  if (!me || me.id === character.ownerId) return h('div.rating', summary);
  const group = h('div.star-input', { role: 'radiogroup', 'aria-label': 'Your rating' });
  const draw = (mine) => {
    group.replaceChildren(
      ...[1, 2, 3, 4, 5].map((n) =>
        h(
          'button.star',
          {
            type: 'button',
            role: 'radio',
            'aria-checked': String(mine === n),
            'aria-label': `${n} star${n === 1 ? '' : 's'}`,
            class: mine && n <= mine ? 'on' : '',
            onclick: async () => {
              try {
                const next = await post(`/characters/${character.id}/rating`, { stars: n });
                drawSummary(next);
                draw(next.myRating);
                toast('Thanks for rating!');
              } catch (error) {
                toastError(error);
              }
            },
          },
          '★',
        ),
      ),
    );
  };
  draw(rating.myRating);
  return h('div.rating', summary, h('p.muted.small', 'Your rating'), group);
}

async function exportCard(character, format) {
  try {
    const response = await request('GET', `/characters/${character.id}/card.${format}`, { raw: true });
    download(await response.blob(), `${character.name.replace(/[^\p{L}\p{N} _-]/gu, '').trim() || 'character'}.${format}`);
  } catch (error) {
    toastError(error);
  }
}

export async function render(root, { params: [id] }) {
  let character;
  let rating;
  try {
    [character, rating] = await Promise.all([get(`/characters/${id}`), get(`/characters/${id}/rating`)]);
  } catch (error) {
    root.append(errorBox(error), h('p', h('a', { href: '#/' }, 'Back to the catalog')));
    return;
  }
  const me = user();
  const mine = me && me.id === character.ownerId;
  const moderator = me && (me.role === 'admin' || me.role === 'moderator');
  const start = h('button.primary.large', { type: 'button' }, me ? `Talk with ${character.name}` : 'Sign in to talk');
  start.addEventListener('click', async () => {
    if (!me) {
      sessionStorage.setItem('companion.after', `/characters/${id}`);
      navigate('/login');
      return;
    }
    try {
      const started = await busy(start, 'Starting…', () => post('/conversations', { characterId: id }));
      navigate(`/chats/${started.conversation.id}`);
    } catch (error) {
      toastError(error);
    }
  });
  const personality = character.personality || {};
  const actions = h(
    'div.actions',
    start,
    h('button', { type: 'button', onclick: () => exportCard(character, 'png') }, 'Export card (PNG)'),
    h('button', { type: 'button', onclick: () => exportCard(character, 'json') }, 'Export card (JSON)'),
    mine || moderator ? h('a.button', { href: `#/characters/${id}/edit` }, 'Edit') : null,
    mine || moderator
      ? h(
          'button.danger',
          {
            type: 'button',
            onclick: async () => {
              if (!(await confirmDialog('Delete this character?', `${character.name} will be removed from the catalog. Conversations with them stay yours.`, 'Delete', true))) return;
              try {
                await del(`/characters/${id}`);
                toast('Character deleted.');
                navigate('/');
              } catch (error) {
                toastError(error);
              }
            },
          },
          'Delete',
        )
      : null,
    moderator && !mine
      ? h(
          'button.ghost',
          {
            type: 'button',
            onclick: async () => {
              try {
                if (character.hidden) await del(`/characters/${id}/hide`);
                else await post(`/characters/${id}/hide`, { reason: 'hidden from the character page' });
                toast(character.hidden ? 'Shown again.' : 'Hidden from the catalog.');
                navigate(`/characters/${id}`);
              } catch (error) {
                toastError(error);
              }
            },
          },
          character.hidden ? 'Unhide' : 'Hide',
        )
      : null,
  );
  const list = (items) => (items && items.length ? h('ul.chips', items.map((t) => h('li.chip', t))) : null);
  root.append(
    h(
      'article.character-detail',
      h(
        'header.detail-head',
        avatar(character.avatarUrl, character.name, 'xl'),
        h(
          'div',
          h('h1', character.name),
          h('p.muted', [character.category, character.creator ? `by ${character.creator}` : null, character.visibility && character.visibility !== 'public' ? character.visibility : null, character.hidden ? 'hidden' : null].filter(Boolean).join(' · ')),
          ratingWidget(character, rating),
          h('p.muted.small', `${character.conversationCount ?? 0} conversations`),
        ),
      ),
      actions,
      character.description ? h('section', h('h2', 'About'), h('p.prewrap', character.description)) : null,
      personality.greeting ? h('section', h('h2', 'Greeting'), h('blockquote.prewrap', personality.greeting)) : null,
      personality.tone || (character.traits || []).length || (personality.interests || []).length
        ? h(
            'section',
            h('h2', 'Personality'),
            personality.tone ? h('p', h('strong', 'Tone: '), personality.tone) : null,
            character.traits && character.traits.length ? h('div', h('strong', 'Traits'), list(character.traits)) : null,
            personality.interests && personality.interests.length ? h('div', h('strong', 'Interests'), list(personality.interests)) : null,
          )
        : null,
      character.scenario ? h('section', h('h2', 'Scenario'), h('p.prewrap', character.scenario)) : null,
      (character.tags || []).length ? h('section', h('h2', 'Tags'), list(character.tags)) : null,
    ),
  );
}
