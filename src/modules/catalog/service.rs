//! The catalog's rules: who sees and edits what, the premium gate, ratings, listings.

use std::sync::Arc;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use moka::future::Cache;
use serde_json::{Value, json};
use uuid::Uuid;

use super::listing::{self, Filters, Sort};
use super::rules::{Draft, Input, Visibility};
use super::store::{self, CategoryCount, CharacterRow};
use crate::modules::identity::{AuditEntry, AuditLog, Outcome};
use crate::platform::db::{Db, DbError};
use crate::platform::http::{AppError, ErrorCode, FieldErrors, Role};

/// How long a count of listed characters (and the category counts) may be reused. Other
/// people's new characters show up in totals within this time; pages are always fresh.
const COUNT_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("premium required")]
    PremiumRequired,
    #[error(transparent)]
    Db(#[from] DbError),
    /// A failure shared by every request that waited on the same cache fill.
    #[error("{0}")]
    Shared(Arc<CatalogError>),
}

impl From<DieselError> for CatalogError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Self::NotFound,
            // The category is checked by its foreign key, not by a query of its own.
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, ref info)
                if info.constraint_name() == Some("characters_category_fkey") =>
            {
                let mut errors = FieldErrors::new();
                errors.add(
                    "category",
                    "is not a known category (see GET /api/v1/categories)",
                );
                Self::Invalid(errors)
            }
            err => Self::Db(DbError::Query(err)),
        }
    }
}

impl From<CatalogError> for AppError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Invalid(fields) => fields.into_error(),
            CatalogError::NotFound => AppError::not_found(),
            CatalogError::Forbidden(message) => AppError::forbidden(message),
            CatalogError::PremiumRequired => AppError::new(
                ErrorCode::PremiumRequired,
                "Creating characters is a premium feature; upgrade your plan to create one.",
            ),
            CatalogError::Db(err) => err.into(),
            CatalogError::Shared(shared) => match Arc::try_unwrap(shared) {
                Ok(err) => err.into(),
                Err(shared) => match &*shared {
                    CatalogError::Db(db) if db.is_unavailable() => {
                        AppError::unavailable(anyhow::anyhow!("{shared}"))
                    }
                    _ => AppError::internal(anyhow::anyhow!("{shared}")),
                },
            },
        }
    }
}

/// Who is asking: anonymous, or a user with a role and a tier.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: Option<Uuid>,
    pub role: Role,
    pub tier: String,
}

impl Viewer {
    pub fn anonymous() -> Self {
        Self {
            user_id: None,
            role: Role::User,
            tier: "free".into(),
        }
    }

    fn owns(&self, row: &CharacterRow) -> bool {
        self.user_id.is_some() && row.owner_id == self.user_id
    }

    fn moderates(&self) -> bool {
        self.user_id.is_some() && self.role >= Role::Moderator
    }

    /// Owners see their characters. Others see public and unlisted ones; a hidden one only
    /// moderators. A private character is its owner's alone, moderators included.
    pub fn can_see(&self, row: &CharacterRow) -> bool {
        if self.owns(row) {
            return true;
        }
        if row.visibility == Visibility::Private.as_str() {
            return false;
        }
        row.hidden_at.is_none() || self.moderates()
    }

    fn can_edit(&self, row: &CharacterRow) -> bool {
        self.owns(row) || (self.moderates() && self.can_see(row))
    }
}

/// One page of a listing.
pub struct Page {
    pub content: Vec<CharacterRow>,
    pub total: i64,
}

#[derive(Clone)]
pub struct Service {
    db: Db,
    audit: Arc<dyn AuditLog>,
    listed_counts: Cache<Filters, i64>,
    categories: Cache<(), Arc<Vec<CategoryCount>>>,
}

impl Service {
    pub fn new(db: Db, audit: Arc<dyn AuditLog>) -> Self {
        Self {
            db,
            audit,
            listed_counts: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(COUNT_TTL)
                .build(),
            categories: Cache::builder().time_to_live(COUNT_TTL).build(),
        }
    }

    pub async fn list(
        &self,
        viewer: &Viewer,
        filters: Filters,
        sort: Sort,
        page: i64,
        size: i64,
    ) -> Result<Page, CatalogError> {
        let owner = viewer.user_id;
        let sql = listing::page(owner, &filters, sort, page * size, size);
        let content = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(sql.load_characters(conn)?));
        let listed = self.listed_count(filters.clone());
        let own = async {
            match owner {
                None => Ok(0),
                Some(owner) => {
                    let sql = listing::count_own_unlisted(owner, &filters);
                    self.db
                        .run(move |conn| Ok::<_, CatalogError>(sql.count(conn)?))
                        .await
                }
            }
        };
        let (content, listed, own) = futures_util::try_join!(content, listed, own)?;
        Ok(Page {
            content,
            total: listed + own,
        })
    }

    async fn listed_count(&self, filters: Filters) -> Result<i64, CatalogError> {
        let db = self.db.clone();
        let key = filters.clone();
        self.listed_counts
            .try_get_with(key, async move {
                let sql = listing::count_listed(&filters);
                db.run(move |conn| Ok::<_, CatalogError>(sql.count(conn)?))
                    .await
            })
            .await
            .map_err(CatalogError::Shared)
    }

    pub async fn categories(&self) -> Result<Arc<Vec<CategoryCount>>, CatalogError> {
        let db = self.db.clone();
        self.categories
            .try_get_with((), async move {
                let rows = db
                    .run(|conn| Ok::<_, CatalogError>(store::categories_with_counts(conn)?))
                    .await?;
                Ok::<_, CatalogError>(Arc::new(rows))
            })
            .await
            .map_err(CatalogError::Shared)
    }

    /// A character `viewer` may see, else `NotFound` (absent and not-yours look alike).
    pub async fn get(&self, viewer: &Viewer, id: Uuid) -> Result<CharacterRow, CatalogError> {
        Ok(self.detail(viewer, id, false).await?.0)
    }

    /// Like [`Service::get`], with the viewer's own rating when `with_rating`, in one trip
    /// to the database.
    pub async fn detail(
        &self,
        viewer: &Viewer,
        id: Uuid,
        with_rating: bool,
    ) -> Result<(CharacterRow, Option<i16>), CatalogError> {
        let rater = viewer.user_id.filter(|_| with_rating);
        let (row, mine) = self
            .db
            .run(move |conn| {
                let row = store::find(conn, id)?;
                let mine = match (&row, rater) {
                    (Some(_), Some(user)) => store::my_rating(conn, id, user)?,
                    _ => None,
                };
                Ok::<_, CatalogError>((row, mine))
            })
            .await?;
        match row {
            Some(row) if viewer.can_see(&row) => Ok((row, mine)),
            _ => Err(CatalogError::NotFound),
        }
    }

    /// Creating characters is for paid plans (and staff).
    fn may_create(viewer: &Viewer) -> Result<Uuid, CatalogError> {
        let user = viewer.user_id.ok_or(CatalogError::NotFound)?;
        let paid = matches!(viewer.tier.as_str(), "premium" | "enterprise");
        if paid || viewer.role >= Role::Admin {
            Ok(user)
        } else {
            Err(CatalogError::PremiumRequired)
        }
    }

    fn checked(draft: Draft, mut errors: FieldErrors) -> Result<Draft, CatalogError> {
        draft.validate(&mut errors);
        if errors.is_empty() {
            Ok(draft)
        } else {
            Err(CatalogError::Invalid(errors))
        }
    }

    pub async fn create(
        &self,
        viewer: &Viewer,
        input: Input,
    ) -> Result<CharacterRow, CatalogError> {
        let owner = Self::may_create(viewer)?;
        let mut errors = FieldErrors::new();
        let draft = Draft::default().apply(input, &mut errors);
        let draft = Self::checked(draft, errors)?;
        let id = Uuid::now_v7();
        self.db
            .run(move |conn| Ok(store::insert(conn, id, owner, &draft, &json!({}))?))
            .await
    }

    /// `PUT` (`replace`: absent fields reset) or `PATCH` (absent fields stay).
    pub async fn update(
        &self,
        viewer: &Viewer,
        id: Uuid,
        input: Input,
        replace: bool,
    ) -> Result<CharacterRow, CatalogError> {
        let row = self.get(viewer, id).await?;
        if !viewer.can_edit(&row) {
            return Err(CatalogError::NotFound);
        }
        let start = if replace {
            Draft::default()
        } else {
            draft_of(&row)
        };
        let mut errors = FieldErrors::new();
        let draft = start.apply(input, &mut errors);
        let draft = Self::checked(draft, errors)?;
        let updated = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::update(conn, id, &draft)?))
            .await?;
        if !viewer.owns(&row) {
            self.audit_staff("character.update", viewer, &row, None)
                .await;
        }
        Ok(updated)
    }

    pub async fn delete(&self, viewer: &Viewer, id: Uuid) -> Result<(), CatalogError> {
        let row = self.get(viewer, id).await?;
        if !viewer.can_edit(&row) {
            return Err(CatalogError::NotFound);
        }
        self.db
            .run(move |conn| Ok::<_, CatalogError>(store::delete(conn, id)?))
            .await?;
        if !viewer.owns(&row) {
            self.audit_staff("character.delete", viewer, &row, None)
                .await;
        }
        Ok(())
    }

    /// Moderators hide a character from everyone but its owner and staff, or show it again.
    pub async fn set_hidden(
        &self,
        viewer: &Viewer,
        id: Uuid,
        hidden: bool,
        reason: Option<String>,
    ) -> Result<CharacterRow, CatalogError> {
        let row = self.get(viewer, id).await?;
        if !viewer.moderates() {
            return Err(CatalogError::Forbidden(
                "Only moderators can hide characters.",
            ));
        }
        let updated = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::set_hidden(conn, id, hidden)?))
            .await?;
        let action = if hidden {
            "character.hide"
        } else {
            "character.unhide"
        };
        self.audit_staff(action, viewer, &row, reason).await;
        Ok(updated)
    }

    async fn audit_staff(
        &self,
        action: &str,
        viewer: &Viewer,
        row: &CharacterRow,
        reason: Option<String>,
    ) {
        let mut entry = AuditEntry::new(action, Outcome::Success)
            .resource("character", row.id)
            .change(None, reason.map(|r| json!({ "reason": r })));
        if let Some(actor) = viewer.user_id {
            entry = entry.actor(actor);
        }
        if let Some(owner) = row.owner_id {
            entry = entry.subject(owner);
        }
        if let Err(error) = self.audit.record(entry).await {
            tracing::error!(%error, action, "could not write the audit entry");
        }
    }

    /// One rating per user per character, updatable; not for one's own characters.
    pub async fn rate(
        &self,
        viewer: &Viewer,
        id: Uuid,
        stars: i16,
    ) -> Result<(f32, i32, i16), CatalogError> {
        let user = viewer.user_id.ok_or(CatalogError::NotFound)?;
        let row = self.get(viewer, id).await?;
        if viewer.owns(&row) {
            return Err(CatalogError::Forbidden(
                "You cannot rate your own character.",
            ));
        }
        let (rating, count) = self
            .db
            .transaction(move |conn| Ok::<_, CatalogError>(store::rate(conn, id, user, stars)?))
            .await?;
        Ok((rating, count, stars))
    }

    pub async fn record_conversation_started(&self, id: Uuid) -> Result<(), DbError> {
        self.db
            .run(move |conn| {
                store::increment_conversations(conn, id).map_err(DbError::Query)?;
                Ok(())
            })
            .await
    }

    pub async fn owned_ids(&self, owner: Uuid) -> Result<Vec<Uuid>, DbError> {
        self.db
            .run(move |conn| store::owned_ids(conn, owner).map_err(DbError::Query))
            .await
    }

    pub async fn find_for(&self, viewer: Uuid, id: Uuid) -> Result<Option<CharacterRow>, DbError> {
        let viewer = Viewer {
            user_id: Some(viewer),
            role: Role::User,
            tier: String::new(),
        };
        let row = self
            .db
            .run(move |conn| store::find(conn, id).map_err(DbError::Query))
            .await?;
        Ok(row.filter(|row| viewer.can_see(row)))
    }
}

/// The editable fields of a stored character.
pub fn draft_of(row: &CharacterRow) -> Draft {
    Draft {
        name: row.name.clone(),
        description: row.description.clone(),
        avatar_url: row.avatar_url.clone(),
        category: row.category.clone(),
        traits: row.traits.clone(),
        greeting: row.greeting.clone(),
        tone: row.tone.clone(),
        interests: row.interests.clone(),
        personality_summary: row.personality_summary.clone(),
        visibility: Visibility::parse(&row.visibility).unwrap_or(Visibility::Private),
        nsfw: row.nsfw,
        tags: row.tags.clone(),
        scenario: row.scenario.clone(),
        example_dialogue: row.example_dialogue.clone(),
        alternate_greetings: row.alternate_greetings.clone(),
        system_prompt: row.system_prompt.clone(),
        post_history_instructions: row.post_history_instructions.clone(),
        creator_notes: row.creator_notes.clone(),
        creator: row.creator.clone(),
        character_version: row.character_version.clone(),
        extensions: match &row.extensions {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        },
        lorebook: row.lorebook.clone(),
    }
}
