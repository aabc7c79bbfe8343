//! Conversations warm on this instance: what the next reply needs, kept from the last one.
//!
//! A reply needs the conversation's active branch (as far back as a prompt reads), the
//! character, the user's name and their plan's allowance. Read from PostgreSQL they take
//! two rounds of queries before the model can be asked. When a reply sent through this
//! instance ends, the branch it ended is known in full (the branch it answered, the user's
//! message, the reply as stored), so it is kept here, and the next message in that
//! conversation asks the model at once.
//!
//! How it stays right:
//! - **Other instances.** The conversation's `revision` counts every change to what a
//!   prompt is built from (a new turn, a switch, a continued or deleted reply, messages
//!   expiring). A warm entry carries the revision it was made at, and the statement that
//!   stores the next turn claims the conversation only at that revision. If it moved, nothing
//!   is stored, the model's request is dropped (which cancels it), and the message is sent
//!   again the cold way, from the database.
//! - **The quota.** Never taken from here: a warm message asks billing again before anything
//!   is stored (while the model is already asked), so a spent month is refused as before;
//!   what it allows then is what the next entry keeps.
//! - **Other modules' data.** The character and the user's name are read again with every
//!   warm reply, from its first token on, and the entry the reply leaves behind holds what
//!   was read. An edited character, a new display name or a
//!   changed plan therefore reaches at most one reply late; a character that is gone leaves
//!   no entry, so the next message is refused as before.
//! - **Whose it is.** An entry serves only the conversation's owner; anyone else goes the
//!   cold way, which answers 404.
//! - **Memory.** Bounded by `llm.warm_cache_mib` (0 turns it off) and dropped after
//!   `llm.warm_idle_secs` without a message. An entry is taken out when a message uses it
//!   and put back only when that reply ends; changes made through this instance (a switch,
//!   a regenerated, edited, continued or deleted message, a deleted conversation) drop it.
//!   An erased account's entries can never be served (its conversations are gone from the
//!   database, so the claim fails) and leave memory at the idle deadline.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use super::store::TurnRow;
use crate::modules::billing::Allowance;
use crate::modules::catalog::Persona;

/// What the next reply in a conversation is built from.
#[derive(Clone)]
pub struct Entry {
    pub user: Uuid,
    /// The conversation's revision this was true at.
    pub revision: i64,
    /// The active leaf, which the next message answers, and its depth.
    pub leaf: Uuid,
    pub leaf_depth: i32,
    /// The branch ending at the leaf, newest first, as far back as a prompt reads.
    pub history: Arc<Vec<TurnRow>>,
    pub persona: Arc<Persona>,
    pub user_name: String,
    pub allowance: Allowance,
    /// Whether the next message asks the model before it is stored (a reply that followed
    /// a change made elsewhere asks after, so a conversation moving between instances does
    /// not start requests only to drop them).
    pub ask_early: bool,
}

impl Entry {
    /// Roughly what the entry holds, in KiB (at least 1).
    fn weight_kib(&self) -> u32 {
        // Each message's text and its JSON form (about as long), plus their headers.
        let history: usize = self
            .history
            .iter()
            .map(|t| 2 * t.message.content.len() + 96)
            .sum();
        let p = &*self.persona;
        let persona = [
            &p.name,
            &p.description,
            &p.greeting,
            &p.tone,
            &p.personality_summary,
            &p.scenario,
            &p.example_dialogue,
            &p.system_prompt,
            &p.post_history_instructions,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + p.alternate_greetings.iter().map(String::len).sum::<usize>()
            + p.lorebook
                .iter()
                .map(|e| e.content.len() + e.keys.iter().map(String::len).sum::<usize>())
                .sum::<usize>();
        let bytes = history + persona + self.user_name.len() + 512;
        u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX)
    }
}

/// The warm entries of this instance, by conversation.
#[derive(Clone)]
pub struct Warm {
    entries: Option<Cache<Uuid, Arc<Entry>>>,
}

impl Warm {
    /// Holding at most `capacity_mib` MiB, each entry for `idle` after its last use;
    /// nothing at all when `capacity_mib` is 0.
    pub fn new(capacity_mib: u64, idle: Duration) -> Self {
        let entries = (capacity_mib > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity_mib.saturating_mul(1024))
                .weigher(|_: &Uuid, entry: &Arc<Entry>| entry.weight_kib())
                .time_to_idle(idle)
                .build()
        });
        Self { entries }
    }

    /// Takes the entry of `conversation` if `user` owns it; another user's is left alone.
    pub fn take(&self, conversation: Uuid, user: Uuid) -> Option<Arc<Entry>> {
        let entries = self.entries.as_ref()?;
        let entry = entries.remove(&conversation)?;
        if entry.user == user {
            Some(entry)
        } else {
            entries.insert(conversation, entry);
            None
        }
    }

    pub fn put(&self, conversation: Uuid, entry: Entry) {
        if let Some(entries) = &self.entries {
            entries.insert(conversation, Arc::new(entry));
        }
    }

    /// Drops what is kept of `conversation` (it changed here).
    pub fn forget(&self, conversation: Uuid) {
        if let Some(entries) = &self.entries {
            entries.invalidate(&conversation);
        }
    }

    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }
}

/// The branch a reply ended, newest first: the reply, the user message it answered, then
/// the branch before them, cut as the database read cuts it (`store::turns`): messages are
/// taken newest first while fewer than `limit` are taken and fewer than `max_chars`
/// characters, the first one always. Because the branch before was cut by the same rule, the
/// result is exactly what reading the new branch would give.
pub fn extended(
    reply: TurnRow,
    user: Option<TurnRow>,
    before: &[TurnRow],
    limit: i64,
    max_chars: i64,
) -> Vec<TurnRow> {
    let mut branch = Vec::with_capacity(before.len() + 2);
    let mut chars: i64 = 0;
    for turn in std::iter::once(reply)
        .chain(user)
        .chain(before.iter().cloned())
    {
        let taken = i64::try_from(branch.len()).unwrap_or(i64::MAX);
        if !branch.is_empty() && (taken >= limit || chars >= max_chars) {
            break;
        }
        chars = chars.saturating_add(turn.chars);
        branch.push(turn);
    }
    branch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &str, content: &str) -> TurnRow {
        TurnRow::new(role, content)
    }

    fn contents(branch: &[TurnRow]) -> Vec<&str> {
        branch.iter().map(|t| &*t.message.content).collect()
    }

    /// The rule of `store::turns`, applied to a whole branch (newest first).
    fn cut(branch: &[TurnRow], limit: i64, max_chars: i64) -> Vec<TurnRow> {
        let mut kept = Vec::new();
        let mut chars = 0i64;
        for t in branch {
            if !kept.is_empty() && (kept.len() as i64 >= limit || chars >= max_chars) {
                break;
            }
            chars += t.message.content.chars().count() as i64;
            kept.push(t.clone());
        }
        kept
    }

    #[test]
    fn extending_a_cut_branch_gives_the_cut_of_the_longer_branch() {
        // A whole branch, newest first, of messages of varied lengths (some multi-byte).
        let whole: Vec<TurnRow> = (0..40)
            .map(|i| {
                let role = if i % 2 == 0 { "assistant" } else { "user" };
                turn(role, &"é".repeat(1 + (i * 7) % 23))
            })
            .collect();
        for limit in [1, 2, 3, 5, 17, 400] {
            for max_chars in [1, 10, 50, 120, 10_000] {
                for start in 0..whole.len() - 2 {
                    let before = cut(&whole[start + 2..], limit, max_chars);
                    let reply = whole[start].clone();
                    let user = whole[start + 1].clone();
                    let got = extended(reply, Some(user), &before, limit, max_chars);
                    let want = cut(&whole[start..], limit, max_chars);
                    assert_eq!(
                        contents(&got),
                        contents(&want),
                        "{limit} {max_chars} {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_newest_message_is_kept_even_past_the_budget() {
        let got = extended(
            turn("assistant", "a long reply"),
            None,
            &[turn("user", "hi")],
            5,
            3,
        );
        assert_eq!(contents(&got), ["a long reply"]);
    }
}
