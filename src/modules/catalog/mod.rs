#![doc = include_str!("README.md")]

mod api;
mod cache;
mod cards;
mod demo;
mod listing;
mod lorebook;
mod personal;
mod rules;
mod schema;
mod service;
mod store;

use std::sync::Arc;

use actix_web::web;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::modules::identity::AuditLog;
use crate::modules::media::Media;
use crate::platform::Platform;
use crate::platform::db::DbError;
use crate::platform::http::{AppError, Routes};
pub use demo::{DemoCharacter, seed as seed_demo_characters};

/// One lorebook entry, as a prompt builder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoreEntry {
    pub keys: Vec<String>,
    pub secondary_keys: Vec<String>,
    pub content: String,
    pub enabled: bool,
    pub constant: bool,
    pub selective: bool,
    pub case_sensitive: bool,
    pub insertion_order: i64,
    /// `position: "after_char"` (after the character definition) rather than before it.
    pub after_char: bool,
}

/// Everything a prompt needs about a character. `creator_notes` is deliberately absent: it is
/// for people and never goes to a model.
#[derive(Debug, Clone)]
pub struct Persona {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    pub avatar_url: Option<String>,
    pub category: String,
    pub traits: Vec<String>,
    pub greeting: String,
    pub alternate_greetings: Vec<String>,
    pub tone: String,
    pub interests: Vec<String>,
    pub personality_summary: String,
    pub scenario: String,
    pub example_dialogue: String,
    pub system_prompt: String,
    pub post_history_instructions: String,
    pub nsfw: bool,
    pub lorebook: Vec<LoreEntry>,
}

/// A character card file read without storing anything: see [`check_card`].
#[derive(Debug)]
pub struct CardCheck {
    pub name: String,
    /// `v1`, `v2` or `v3`.
    pub spec: &'static str,
    /// `json`, `png` or `charx`.
    pub container: &'static str,
    /// The card written back by our exporter, as a PNG.
    pub rewritten: Vec<u8>,
}

/// Reads a card file exactly as `POST /characters/import` does and writes it back as
/// `card.png` would, storing nothing. The entry point of the fuzz target in `fuzz/`.
pub fn check_card(file: &[u8]) -> Result<CardCheck, String> {
    let checked = cards::check(file).map_err(|e| e.to_string())?;
    Ok(CardCheck {
        name: checked.name,
        spec: checked.spec,
        container: checked.container,
        rewritten: checked.rewritten,
    })
}

/// The page query of an anonymous search (`GET /characters?search=…&size=…`, first page,
/// default sort), values inlined as SQL literals. For `EXPLAIN` and the search benchmark.
pub fn search_statement(search: &str, size: i64) -> String {
    listing::inlined_search(search, size)
}

/// Where a character's avatar (media) is served.
pub fn avatar_url(media: Option<Uuid>) -> Option<String> {
    media.map(Media::url)
}

/// What other modules may ask the catalog (chat, and later privacy).
pub trait CharacterDirectory: Send + Sync {
    /// The persona of a character `viewer` may talk to (their own, or a public or unlisted
    /// one that is not hidden); `None` otherwise, exactly as if it did not exist.
    fn persona(
        &self,
        character_id: Uuid,
        viewer: Uuid,
    ) -> BoxFuture<'_, Result<Option<Persona>, DbError>>;

    /// Counts a new conversation with the character (its `conversationCount`).
    fn record_conversation_started(&self, character_id: Uuid)
    -> BoxFuture<'_, Result<(), DbError>>;

    /// The ids of the characters `owner` created (for export and erasure).
    fn owned_by(&self, owner: Uuid) -> BoxFuture<'_, Result<Vec<Uuid>, DbError>>;
}

/// The catalog module: construct once in `app.rs`, mount its routes, hand its directory to
/// chat.
#[derive(Clone)]
pub struct Catalog {
    service: service::Service,
}

impl Catalog {
    pub fn new(
        platform: &Platform,
        audit: Arc<dyn AuditLog>,
        media: Arc<dyn crate::modules::media::MediaDirectory>,
    ) -> Self {
        Self {
            service: service::Service::new(
                platform.db.clone(),
                audit,
                media,
                platform.redis.clone(),
                platform.settings.plans.clone(),
            ),
        }
    }

    pub fn routes(&self, routes: &mut Routes) {
        routes
            .config()
            .app_data(web::Data::new(self.service.clone()));
        api::routes(routes);
    }

    /// This module's part of the OpenAPI document (paths relative to `/api/v1`).
    pub fn api_docs() -> utoipa::openapi::OpenApi {
        api::docs()
    }

    /// Media `id` was deleted: characters that had it as avatar have none.
    pub async fn forget_avatar(&self, id: Uuid) -> Result<(), AppError> {
        Ok(self.service.forget_avatar(id).await?)
    }

    /// Catalog's share of a person's data. `transfer_public`: an erased creator's public
    /// characters stay, owned by the installation, instead of being deleted.
    pub fn personal_data(
        &self,
        transfer_public: bool,
    ) -> Arc<dyn crate::platform::personal::PersonalData> {
        Arc::new(personal::Share {
            service: self.service.clone(),
            transfer_public,
        })
    }

    pub fn directory(&self) -> Arc<dyn CharacterDirectory> {
        Arc::new(self.clone())
    }
}

impl CharacterDirectory for Catalog {
    fn persona(
        &self,
        character_id: Uuid,
        viewer: Uuid,
    ) -> BoxFuture<'_, Result<Option<Persona>, DbError>> {
        Box::pin(async move {
            let row = self.service.find_for(viewer, character_id).await?;
            Ok(row.map(|row| Persona {
                id: row.id,
                owner_id: row.owner_id,
                lorebook: row
                    .lorebook
                    .as_ref()
                    .map(lorebook::entries)
                    .unwrap_or_default(),
                name: row.name,
                description: row.description,
                avatar_url: avatar_url(row.avatar_media_id),
                category: row.category,
                traits: row.traits,
                greeting: row.greeting,
                alternate_greetings: row.alternate_greetings,
                tone: row.tone,
                interests: row.interests,
                personality_summary: row.personality_summary,
                scenario: row.scenario,
                example_dialogue: row.example_dialogue,
                system_prompt: row.system_prompt,
                post_history_instructions: row.post_history_instructions,
                nsfw: row.nsfw,
            }))
        })
    }

    fn record_conversation_started(
        &self,
        character_id: Uuid,
    ) -> BoxFuture<'_, Result<(), DbError>> {
        Box::pin(self.service.record_conversation_started(character_id))
    }

    fn owned_by(&self, owner: Uuid) -> BoxFuture<'_, Result<Vec<Uuid>, DbError>> {
        Box::pin(self.service.owned_ids(owner))
    }
}
