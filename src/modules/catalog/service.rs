//! The catalog's rules: who sees and edits what, the premium gate, ratings, listings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use moka::future::Cache;
use serde_json::{Value, json};
use uuid::Uuid;

use super::cache::ReadCache;
use super::cards::{self, CardError};
use super::listing::{self, Filters, Sort};
use super::rules::{Draft, Input, Visibility};
use super::store::{self, CategoryCount, CharacterRow};
use crate::config::Plans;
use crate::modules::identity::{AuditEntry, AuditLog, Outcome};
use crate::modules::media::MediaDirectory;
use crate::platform::db::{Db, DbError};
use crate::platform::http::Paging;
use crate::platform::http::{AppError, ErrorCode, FieldErrors, Role};
use crate::platform::redis::RedisPool;

/// How long a count of listed characters (and the category counts) may be reused. Other
/// people's new characters show up in totals within this time.
const COUNT_TTL: Duration = Duration::from_secs(10);

/// How long a page of the public listing may be reused. A change to a character made on
/// this instance (create, edit, delete, hide, rate) drops every cached page here at once;
/// another instance shows it within this time. Only the popularity counter of a new
/// conversation does not drop pages: `conversationCount` and the popular order may lag by
/// this much.
const PAGE_TTL: Duration = Duration::from_secs(2);

/// At most this many listed rows (summaries, without the long card fields) in cached pages.
const PAGE_CACHE_ROWS: u64 = 5_000;

/// A page of the public listing: what, in which order, from which row, how many.
type PageKey = (Filters, Sort, i64, i64);

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
    #[error("character card: {0}")]
    Card(#[from] CardError),
    /// Media refused or failed (an imported card's avatar, the avatar's public flag).
    #[error("media: {}", .0.message())]
    Media(AppError),
    /// The blocking task reading or writing a card panicked or was cancelled.
    #[error("card task failed")]
    TaskFailed,
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
            CatalogError::Card(CardError::Malformed(message)) => AppError::validation(
                format!("The character card is not valid: {message}."),
                json!({ "fields": { "card": message } }),
            ),
            CatalogError::Card(CardError::TooLarge(message)) => AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("The card is too large: {message}."),
            ),
            CatalogError::Card(CardError::Invalid(fields)) => fields.into_error(),
            CatalogError::Media(err) => err,
            CatalogError::TaskFailed => AppError::internal(anyhow::anyhow!("card task failed")),
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

    /// Whether everyone, anonymous callers included, may open the character: what the read
    /// cache may hold.
    pub fn anyone_may_see(row: &CharacterRow) -> bool {
        row.visibility != Visibility::Private.as_str() && row.hidden_at.is_none()
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

/// A card file ready to download.
pub struct CardFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct Service {
    pub(super) db: Db,
    audit: Arc<dyn AuditLog>,
    media: Arc<dyn MediaDirectory>,
    plans: Arc<Plans>,
    cache: ReadCache,
    listed_counts: Cache<Filters, i64>,
    listed_pages: Cache<PageKey, Arc<Vec<CharacterRow>>>,
    categories: Cache<(), Arc<Vec<CategoryCount>>>,
}

impl Service {
    pub fn new(
        db: Db,
        audit: Arc<dyn AuditLog>,
        media: Arc<dyn MediaDirectory>,
        redis: Option<RedisPool>,
        plans: Plans,
    ) -> Self {
        Self {
            db,
            audit,
            media,
            plans: Arc::new(plans),
            cache: ReadCache::new(redis),
            listed_counts: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(COUNT_TTL)
                .build(),
            listed_pages: Cache::builder()
                .max_capacity(PAGE_CACHE_ROWS)
                .weigher(|_, rows: &Arc<Vec<CharacterRow>>| {
                    u32::try_from(rows.len()).unwrap_or(u32::MAX).max(1)
                })
                .time_to_live(PAGE_TTL)
                .build(),
            categories: Cache::builder().time_to_live(COUNT_TTL).build(),
        }
    }

    /// A page of what `viewer` may list. The listed (public, not hidden) part is the same
    /// for everyone and is served from a short-lived cache; a signed-in user who owns
    /// characters outside it (private, unlisted or hidden) gets both sets merged by the
    /// database.
    pub async fn list(
        &self,
        viewer: &Viewer,
        filters: Filters,
        sort: Sort,
        page: i64,
        size: i64,
    ) -> Result<Page, CatalogError> {
        let owner = viewer.user_id;
        let (offset, size) = (page * size, size);
        let listed_page = self.listed_page(filters.clone(), sort, offset, size);
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
        let (listed_page, listed, own) = futures_util::try_join!(listed_page, listed, own)?;
        let content = match owner {
            Some(owner) if own > 0 => {
                let sql = listing::page(Some(owner), &filters, sort, offset, size);
                self.db
                    .run(move |conn| Ok::<_, CatalogError>(sql.load_characters(conn)?))
                    .await?
            }
            _ => listed_page.as_ref().clone(),
        };
        Ok(Page {
            content,
            total: listed + own,
        })
    }

    /// A page of the listed characters alone (what an anonymous caller sees).
    async fn listed_page(
        &self,
        filters: Filters,
        sort: Sort,
        offset: i64,
        size: i64,
    ) -> Result<Arc<Vec<CharacterRow>>, CatalogError> {
        let db = self.db.clone();
        self.listed_pages
            .try_get_with((filters.clone(), sort, offset, size), async move {
                let sql = listing::page(None, &filters, sort, offset, size);
                let rows = db
                    .run(move |conn| Ok::<_, CatalogError>(sql.load_characters(conn)?))
                    .await?;
                Ok::<_, CatalogError>(Arc::new(rows))
            })
            .await
            .map_err(CatalogError::Shared)
    }

    /// A character changed in a way listings show: drop its cached detail (here and in
    /// Redis) and every cached page here.
    async fn changed(&self, id: Uuid) {
        self.cache.invalidate(id).await;
        self.listed_pages.invalidate_all();
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
        let row = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::find(conn, id)?))
            .await?;
        match row {
            Some(row) if viewer.can_see(&row) => Ok(row),
            _ => Err(CatalogError::NotFound),
        }
    }

    /// The detail answer of a character anyone may see, when the read cache has it.
    pub async fn cached_detail(&self, id: Uuid) -> Option<bytes::Bytes> {
        self.cache.get(id).await
    }

    /// Keeps the detail answer of a character anyone may see, read at `read_at`.
    pub async fn remember_detail(&self, id: Uuid, body: bytes::Bytes, read_at: Instant) {
        self.cache.put(id, body, read_at).await;
    }

    /// The average, the count and the viewer's own stars.
    pub async fn rating(
        &self,
        viewer: &Viewer,
        id: Uuid,
    ) -> Result<(f32, i32, Option<i16>), CatalogError> {
        let rater = viewer.user_id;
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
            Some(row) if viewer.can_see(&row) => Ok((row.rating, row.rating_count, mine)),
            _ => Err(CatalogError::NotFound),
        }
    }

    /// Creating characters is for plans that include it (and for admins).
    fn may_create(&self, viewer: &Viewer) -> Result<Uuid, CatalogError> {
        let user = viewer.user_id.ok_or(CatalogError::NotFound)?;
        let allowed = self.plans.get(&viewer.tier).custom_characters;
        if allowed || viewer.role >= Role::Admin {
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
        let owner = self.may_create(viewer)?;
        let mut errors = FieldErrors::new();
        let draft = Draft::default().apply(input, &mut errors);
        let draft = Self::checked(draft, errors)?;
        self.check_avatar(owner, None, draft.avatar_media_id)
            .await?;
        let id = Uuid::now_v7();
        let row = self
            .db
            .run(move |conn| {
                Ok::<_, CatalogError>(store::insert(conn, id, owner, &draft, &json!({}))?)
            })
            .await?;
        self.listed_pages.invalidate_all();
        self.sync_avatars([row.avatar_media_id]).await?;
        Ok(row)
    }

    /// A new avatar must be an image the character's owner uploaded (422 otherwise).
    async fn check_avatar(
        &self,
        owner: Uuid,
        before: Option<Uuid>,
        after: Option<Uuid>,
    ) -> Result<(), CatalogError> {
        match after {
            Some(id) if after != before => {
                if self
                    .media
                    .usable(owner, id)
                    .await
                    .map_err(CatalogError::Media)?
                {
                    Ok(())
                } else {
                    let mut errors = FieldErrors::new();
                    errors.add("avatarMediaId", "must be the id of an image you uploaded");
                    Err(CatalogError::Invalid(errors))
                }
            }
            _ => Ok(()),
        }
    }

    /// Tells media which avatars anyone may download: those of a character anyone may see
    /// (public and not hidden). Run after every change that may move that line.
    async fn sync_avatars(
        &self,
        avatars: impl IntoIterator<Item = Option<Uuid>>,
    ) -> Result<(), CatalogError> {
        let mut avatars: Vec<Uuid> = avatars.into_iter().flatten().collect();
        avatars.dedup();
        for avatar in avatars {
            let public = self
                .db
                .run(move |conn| Ok::<_, CatalogError>(store::avatar_is_public(conn, avatar)?))
                .await?;
            self.media
                .set_public(avatar, public)
                .await
                .map_err(CatalogError::Media)?;
        }
        Ok(())
    }

    /// Media `avatar` was deleted: the characters that had it have none (the handler of
    /// media's `media.removed` job calls this).
    pub async fn forget_avatar(&self, avatar: Uuid) -> Result<(), CatalogError> {
        let ids = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::forget_avatar(conn, avatar)?))
            .await?;
        for id in ids {
            self.changed(id).await;
        }
        Ok(())
    }

    /// Creates a character from a card file (JSON, PNG or CHARX); a premium feature like
    /// creating one by hand. A PNG's image (a CHARX's main icon) becomes the avatar.
    pub async fn import(
        &self,
        viewer: &Viewer,
        file: Vec<u8>,
        visibility: Option<Visibility>,
    ) -> Result<CharacterRow, CatalogError> {
        let owner = self.may_create(viewer)?;
        // Inflating and decoding a file of megabytes is CPU work: not on an async worker.
        let imported = tokio::task::spawn_blocking(move || cards::import(&file))
            .await
            .map_err(|_| CatalogError::TaskFailed)??;
        let mut draft = imported.draft;
        // A category another installation has and we do not is not the importer's fault.
        let categories = self.categories().await?;
        if !categories.iter().any(|c| c.slug == draft.category) {
            draft.category = Draft::default().category;
        }
        if let Some(visibility) = visibility {
            draft.visibility = visibility;
        }
        let id = Uuid::now_v7();
        // The card's picture becomes the owner's media (checked, stripped and counted like
        // an upload), and the avatar.
        if let Some(avatar) = imported.avatar {
            let media = self
                .media
                .store_image(owner, &viewer.tier, avatar.bytes)
                .await
                .map_err(CatalogError::Media)?;
            draft.avatar_media_id = Some(media);
        }
        let extra = imported.card_extra;
        let row = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::insert(conn, id, owner, &draft, &extra)?))
            .await?;
        self.listed_pages.invalidate_all();
        self.sync_avatars([row.avatar_media_id]).await?;
        tracing::info!(%id, spec = imported.spec, container = imported.container, "card imported");
        Ok(row)
    }

    /// An image's bytes (a character's avatar, for an export).
    pub async fn media_read(&self, id: Uuid) -> Result<Option<bytes::Bytes>, CatalogError> {
        self.media.read(id).await.map_err(CatalogError::Media)
    }

    /// Drops a character's cached detail (here and in Redis).
    pub async fn forget_cached(&self, id: Uuid) {
        self.changed(id).await;
    }

    /// The avatar's image, to put in an exported PNG card.
    async fn avatar_image(&self, row: &CharacterRow) -> Result<Option<bytes::Bytes>, CatalogError> {
        match row.avatar_media_id {
            Some(id) => self.media.read(id).await.map_err(CatalogError::Media),
            None => Ok(None),
        }
    }

    /// The character as a V3 card: JSON, or a PNG that also carries a V2 copy.
    pub async fn export_card(
        &self,
        viewer: &Viewer,
        id: Uuid,
        png: bool,
    ) -> Result<CardFile, CatalogError> {
        let row = self.get(viewer, id).await?;
        let extra = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::card_extra(conn, id)?))
            .await?;
        let v3 = cards::export_v3(&row, &extra);
        let name = file_name(&row.name);
        if !png {
            let bytes = serde_json::to_vec_pretty(&v3).unwrap_or_default();
            return Ok(CardFile {
                name: format!("{name}.json"),
                bytes,
            });
        }
        let v2 = cards::export_v2(&row, &extra);
        let image = self.avatar_image(&row).await?;
        let bytes = tokio::task::spawn_blocking(move || {
            cards::export_png_with(&v3, &v2, image.as_deref(), &extra)
        })
        .await
        .map_err(|_| CatalogError::TaskFailed)??;
        Ok(CardFile {
            name: format!("{name}.png"),
            bytes,
        })
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
        if let Some(owner) = row.owner_id {
            self.check_avatar(owner, row.avatar_media_id, draft.avatar_media_id)
                .await?;
        }
        let updated = self
            .db
            .run(move |conn| Ok::<_, CatalogError>(store::update(conn, id, &draft)?))
            .await?;
        self.changed(id).await;
        self.sync_avatars([row.avatar_media_id, updated.avatar_media_id])
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
        self.changed(id).await;
        // The picture stays the owner's media; it is just no longer anyone's avatar.
        self.sync_avatars([row.avatar_media_id]).await?;
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
        // The role before the character: a user learns nothing about which ids exist.
        if !viewer.moderates() {
            return Err(CatalogError::Forbidden(
                "Only moderators can hide characters.",
            ));
        }
        let row = self.get(viewer, id).await?;
        let stored_reason = reason.clone();
        let updated = self
            .db
            .run(move |conn| {
                Ok::<_, CatalogError>(store::set_hidden(
                    conn,
                    id,
                    hidden,
                    stored_reason.as_deref(),
                )?)
            })
            .await?;
        self.changed(id).await;
        self.sync_avatars([updated.avatar_media_id]).await?;
        let action = if hidden {
            "character.hide"
        } else {
            "character.unhide"
        };
        let change = (
            json!({ "hidden": row.hidden_at.is_some() }),
            json!({ "hidden": hidden, "reason": reason }),
        );
        self.audit_staff(action, viewer, &row, Some(change)).await;
        Ok(updated)
    }

    async fn audit_staff(
        &self,
        action: &str,
        viewer: &Viewer,
        row: &CharacterRow,
        change: Option<(Value, Value)>,
    ) {
        let (old, new) = change.unzip();
        let mut entry = AuditEntry::new(action, Outcome::Success)
            .resource("character", row.id)
            .change(old, new);
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

    /// Characters for staff to moderate (moderators and admins).
    pub async fn staff_list(
        &self,
        viewer: &Viewer,
        hidden: Option<bool>,
        search: Option<String>,
        paging: Paging,
    ) -> Result<(Vec<store::StaffRow>, i64), CatalogError> {
        if !viewer.moderates() {
            return Err(CatalogError::Forbidden(
                "Only moderators can list characters for moderation.",
            ));
        }
        Ok(self
            .db
            .run(move |conn| {
                store::staff_list(conn, hidden, search.as_deref(), paging).map_err(DbError::from)
            })
            .await?)
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
        self.changed(id).await;
        Ok((rating, count, stars))
    }

    pub async fn record_conversation_started(&self, id: Uuid) -> Result<(), DbError> {
        self.db
            .run(move |conn| {
                store::increment_conversations(conn, id).map_err(DbError::Query)?;
                Ok::<_, DbError>(())
            })
            .await?;
        self.cache.invalidate(id).await;
        Ok(())
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

/// A download name made of the character's name: letters, digits, `-` and `_` only, so it
/// is safe in a header whatever the name holds.
fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let trimmed = cleaned.trim_matches('_');
    if trimmed.is_empty() {
        "character".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The editable fields of a stored character.
pub fn draft_of(row: &CharacterRow) -> Draft {
    Draft {
        name: row.name.clone(),
        description: row.description.clone(),
        avatar_media_id: row.avatar_media_id,
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
