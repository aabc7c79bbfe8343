//! Prompt assembly: what the model reads for one reply. A pure function, so what it does is
//! pinned by unit tests, and what it produced is stored with the reply (`…/prompt`).
//!
//! Layout: one system message (the character's system prompt or ours, lorebook entries
//! placed before the character, description, personality, tone, traits and interests,
//! scenario, entries placed after the character, example dialogue), then as much of the
//! active branch as the context window leaves room for, newest kept first, then the
//! character's post-history instructions. `{{char}}` and `{{user}}` are replaced
//! everywhere. The creator's notes are never part of it (the persona does not even carry
//! them).

use std::sync::Arc;

use serde::Serialize;

use crate::modules::catalog::{LoreEntry, Persona};
use crate::platform::llm::{Message, Role, estimate_tokens, estimate_tokens_of};

/// How many of the newest messages a lorebook key is looked for in.
pub const SCAN_DEPTH: usize = 4;
/// Tokens each message costs beyond its text (role markers).
const PER_MESSAGE: u32 = 4;
const DEFAULT_SYSTEM: &str = "You are {{char}}, talking with {{user}}. Stay in character, \
answer in {{char}}'s own voice, and never speak or act for {{user}}.";

/// One message of the conversation, oldest first, as the model is sent it (its text and its
/// JSON form shared, so a history kept warm is neither copied nor encoded again), with its
/// size by [`estimate_tokens`].
#[derive(Debug, Clone)]
pub struct Turn {
    pub message: Message,
    pub tokens: u32,
}

impl Turn {
    pub fn new(role: Role, content: impl Into<Arc<str>>) -> Self {
        let message = Message::new(role, content);
        let tokens = estimate_tokens(&message.content);
        Self { message, tokens }
    }

    /// A message whose length in characters is known already (a kept branch counts each
    /// message once, not once per prompt).
    pub fn counted(message: Message, chars: i64) -> Self {
        let tokens = estimate_tokens_of(u64::try_from(chars).unwrap_or(0));
        Self { message, tokens }
    }
}

pub struct Input<'a> {
    pub persona: &'a Persona,
    pub user_name: &'a str,
    /// The active branch up to the message being answered, oldest first.
    pub history: &'a [Turn],
    pub context_tokens: u32,
    pub max_tokens: u32,
}

/// A built prompt, and what is stored of it (`…/prompt` shows it). The messages are shared
/// with the model's request; the JSON is made only when the prompt is stored, which a reply
/// does after its first token, so a long prompt is serialized off that path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    #[serde(serialize_with = "shared")]
    pub messages: Arc<[Message]>,
    /// How many of the newest history messages fit.
    pub history_used: usize,
    /// Which lorebook entries were included (their positions in the book).
    pub lore_used: Vec<usize>,
    pub estimated_tokens: u32,
}

impl Prompt {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }
}

fn shared<S: serde::Serializer>(
    messages: &Arc<[Message]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    messages[..].serialize(serializer)
}

/// `{{char}}`, `{{user}}` and their common spellings.
pub fn fill(text: &str, character: &str, user: &str) -> String {
    let mut out = text.to_owned();
    for (pattern, value) in [
        ("{{char}}", character),
        ("{{Char}}", character),
        ("{{CHAR}}", character),
        ("<BOT>", character),
        ("{{user}}", user),
        ("{{User}}", user),
        ("{{USER}}", user),
        ("<USER>", user),
    ] {
        if out.contains(pattern) {
            out = out.replace(pattern, value);
        }
    }
    out
}

fn mentions(text: &str, key: &str, case_sensitive: bool) -> bool {
    let key = key.trim();
    if key.is_empty() {
        return false;
    }
    if case_sensitive {
        text.contains(key)
    } else {
        text.to_lowercase().contains(&key.to_lowercase())
    }
}

/// The enabled entries that apply: constant ones, and those whose key (and, when selective,
/// a secondary key) appears in the newest messages. In insertion order.
fn lore(entries: &[LoreEntry], history: &[Turn]) -> Vec<usize> {
    let recent: String = history
        .iter()
        .rev()
        .take(SCAN_DEPTH)
        .map(|t| &*t.message.content)
        .collect::<Vec<_>>()
        .join("\n");
    let mut used: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.enabled)
        .filter(|(_, e)| {
            if e.constant {
                return true;
            }
            let hit = |keys: &[String]| keys.iter().any(|k| mentions(&recent, k, e.case_sensitive));
            hit(&e.keys) && (!e.selective || e.secondary_keys.is_empty() || hit(&e.secondary_keys))
        })
        .map(|(i, _)| i)
        .collect();
    used.sort_by_key(|&i| (entries[i].insertion_order, i));
    used
}

fn system_text(persona: &Persona, user: &str, used: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let base = if persona.system_prompt.trim().is_empty() {
        DEFAULT_SYSTEM.to_owned()
    } else {
        persona
            .system_prompt
            .replace("{{original}}", DEFAULT_SYSTEM)
    };
    parts.push(base);
    let placed = |after: bool| -> Vec<String> {
        used.iter()
            .map(|&i| &persona.lorebook[i])
            .filter(|e| e.after_char == after && !e.content.trim().is_empty())
            .map(|e| e.content.clone())
            .collect()
    };
    parts.extend(placed(false));
    if !persona.description.trim().is_empty() {
        parts.push(persona.description.clone());
    }
    if !persona.personality_summary.trim().is_empty() {
        parts.push(format!(
            "{{{{char}}}}'s personality: {}",
            persona.personality_summary
        ));
    }
    let mut traits = Vec::new();
    if !persona.tone.trim().is_empty() {
        traits.push(format!("Tone: {}.", persona.tone));
    }
    if !persona.traits.is_empty() {
        traits.push(format!("Traits: {}.", persona.traits.join(", ")));
    }
    if !persona.interests.is_empty() {
        traits.push(format!("Interests: {}.", persona.interests.join(", ")));
    }
    if !traits.is_empty() {
        parts.push(traits.join(" "));
    }
    if !persona.scenario.trim().is_empty() {
        parts.push(format!("Scenario: {}", persona.scenario));
    }
    parts.extend(placed(true));
    if !persona.example_dialogue.trim().is_empty() {
        parts.push(format!(
            "Examples of how {{{{char}}}} speaks:\n{}",
            persona.example_dialogue
        ));
    }
    fill(&parts.join("\n\n"), &persona.name, user)
}

pub fn build(input: &Input<'_>) -> Prompt {
    let persona = input.persona;
    let used = lore(&persona.lorebook, input.history);
    let system = system_text(persona, input.user_name, &used);
    let post = fill(
        persona.post_history_instructions.trim(),
        &persona.name,
        input.user_name,
    );
    let fixed = estimate_tokens(&system)
        + PER_MESSAGE
        + if post.is_empty() {
            0
        } else {
            estimate_tokens(&post) + PER_MESSAGE
        };
    let mut budget = input
        .context_tokens
        .saturating_sub(input.max_tokens)
        .saturating_sub(fixed);
    let mut history_tokens: u32 = 0;
    // Newest first until the budget is spent; the message being answered always goes in.
    let mut kept = Vec::new();
    for (n, turn) in input.history.iter().rev().enumerate() {
        let cost = turn.tokens.saturating_add(PER_MESSAGE);
        if n > 0 && cost > budget {
            break;
        }
        budget = budget.saturating_sub(cost);
        history_tokens = history_tokens.saturating_add(cost);
        kept.push(turn.message.clone());
    }
    let history_used = kept.len();
    let mut messages = vec![Message::new(Role::System, system)];
    messages.extend(kept.into_iter().rev());
    if !post.is_empty() {
        messages.push(Message::new(Role::System, post));
    }
    // Every message's estimate plus its markers, as counted above.
    let estimated_tokens = fixed.saturating_add(history_tokens);
    Prompt {
        messages: messages.into(),
        history_used,
        lore_used: used,
        estimated_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn entry(keys: &[&str], content: &str) -> LoreEntry {
        LoreEntry {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            secondary_keys: Vec::new(),
            content: content.into(),
            enabled: true,
            constant: false,
            selective: false,
            case_sensitive: false,
            insertion_order: 0,
            after_char: false,
        }
    }

    fn persona() -> Persona {
        Persona {
            id: Uuid::nil(),
            owner_id: None,
            name: "Luna".into(),
            description: "{{char}} is a moon spirit who guides {{user}}.".into(),
            avatar_url: None,
            category: "fantasy".into(),
            traits: vec!["gentle".into()],
            greeting: "Hello".into(),
            alternate_greetings: Vec::new(),
            tone: "warm".into(),
            interests: vec!["stars".into()],
            personality_summary: "Kind and patient.".into(),
            scenario: "A quiet night.".into(),
            example_dialogue: "<START>\n{{user}}: Hi\n{{char}}: Hello, <USER>.".into(),
            system_prompt: String::new(),
            post_history_instructions: "Answer {{user}} in two sentences.".into(),
            nsfw: false,
            lorebook: vec![
                LoreEntry {
                    constant: true,
                    insertion_order: 5,
                    ..entry(&[], "The moon has two faces.")
                },
                entry(&["castle"], "The castle is old."),
                LoreEntry {
                    selective: true,
                    secondary_keys: vec!["king".into()],
                    ..entry(&["throne"], "The throne is empty.")
                },
                LoreEntry {
                    enabled: false,
                    ..entry(&["castle"], "Disabled entry.")
                },
                LoreEntry {
                    after_char: true,
                    insertion_order: -1,
                    ..entry(&["Dragon"], "Dragons sleep here.")
                },
            ],
        }
    }

    fn turns(texts: &[(Role, &str)]) -> Vec<Turn> {
        texts
            .iter()
            .map(|(role, content)| Turn::new(*role, *content))
            .collect()
    }

    fn prompt(history: &[Turn], context: u32) -> Prompt {
        build(&Input {
            persona: &persona(),
            user_name: "Ann",
            history,
            context_tokens: context,
            max_tokens: 100,
        })
    }

    #[test]
    fn the_persona_is_laid_out_with_names_filled_in() {
        let history = turns(&[(Role::User, "Hello there")]);
        let p = prompt(&history, 4096);
        let system = &p.messages[0].content;
        assert_eq!(p.messages[0].role, Role::System);
        assert!(
            system.starts_with("You are Luna, talking with Ann."),
            "{system}"
        );
        assert!(system.contains("Luna is a moon spirit who guides Ann."));
        assert!(system.contains("Luna's personality: Kind and patient."));
        assert!(system.contains("Tone: warm. Traits: gentle. Interests: stars."));
        assert!(system.contains("Scenario: A quiet night."));
        assert!(system.contains("Ann: Hi\nLuna: Hello, Ann."));
        assert!(!system.contains("{{") && !system.contains("<USER>"));
        assert_eq!(&*p.messages[1].content, "Hello there");
        let last = p.messages.last().unwrap();
        assert_eq!(
            (last.role, &*last.content),
            (Role::System, "Answer Ann in two sentences.")
        );
    }

    #[test]
    fn the_stored_record_is_the_prompt_as_built() {
        let history = turns(&[
            (Role::User, "Tell me about the castle"),
            (Role::Assistant, "It has \"towers\"\nand a moat."),
            (Role::User, "And the dragon?"),
        ]);
        let p = prompt(&history, 4096);
        let whole: serde_json::Value = serde_json::to_value(&p).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(stored, whole);
        assert_eq!(
            stored["messages"].as_array().unwrap().len(),
            p.messages.len()
        );
        assert_eq!(
            stored["messages"][2]["content"],
            "It has \"towers\"\nand a moat."
        );
        assert_eq!(stored["historyUsed"], 3);
        assert_eq!(stored["loreUsed"], serde_json::json!([4, 1, 0]));
    }

    #[test]
    fn lorebook_entries_follow_keys_in_recent_messages() {
        let quiet = prompt(&turns(&[(Role::User, "Nice evening")]), 4096);
        assert_eq!(quiet.lore_used, vec![0], "only the constant entry");

        let history = turns(&[
            (Role::User, "Tell me about the CASTLE"),
            (Role::Assistant, "A DRAGON sleeps under the throne."),
            (Role::User, "And the king?"),
        ]);
        let p = prompt(&history, 4096);
        // Sorted by insertion order; the disabled entry never comes in.
        assert_eq!(p.lore_used, vec![4, 1, 2, 0]);
        let system = &p.messages[0].content;
        let castle = system.find("The castle is old.").unwrap();
        let description = system.find("moon spirit").unwrap();
        let dragons = system.find("Dragons sleep here.").unwrap();
        assert!(
            castle < description && description < dragons,
            "before/after the character"
        );
        assert!(!system.contains("Disabled entry."));

        // A selective entry needs a secondary key too.
        let no_king = prompt(&turns(&[(Role::User, "the throne room")]), 4096);
        assert!(!no_king.lore_used.contains(&2));
    }

    #[test]
    fn history_is_cut_oldest_first_to_fit_the_context() {
        let long = "word ".repeat(200);
        let history: Vec<Turn> = (0..30)
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                Turn::new(role, format!("{i} {long}"))
            })
            .collect();
        let p = prompt(&history, 2048);
        assert!(p.history_used > 0 && p.history_used < 30);
        assert!(p.estimated_tokens <= 2048 - 100, "{}", p.estimated_tokens);
        // The newest message is the last before the post-history instructions.
        let newest = &p.messages[p.messages.len() - 2];
        assert!(newest.content.starts_with("29 "));
        // Even a context too small for anything keeps the message being answered.
        let tiny = prompt(&history, 200);
        assert_eq!(tiny.history_used, 1);
    }

    #[test]
    fn a_system_prompt_replaces_ours_and_can_include_it() {
        let mut persona = persona();
        persona.system_prompt = "{{original}} Never break the fourth wall.".into();
        let history = turns(&[(Role::User, "Hi")]);
        let p = build(&Input {
            persona: &persona,
            user_name: "Ann",
            history: &history,
            context_tokens: 4096,
            max_tokens: 100,
        });
        assert!(
            p.messages[0]
                .content
                .starts_with("You are Luna, talking with Ann.")
        );
        assert!(
            p.messages[0]
                .content
                .contains("Never break the fourth wall.")
        );
    }

    /// Properties of `build` over any history, any lorebook and any window: proptest
    /// generates the inputs and shrinks a failure to its smallest case.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn role() -> impl Strategy<Value = Role> {
            prop_oneof![Just(Role::User), Just(Role::Assistant)]
        }

        fn history() -> impl Strategy<Value = Vec<Turn>> {
            prop::collection::vec(
                (role(), "\\PC{0,200}").prop_map(|(role, content)| Turn::new(role, content)),
                0..30,
            )
        }

        fn lorebook() -> impl Strategy<Value = Vec<LoreEntry>> {
            let entry = (
                prop::collection::vec("[a-zA-Z]{0,6}", 0..3),
                prop::collection::vec("[a-zA-Z]{0,6}", 0..2),
                "\\PC{0,80}",
                any::<[bool; 5]>(),
                -5i64..5,
            )
                .prop_map(
                    |(keys, secondary_keys, content, flags, insertion_order)| LoreEntry {
                        keys,
                        secondary_keys,
                        content,
                        enabled: flags[0],
                        constant: flags[1],
                        selective: flags[2],
                        case_sensitive: flags[3],
                        insertion_order,
                        after_char: flags[4],
                    },
                );
            prop::collection::vec(entry, 0..8)
        }

        proptest! {
            #[test]
            fn the_newest_history_that_fits_goes_in_whole_and_in_order(
                history in history(),
                lorebook in lorebook(),
                user in "\\PC{0,30}",
                context in 0u32..3000,
                max_tokens in 0u32..600,
            ) {
                let persona = Persona { lorebook, ..persona() };
                let p = build(&Input {
                    persona: &persona,
                    user_name: &user,
                    history: &history,
                    context_tokens: context,
                    max_tokens,
                });
                prop_assert_eq!(p.messages[0].role, Role::System);
                // The message being answered always goes in.
                prop_assert!(p.history_used <= history.len());
                prop_assert_eq!(p.history_used == 0, history.is_empty());
                // The kept turns are the newest ones, unchanged and in order.
                let kept = &history[history.len() - p.history_used..];
                let sent: Vec<&str> = p.messages[1..=p.history_used]
                    .iter()
                    .map(|m| &*m.content)
                    .collect();
                let expected: Vec<&str> = kept.iter().map(|t| &*t.message.content).collect();
                prop_assert_eq!(sent, expected);
                // The estimate is what was sent.
                let total: u32 = p
                    .messages
                    .iter()
                    .map(|m| estimate_tokens(&m.content) + PER_MESSAGE)
                    .sum();
                prop_assert_eq!(p.estimated_tokens, total);
                // Within the window (beyond it only by the one message that must go in)…
                let room = context.saturating_sub(max_tokens);
                let cost = |t: &Turn| estimate_tokens(&t.message.content) + PER_MESSAGE;
                if p.history_used > 1 {
                    prop_assert!(p.estimated_tokens <= room, "{} > {room}", p.estimated_tokens);
                }
                // …and as full as it can be: the next older turn would not have fitted.
                if p.history_used >= 1 && p.history_used < history.len() {
                    let next = &history[history.len() - p.history_used - 1];
                    prop_assert!(p.estimated_tokens + cost(next) > room);
                }
                // Lorebook entries used exist, are enabled and are listed once each.
                let mut seen = p.lore_used.clone();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), p.lore_used.len());
                for i in &p.lore_used {
                    prop_assert!(persona.lorebook[*i].enabled);
                }
            }
        }
    }
}
