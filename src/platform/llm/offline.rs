//! The built-in reply engine: a scripted persona responder. It is not a language model and
//! says so in its name. It answers in the character's voice from its tone, traits and
//! interests and from the user's last message, picks its phrasing with the request's seed
//! (the same seed, the same reply), and streams word by word like a model would. With no
//! user message yet it says the character's greeting.

use std::time::Duration;

use futures_util::{StreamExt, stream};

use super::{Event, EventStream, LanguageModel, Request, Role, Speaker, Usage, estimate_tokens};

pub const MODEL_NAME: &str = "companion-offline (scripted persona responder, not a language model)";

pub struct OfflineEngine {
    word_delay: Duration,
}

impl OfflineEngine {
    pub fn new(word_delay: Duration) -> Self {
        Self { word_delay }
    }
}

/// splitmix64: small, fast, and the same everywhere.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let index = usize::try_from(self.next() % items.len() as u64).unwrap_or(0);
        items.get(index)
    }
}

const COMMON: &[&str] = &[
    "about",
    "after",
    "again",
    "because",
    "before",
    "could",
    "doing",
    "every",
    "going",
    "have",
    "just",
    "know",
    "like",
    "maybe",
    "really",
    "should",
    "something",
    "that",
    "there",
    "their",
    "these",
    "thing",
    "think",
    "this",
    "today",
    "want",
    "what",
    "when",
    "where",
    "which",
    "while",
    "with",
    "would",
    "your",
    "yours",
];

/// The word of the user's message most worth answering to: the longest that is not filler.
fn topic(message: &str) -> Option<String> {
    message
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .filter(|w| w.chars().count() >= 4)
        .filter(|w| !COMMON.contains(&w.to_lowercase().as_str()))
        .max_by_key(|w| w.chars().count())
        .map(str::to_owned)
}

/// Openers by tone: the character's tone picks the family, the seed the line.
fn openers(tone: &str) -> &'static [&'static str] {
    let tone = tone.to_lowercase();
    if ["playful", "cheerful", "funny", "witty", "energetic"]
        .iter()
        .any(|t| tone.contains(t))
    {
        &[
            "Oh, I love this!",
            "Ha, now you have my attention.",
            "Well, well, well!",
        ]
    } else if ["formal", "wise", "calm", "serene", "scholarly"]
        .iter()
        .any(|t| tone.contains(t))
    {
        &[
            "That is worth a moment's thought.",
            "A fair point.",
            "Let us consider that.",
        ]
    } else {
        &[
            "I'm glad you told me.",
            "Mm, I hear you.",
            "Thank you for sharing that.",
        ]
    }
}

/// The whole reply, before streaming.
pub fn compose(speaker: &Speaker, last_user: Option<&str>, seed: u64) -> String {
    let Some(message) = last_user.map(str::trim).filter(|m| !m.is_empty()) else {
        return if speaker.greeting.trim().is_empty() {
            format!("Hello! I'm {}.", speaker.name)
        } else {
            speaker.greeting.clone()
        };
    };
    let mut dice = Dice(seed ^ 0x5eed);
    let user = if speaker.user_name.is_empty() {
        "friend"
    } else {
        &speaker.user_name
    };
    let mut parts = vec![(*dice.pick(openers(&speaker.tone)).unwrap_or(&"")).to_owned()];
    if let Some(topic) = topic(message) {
        let lines = [
            format!("You mention {topic}, and now I can't stop thinking about it."),
            format!("{topic}, you say? Tell me more."),
            format!("I keep turning {topic} over in my mind."),
        ];
        parts.push(dice.pick(&lines).cloned().unwrap_or_default());
    }
    if message.ends_with('?') {
        parts.push("That's a good question, and I'll answer honestly: I'm not sure yet.".into());
    }
    if let Some(interest) = dice.pick(&speaker.interests) {
        parts.push(format!(
            "It reminds me of {interest}, which I never tire of."
        ));
    }
    if let Some(quality) = dice.pick(&speaker.traits) {
        parts.push(format!(
            "You know me, {}, always {}.",
            user,
            quality.to_lowercase()
        ));
    }
    let closers = [
        format!("What about you, {user}?"),
        "Go on, I'm listening.".to_owned(),
        "What happened next?".to_owned(),
    ];
    parts.push(dice.pick(&closers).cloned().unwrap_or_default());
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

impl LanguageModel for OfflineEngine {
    fn name(&self) -> &str {
        MODEL_NAME
    }

    fn stream(&self, request: Request) -> EventStream {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| &*m.content);
        let speaker = request.speaker.clone().unwrap_or_default();
        let reply = compose(&speaker, last_user, request.seed);
        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        // Words with the space that follows them, so the pieces join back exactly.
        let mut words: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
        let limit = usize::try_from(request.max_tokens).unwrap_or(usize::MAX);
        let reason = if words.len() > limit {
            words.truncate(limit);
            "length"
        } else {
            "stop"
        };
        let completion_tokens = u32::try_from(words.len()).unwrap_or(u32::MAX);
        let delay = self.word_delay;
        let texts = stream::iter(words).then(move |word| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(Event::Text(word))
        });
        let finished = stream::iter([Ok(Event::Finished {
            reason: reason.to_owned(),
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
            }),
        })]);
        texts.chain(finished).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::llm::Message;

    fn luna() -> Speaker {
        Speaker {
            name: "Luna".into(),
            user_name: "Ann".into(),
            greeting: "Welcome, traveller.".into(),
            tone: "playful".into(),
            traits: vec!["Curious".into()],
            interests: vec!["the stars".into()],
        }
    }

    fn request(messages: Vec<Message>, seed: u64, max_tokens: u32) -> Request {
        Request {
            messages: messages.into(),
            max_tokens,
            temperature: 0.8,
            stop: Vec::new(),
            seed,
            speaker: Some(luna()),
        }
    }

    async fn text(engine: &OfflineEngine, request: Request) -> (String, Event) {
        let events: Vec<_> = engine.stream(request).collect().await;
        let mut text = String::new();
        let mut last = None;
        for event in events {
            match event.unwrap() {
                Event::Text(piece) => text.push_str(&piece),
                finished => last = Some(finished),
            }
        }
        (text, last.unwrap())
    }

    #[tokio::test]
    async fn it_answers_in_character_the_same_way_for_the_same_seed() {
        let engine = OfflineEngine::new(Duration::ZERO);
        let ask = vec![Message::new(Role::User, "Have you ever seen a lighthouse?")];
        let (one, finished) = text(&engine, request(ask.clone(), 7, 500)).await;
        let (two, _) = text(&engine, request(ask.clone(), 7, 500)).await;
        assert_eq!(one, two);
        assert!(one.contains("lighthouse"), "{one}");
        assert!(
            one.contains("the stars") && one.contains("curious"),
            "{one}"
        );
        assert!(matches!(finished, Event::Finished { ref reason, .. } if reason == "stop"));
        let others: Vec<String> = futures_util::future::join_all(
            (0..8).map(|seed| text(&engine, request(ask.clone(), seed, 500))),
        )
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
        assert!(
            others.iter().any(|t| t != &one),
            "the seed changes the phrasing"
        );
    }

    #[tokio::test]
    async fn without_a_user_message_it_greets_and_it_stops_at_max_tokens() {
        let engine = OfflineEngine::new(Duration::ZERO);
        let (greeting, _) = text(&engine, request(Vec::new(), 1, 500)).await;
        assert_eq!(greeting, "Welcome, traveller.");
        let ask = vec![Message::new(Role::User, "Tell me about dragons")];
        let (short, finished) = text(&engine, request(ask, 1, 3)).await;
        assert_eq!(short.split_whitespace().count(), 3);
        let Event::Finished { reason, usage } = finished else {
            unreachable!()
        };
        assert_eq!(reason, "length");
        assert_eq!(usage.unwrap().completion_tokens, 3);
    }
}
