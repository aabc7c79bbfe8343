// Create or edit a character (a premium feature), or import a card by dropping its file.

import { get, post, request, user } from '../api.js';
import { navigate } from '../app.js';
import { avatar, busy, clear, errorBox, field, h, showFormError, toast, toastError } from '../ui.js';
import { categoryOptions } from './browse.js';

const list = (text) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/// Uploads an image the person picked; answers the media object.
export async function uploadImage(file, characterId) {
  const form = new FormData();
  form.append('type', 'image');
  if (characterId) form.append('characterId', characterId);
  form.append('file', file, file.name);
  return post('/media/upload', form);
}

function importZone() {
  const input = h('input', { type: 'file', accept: '.png,.json,.charx,image/png,application/json', hidden: true });
  const status = h('p.muted', { role: 'status' });
  const zone = h(
    'div.dropzone',
    { tabindex: '0', role: 'button', 'aria-label': 'Import a character card: drop a PNG or JSON card here, or press to choose a file' },
    h('p.dropzone-title', 'Import a card'),
    h('p.muted', 'Drop a character card (PNG, JSON or CHARX) here, or click to choose one.'),
    status,
    input,
  );
  const take = async (file) => {
    if (!file) return;
    if (file.size > 20 * 1024 * 1024) {
      status.textContent = 'That file is larger than 20 MiB; cards are much smaller.';
      return;
    }
    status.textContent = `Importing ${file.name}…`;
    zone.setAttribute('aria-busy', 'true');
    try {
      const character = await request('POST', '/characters/import', { body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' } });
      toast(`${character.name} imported. They are private until you share them.`);
      navigate(`/characters/${character.id}/edit`);
    } catch (error) {
      status.textContent = '';
      toastError(error);
    } finally {
      zone.removeAttribute('aria-busy');
    }
  };
  zone.addEventListener('click', () => input.click());
  zone.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      input.click();
    }
  });
  input.addEventListener('change', () => take(input.files[0]));
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    take(event.dataTransfer.files[0]);
  });
  return zone;
}

export async function render(root, { params: [id] }) {
  const me = user();
  const premium = me.role === 'admin' || me.role === 'moderator' || ['premium', 'enterprise'].includes(me.subscription && me.subscription.tier);
  if (!id && !premium) {
    root.append(
      h(
        'section.panel',
        h('h1', 'Create your own characters'),
        h('p', 'Creating and importing characters is part of the Premium plan. Your plan: ', h('strong', (me.subscription && me.subscription.tier) || 'free'), '.'),
        h('a.button', { href: '#/' }, 'Back to the catalog'),
      ),
    );
    return;
  }
  let character = {};
  if (id) {
    try {
      character = await get(`/characters/${id}`);
    } catch (error) {
      root.append(errorBox(error));
      return;
    }
  }
  const personality = character.personality || {};
  let avatarMediaId;
  const preview = h('div.avatar-preview', avatar(character.avatarUrl, character.name || '?', 'xl'));
  const avatarInput = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp,image/gif', name: 'avatarFile' });
  avatarInput.addEventListener('change', () => {
    const file = avatarInput.files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    clear(preview, h('span.avatar.xl', h('img', { src: url, alt: 'Chosen picture' })));
  });
  const categorySelect = h('select', { name: 'category' }, h('option', { value: '' }, 'Choose…'));
  categoryOptions(categorySelect, character.category);
  const visibility = h(
    'select',
    { name: 'visibility' },
    h('option', { value: 'private' }, 'Private — only you'),
    h('option', { value: 'unlisted' }, 'Unlisted — anyone with the link'),
    h('option', { value: 'public' }, 'Public — listed in the catalog'),
  );
  visibility.value = character.visibility || 'private';
  const text = (name, value, attrs = {}) => h('input', { name, value: value || '', ...attrs });
  const area = (name, value, rows = 3, attrs = {}) => {
    const el = h('textarea', { name, rows, ...attrs });
    el.value = value || '';
    return el;
  };
  const save = h('button.primary', { type: 'submit' }, id ? 'Save changes' : 'Create character');
  const form = h(
    'form.stack.editor',
    { novalidate: true },
    h('p.form-error', { role: 'alert' }),
    h('div.editor-avatar', preview, field('Picture', avatarInput, 'PNG, JPEG, WebP or GIF, up to 10 MiB.')),
    field('Name', text('name', character.name, { required: true, maxlength: 100 })),
    field('Description', area('description', character.description, 3, { maxlength: 5000 }), 'Who they are, in a few sentences.'),
    h('div.row', field('Category', categorySelect), field('Visibility', visibility)),
    field('Greeting', area('greeting', personality.greeting, 3), 'Their first words in every new conversation.'),
    field('Tone', text('tone', personality.tone, { placeholder: 'warm, playful…' })),
    field('Traits', text('traits', (character.traits || []).join(', ')), 'Separated by commas.'),
    field('Interests', text('interests', (personality.interests || []).join(', ')), 'Separated by commas.'),
    field('Tags', text('tags', (character.tags || []).join(', ')), 'Separated by commas.'),
    field('Scenario', area('scenario', character.scenario, 3)),
    field('Example dialogue', area('exampleDialogue', character.exampleDialogue, 4)),
    h('div.actions', h('a.button', { href: id ? `#/characters/${id}` : '#/' }, 'Cancel'), save),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    showFormError(form, null);
    const v = Object.fromEntries(new FormData(form).entries());
    try {
      await busy(save, 'Saving…', async () => {
        if (avatarInput.files[0]) avatarMediaId = (await uploadImage(avatarInput.files[0], id)).id;
        const body = {
          name: v.name,
          description: v.description,
          category: v.category || undefined,
          visibility: v.visibility,
          traits: list(v.traits),
          tags: list(v.tags),
          personality: { ...(id ? { summary: personality.summary || '' } : {}), greeting: v.greeting, tone: v.tone, interests: list(v.interests) },
          scenario: v.scenario,
          exampleDialogue: v.exampleDialogue,
        };
        if (avatarMediaId) body.avatarMediaId = avatarMediaId;
        // An edit changes the fields of this form and keeps the card's others.
        const saved = id ? await request('PATCH', `/characters/${id}`, { body }) : await post('/characters', body);
        toast(id ? 'Saved.' : `${saved.name} is created.`);
        navigate(`/characters/${saved.id}`);
      });
    } catch (error) {
      showFormError(form, error);
    }
  });
  root.append(h('h1', id ? `Edit ${character.name}` : 'New character'), id ? null : importZone(), form);
}

