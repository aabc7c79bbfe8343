// The browser client, end to end: Debian's Chromium (headless, driven by playwright-core)
// against the real server (BASE_URL) with the built-in reply engine. One person's whole
// path through the product; screenshots of the main screens go to SCREENSHOTS. Any
// console error or uncaught exception in the page fails the test.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SCREENSHOTS || 'target/e2e';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(BASE, 'BASE_URL names the running server');
mkdirSync(SHOTS, { recursive: true });

let browser;
let context;
let page;
const problems = [];
/// Refusals a step provokes on purpose (the browser logs every 4xx answer as an error).
const expected = [];

function watch(p) {
  p.on('console', (message) => {
    if (message.type() !== 'error') return;
    const where = message.location().url || '';
    const index = expected.findIndex((e) => where.includes(e.path) && message.text().includes(`status of ${e.status}`));
    if (index >= 0) expected.splice(index, 1);
    else problems.push(`console: ${message.text()} (${where})`);
  });
  p.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  watch(page);
});

after(async () => {
  await browser?.close();
});

const email = `e2e-${Date.now()}@example.com`;
const password = 'correct horse battery staple';

/// Runs a command (psql, the server's CLI); its error output becomes the error's message.
function run(command, args) {
  try {
    execFileSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  } catch (error) {
    throw new Error(`${command} ${args[0]} failed: ${error.stderr}`);
  }
}

/// The token frames the page receives over its WebSocket, by message id.
const tokens = new Map();
function listenToSocket(p) {
  p.on('websocket', (socket) => {
    socket.on('framereceived', ({ payload }) => {
      let frame;
      try {
        frame = JSON.parse(payload);
      } catch {
        return;
      }
      if (frame.type === 'token') {
        if (!tokens.has(frame.messageId)) tokens.set(frame.messageId, []);
        tokens.get(frame.messageId).push(frame);
      }
    });
  });
}

test('a person uses the whole product from the browser', async (t) => {
  listenToSocket(page);
  // Each step builds on the one before: after a failure the rest are reported as skipped
  // (the test has failed already).
  let failed = false;
  const step = (name, fn) =>
    t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
      try {
        await fn();
      } catch (error) {
        failed = true;
        throw error;
      }
    });

  await step('the page is served with its assets cached by version', async () => {
    const response = await page.goto(BASE);
    assert.equal(response.status(), 200);
    assert.equal(response.headers()['cache-control'], 'no-cache');
    assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
    const script = await page.locator('script[type=module]').getAttribute('src');
    assert.match(script, /^\/assets\/[0-9a-f]{12}\/app\.js$/);
    const asset = await page.request.get(BASE + script);
    assert.match(asset.headers()['cache-control'], /immutable/);
  });

  await step('register', async () => {
    await page.getByRole('link', { name: 'Join', exact: true }).click();
    await page.getByLabel('Display name').fill('Robin');
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await shot('register');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'Discover characters' }).waitFor();
    await page.locator('.account-name', { hasText: 'Robin' }).waitFor();
  });

  let characterName;
  await step('browse the catalog, search it and open a character', async () => {
    const cards = page.locator('.character-card');
    await cards.first().waitFor();
    assert.ok((await cards.count()) > 1, 'the starter characters are listed');
    await shot('catalog');
    characterName = (await cards.first().locator('.card-title').textContent()).trim();
    const all = await page.locator('.count').textContent();
    await page.getByLabel('Search characters').fill(characterName);
    await page.locator('.count').filter({ hasNotText: all }).waitFor();
    assert.equal((await cards.first().locator('.card-title').textContent()).trim(), characterName);
    await page.locator('.character-card', { hasText: characterName }).first().click();
    await page.getByRole('heading', { level: 1, name: characterName }).waitFor();
    await page.getByRole('radio', { name: '4 stars' }).click();
    await page.locator('.rating-summary', { hasText: '1 rating' }).waitFor();
    await shot('character');
  });

  let conversationUrl;
  await step('start a conversation and watch a reply stream in', async () => {
    await page.getByRole('button', { name: `Talk with ${characterName}` }).click();
    await page.locator('.message.assistant').first().waitFor();
    conversationUrl = page.url();
    assert.match(conversationUrl, /#\/chats\/[0-9a-f-]{36}$/);
    await page.getByLabel('Your message').fill('Hello! What do you like to do on a rainy evening?');
    await page.getByLabel('Your message').press('Enter');
    await page.locator('.message.user', { hasText: 'rainy evening' }).waitFor();
    const reply = page.locator('.message.assistant').last();
    await reply.locator('.message-content').filter({ hasText: /\S/ }).waitFor();
    await page.locator('.message.assistant.streaming').waitFor({ state: 'detached', timeout: 30_000 });
    assert.equal(await reply.getAttribute('data-status'), 'complete');
    const id = await reply.getAttribute('data-id');
    const frames = tokens.get(id) || [];
    assert.ok(frames.length > 3, `the reply came in pieces over the WebSocket (${frames.length})`);
    const text = frames.map((f) => f.delta).join('');
    assert.equal((await reply.locator('.message-content').textContent()), text);
    assert.match(await reply.locator('.model').textContent(), /./, 'the reply says which engine wrote it');
    await shot('chat');
  });

  let firstReply;
  await step('regenerate, then swipe back to the first version', async () => {
    const reply = page.locator('.message.assistant').last();
    firstReply = await reply.locator('.message-content').textContent();
    await reply.getByRole('button', { name: 'Regenerate' }).click();
    const swipes = page.locator('.message.assistant').last().locator('.swipe-count');
    await swipes.filter({ hasText: '2/2' }).waitFor();
    await page.locator('.message.assistant.streaming').waitFor({ state: 'detached', timeout: 30_000 });
    await shot('regenerated');
    await page.locator('.message.assistant').last().getByRole('button', { name: 'Previous version' }).click();
    await swipes.filter({ hasText: '1/2' }).waitFor();
    assert.equal(await page.locator('.message.assistant').last().locator('.message-content').textContent(), firstReply);
  });

  await step('after a reload the conversation is still there, as it was', async () => {
    await page.reload();
    await page.locator('.conversation-item').first().waitFor();
    assert.ok((await page.locator('.conversation-item', { hasText: characterName }).count()) >= 1);
    await page.locator('.message.assistant').last().waitFor();
    assert.equal(await page.locator('.message.assistant').last().locator('.message-content').textContent(), firstReply);
    await page.locator('.message.assistant').last().locator('.swipe-count', { hasText: '1/2' }).waitFor();
    assert.equal(page.url(), conversationUrl);
  });

  await step('a reply in progress survives a lost connection and resumes without losing text', async () => {
    const resumes = [];
    page.on('websocket', (socket) =>
      socket.on('framesent', ({ payload }) => {
        if (String(payload).includes('"resume"')) resumes.push(JSON.parse(payload));
      }),
    );
    await page.getByLabel('Your message').fill('Tell me about the sea at night, the boats and the lights.');
    await page.getByLabel('Your message').press('Enter');
    const streaming = page.locator('.message.assistant.streaming');
    await streaming.locator('.message-content').filter({ hasText: /\S/ }).waitFor();
    await context.setOffline(true);
    await page.waitForTimeout(700);
    await context.setOffline(false);
    await streaming.waitFor({ state: 'detached', timeout: 30_000 });
    assert.ok(resumes.some((r) => r.afterSeq > 0), `the reply was resumed after the pieces it had: ${JSON.stringify(resumes)}`);
    const shown = await page.locator('.message.assistant').last().locator('.message-content').textContent();
    const stored = await page.evaluate(async () => {
      const api = await import(new URL('api.js', document.querySelector('script[type=module]').src));
      const id = location.hash.split('/')[2];
      return (await api.get(`/conversations/${id}/messages?limit=1`)).messages[0].content;
    });
    assert.equal(shown, stored, 'exactly the stored reply: nothing lost, nothing twice');
  });

  await step('older history loads when scrolling up', async () => {
    const id = page.url().split('/').pop();
    // 120 more messages below the active leaf, straight into the database.
    run('psql', [process.env.DATABASE_URL, '-qv', 'ON_ERROR_STOP=1', '-c', `
      WITH conv AS (SELECT id, active_leaf_id FROM chat.conversations WHERE id = '${id}'),
      ids AS (SELECT n, gen_random_uuid() AS id FROM generate_series(1, 120) n),
      ins AS (
        INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content, status)
        SELECT i.id, conv.id, coalesce(p.id, conv.active_leaf_id),
               (SELECT depth FROM chat.messages WHERE id = conv.active_leaf_id) + i.n,
               CASE WHEN i.n % 2 = 1 THEN 'user' ELSE 'assistant' END, 'Seeded message ' || i.n, 'complete'
        FROM conv, ids i LEFT JOIN ids p ON p.n = i.n - 1
        RETURNING id)
      UPDATE chat.conversations SET active_leaf_id = (SELECT id FROM ids WHERE n = 120)
      WHERE id = '${id}' AND (SELECT count(*) FROM ins) = 120`]);
    await page.reload();
    await page.locator('.message', { hasText: 'Seeded message 120' }).waitFor();
    assert.equal(await page.locator('.message').count(), 50, 'one page at first');
    const scroller = page.locator('.messages-scroll');
    const beginning = page.getByText('The beginning of your conversation');
    for (let i = 0; i < 10 && !(await beginning.isVisible()); i += 1) {
      await scroller.evaluate((el) => {
        el.scrollTop = 0;
      });
      await page.waitForTimeout(300);
    }
    await beginning.waitFor();
    assert.ok((await page.locator('.message').count()) > 120, 'every page loaded');
    await page.locator('.message', { hasText: 'rainy evening' }).waitFor();
    await scroller.evaluate((el) => {
      el.scrollTop = el.scrollHeight;
    });
  });

  await step('premium: create a character, import a card by dropping it, export a card', async () => {
    // The server tells the page's socket that the plan changed, and the page fetches a token
    // with the new tier by itself (no reload, no new sign-in).
    const refreshed = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/refresh'));
    run(process.env.COMPANION_BIN, ['admin', 'set-user', '--email', email, '--tier', 'premium']);
    assert.equal((await refreshed).status(), 200);
    await page.getByRole('link', { name: 'Create', exact: true }).click();
    await page.getByRole('heading', { name: 'New character' }).waitFor();
    await page.getByLabel('Name').fill('Juniper');
    await page.getByLabel('Description').fill('A botanist who talks to her plants and, sometimes, to you.');
    await page.getByLabel('Greeting').fill('Mind the ferns! Oh, hello there.');
    await page.getByLabel('Traits').fill('curious, patient');
    await shot('editor');
    await page.getByRole('button', { name: 'Create character' }).click();
    await page.getByRole('heading', { level: 1, name: 'Juniper' }).waitFor();
    await page.getByText('Mind the ferns!').waitFor();

    await page.getByRole('link', { name: 'Create', exact: true }).click();
    const card = JSON.stringify({
      spec: 'chara_card_v2',
      spec_version: '2.0',
      data: {
        name: 'Nova', description: 'A pilot between the stars.', personality: 'bold', scenario: '',
        first_mes: 'Strap in, {{user}}.', mes_example: '', creator_notes: '', system_prompt: '',
        post_history_instructions: '', alternate_greetings: [], tags: ['space'], creator: 'e2e',
        character_version: '1', extensions: {},
      },
    });
    const drop = await page.evaluateHandle((text) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([text], 'nova.json', { type: 'application/json' }));
      return transfer;
    }, card);
    await page.locator('.dropzone').dispatchEvent('drop', { dataTransfer: drop });
    await page.getByRole('heading', { name: 'Edit Nova' }).waitFor();
    await page.getByRole('link', { name: 'Cancel' }).click();
    await page.getByRole('heading', { level: 1, name: 'Nova' }).waitFor();
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Export card (PNG)' }).click(),
    ]);
    const png = readFileSync(await download.path());
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });

  await step('upload an avatar on the profile', async () => {
    await page.getByRole('link', { name: 'Robin', exact: true }).click();
    await page.getByRole('heading', { name: 'Your profile' }).waitFor();
    await page.locator('.level progress').waitFor();
    await page.getByText(/Tokens this month: [\d,]+ of [\d,]+/).waitFor();
    const png = await page.evaluate(() => {
      const canvas = document.createElement('canvas');
      canvas.width = 96;
      canvas.height = 96;
      const g = canvas.getContext('2d');
      g.fillStyle = '#6d4aff';
      g.fillRect(0, 0, 96, 96);
      g.fillStyle = '#ffd166';
      g.beginPath();
      g.arc(48, 48, 30, 0, Math.PI * 2);
      g.fill();
      return canvas.toDataURL('image/png').split(',')[1];
    });
    await page.getByLabel('Picture').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: Buffer.from(png, 'base64') });
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.locator('.toast', { hasText: 'Profile saved.' }).waitFor();
    await page.locator('.account-link .avatar img').waitFor();
    await shot('profile');
  });

  await step('request an export and download it when ready', async () => {
    await page.getByRole('button', { name: 'Request an archive' }).click();
    const ready = page.locator('.export[data-status=ready]');
    await ready.waitFor({ timeout: 60_000 });
    const [download] = await Promise.all([page.waitForEvent('download'), ready.getByRole('button', { name: 'Download' }).click()]);
    const zip = readFileSync(await download.path());
    assert.equal(zip.subarray(0, 2).toString(), 'PK', 'a ZIP archive');
    await page.locator('.export').first().scrollIntoViewIfNeeded();
    await shot('export');
  });

  await step('as an admin: the numbers, the accounts, and character moderation', async () => {
    // A role change ends the account's sessions: sign out, have the role given, sign in.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Welcome back' }).waitFor();
    run(process.env.COMPANION_BIN, ['admin', 'set-user', '--email', email, '--role', 'admin']);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Admin', exact: true }).click();
    await page.getByRole('heading', { name: 'Administration' }).waitFor();
    await page.locator('.stat', { hasText: 'messages today' }).waitFor();

    const accounts = page.locator('section', { has: page.getByRole('heading', { name: 'Accounts' }) });
    await accounts.getByLabel('Search accounts').fill(email);
    await accounts.getByRole('button', { name: 'Search' }).click();
    const me = accounts.locator('tbody tr', { hasText: email });
    await me.waitFor();
    // Nobody demotes or disables themselves from here.
    assert.equal(await me.getByLabel(`Role of ${email}`).inputValue(), 'admin');
    assert.ok(await me.getByLabel(`Role of ${email}`).isDisabled());

    const moderation = page.locator('section', { has: page.getByRole('heading', { name: 'Character moderation' }) });
    await moderation.getByLabel('Which characters').selectOption('false');
    await moderation.getByLabel('Search characters').fill('Luna');
    await moderation.getByRole('button', { name: 'Search' }).click();
    await moderation.locator('tbody tr', { hasText: 'Luna' }).first().getByRole('button', { name: 'Hide' }).click();
    await page.getByLabel('Why (staff see this)').fill('Checked by the browser test');
    await page.locator('dialog').getByRole('button', { name: 'Hide' }).click();
    await page.locator('.toast', { hasText: 'Luna is hidden.' }).waitFor();
    await moderation.getByLabel('Which characters').selectOption('true');
    const hidden = moderation.locator('tbody tr', { hasText: 'Checked by the browser test' });
    await hidden.waitFor();
    await shot('admin');
    await hidden.getByRole('button', { name: 'Show again' }).click();
    await page.locator('dialog').getByRole('button', { name: 'Show' }).click();
    await page.locator('.toast', { hasText: 'Luna is visible again.' }).waitFor();
  });

  await step('delete the account', async () => {
    await page.getByRole('link', { name: 'Robin', exact: true }).click();
    await page.getByRole('heading', { name: 'Your profile' }).waitFor();
    await page.getByText(/grace period of \d+ days/).waitFor();
    const closing = page.locator('section', { has: page.getByRole('heading', { name: 'Delete your account' }) });
    await closing.getByLabel('Password').fill(password);
    await closing.getByLabel(/I understand/).check();
    await closing.scrollIntoViewIfNeeded();
    await shot('delete-account');
    await closing.getByRole('button', { name: 'Delete my account' }).click();
    await page.getByRole('heading', { name: 'Welcome back' }).waitFor();
    await page.locator('.toast', { hasText: 'Your account is closed' }).waitFor();
    // Signing in now says the account waits for its erasure (403) and offers the restore.
    expected.push({ path: '/api/v1/auth/login', status: 403 });
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Restore it' }).waitFor();
  });

  await step('at phone width the catalog fits the screen', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    watch(small);
    await small.goto(BASE);
    await small.locator('.character-card').first().waitFor();
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);
    await small.screenshot({ path: join(SHOTS, 'phone-catalog.png') });
    await phone.close();
  });

  assert.deepEqual(problems, [], 'no console errors');
  // The refusal provoked on purpose was logged, and seen: the watch works.
  assert.deepEqual(expected, [], 'every provoked refusal showed in the console');
});
