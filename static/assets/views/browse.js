// Discover: the public catalog with search, category, sort and infinite scroll.

import { get, user } from '../api.js';
import { avatar, clear, empty, errorBox, h, spinner, stars } from '../ui.js';

const PAGE = 24;

export function characterCard(character) {
  return h(
    'li.character-card',
    h(
      'a.card-link',
      { href: `#/characters/${character.id}` },
      avatar(character.avatarUrl, character.name, 'lg'),
      h(
        'div.card-body',
        h('h3.card-title', character.name),
        h('p.card-text', character.description || (character.personality && character.personality.greeting) || ''),
        h(
          'p.card-meta',
          stars(character.rating, character.ratingCount),
          h('span', `${character.conversationCount ?? 0} chat${character.conversationCount === 1 ? '' : 's'}`),
          character.category ? h('span.tag', character.category) : null,
          character.isPublic === false ? h('span.tag.private', 'private') : null,
        ),
      ),
    ),
  );
}

/// Fills `select` with the categories (after its first option), `current` chosen;
/// `counts` adds each one's number of public characters.
export function categoryOptions(select, current, counts = false) {
  get('/categories', { auth: false })
    .then((categories) => {
      for (const c of categories) select.append(h('option', { value: c.id }, counts ? `${c.name} (${c.characterCount})` : c.name));
      select.value = current || '';
    })
    .catch(() => {});
}

export async function render(root, { query }) {
  const state = {
    search: query.get('search') || '',
    category: query.get('category') || '',
    sort: query.get('sort') || 'popular',
    page: 0,
    totalPages: 1,
    loading: false,
  };
  const searchBox = h('input', { type: 'search', name: 'search', placeholder: 'Search characters', value: state.search, 'aria-label': 'Search characters' });
  const categorySelect = h('select', { name: 'category', 'aria-label': 'Category' }, h('option', { value: '' }, 'All categories'));
  const sortSelect = h(
    'select',
    { name: 'sort', 'aria-label': 'Sort by' },
    h('option', { value: 'popular' }, 'Most popular'),
    h('option', { value: 'rating' }, 'Best rated'),
    h('option', { value: 'new' }, 'Newest'),
  );
  sortSelect.value = state.sort;
  const grid = h('ul.character-grid', { 'aria-live': 'polite' });
  const status = h('div.list-status');
  const sentinel = h('div.sentinel', { 'aria-hidden': 'true' });
  const count = h('p.muted.count');

  root.append(
    h(
      'section.hero',
      h('h1', 'Discover characters'),
      h('p.muted', 'Find someone to talk with, or ', user() ? h('a', { href: '#/characters/new' }, 'create your own') : h('a', { href: '#/register' }, 'join to create your own'), '.'),
    ),
    h('form.filters', { role: 'search', onsubmit: (e) => e.preventDefault() }, searchBox, categorySelect, sortSelect),
    count,
    grid,
    status,
    sentinel,
  );

  categoryOptions(categorySelect, state.category, true);

  let generation = 0;
  async function load(reset) {
    if (reset) {
      generation += 1;
      state.page = 0;
      state.totalPages = 1;
      clear(grid);
    }
    if (state.loading || state.page >= state.totalPages) return;
    const mine = generation;
    state.loading = true;
    clear(status, spinner('Loading characters…'));
    const params = new URLSearchParams({ page: state.page, size: PAGE, sort: state.sort });
    if (state.search) params.set('search', state.search);
    if (state.category) params.set('category', state.category);
    try {
      const page = await get(`/characters?${params}`);
      if (mine !== generation) return;
      state.totalPages = page.totalPages;
      state.page += 1;
      for (const character of page.content) grid.append(characterCard(character));
      count.textContent = `${page.totalElements} character${page.totalElements === 1 ? '' : 's'}`;
      clear(status);
      if (page.totalElements === 0) {
        status.append(empty('No character matches', state.search || state.category ? 'Try other words or another category.' : 'The catalog is empty for now.'));
      } else if (state.page < state.totalPages) {
        status.append(h('button.ghost', { type: 'button', onclick: () => load(false) }, 'Show more'));
      }
    } catch (error) {
      if (mine === generation) clear(status, errorBox(error, () => load(false)));
    } finally {
      if (mine === generation) state.loading = false;
    }
  }

  function updateQuery() {
    const params = new URLSearchParams();
    if (state.search) params.set('search', state.search);
    if (state.category) params.set('category', state.category);
    if (state.sort !== 'popular') params.set('sort', state.sort);
    const hash = `#/${params.toString() ? `?${params}` : ''}`;
    history.replaceState(null, '', hash);
    state.loading = false;
    load(true);
  }

  let typing = null;
  searchBox.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.search = searchBox.value.trim();
      updateQuery();
    }, 300);
  });
  categorySelect.addEventListener('change', () => {
    state.category = categorySelect.value;
    updateQuery();
  });
  sortSelect.addEventListener('change', () => {
    state.sort = sortSelect.value;
    updateQuery();
  });

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) load(false);
  }, { rootMargin: '400px' });
  observer.observe(sentinel);
  await load(true);
  return () => {
    observer.disconnect();
    clearTimeout(typing);
  };
}
