//! The browse and search query, built as SQL text with numbered parameters.
//!
//! - Anyone lists public characters that are not hidden; a signed-in user also lists their
//!   own (any visibility, hidden or not). The two sets are disjoint, so the user's page is a
//!   `UNION ALL` of each set's first `offset + size` rows in the same order: every part walks
//!   its own index (the partial indexes on public characters, `characters_owner_idx`).
//! - Search matches the full-text vector (name A, tags B, description C; every word as a
//!   prefix) **or** the name by trigram similarity (`%`: typos, "Serafina" for "Seraphina")
//!   or word similarity (`<%`: one word of a longer name).
//!   Both are GIN-indexed, so PostgreSQL answers with a `BitmapOr`, never a sequential scan.
//!   Ranking: exact name first, then the text rank (or, for a row found only by its name's
//!   trigrams, the name's similarity), then popularity.

use uuid::Uuid;

use super::store::{Bind, Sql};

/// Columns of [`super::store::CharacterRow`], in the table (the search vector is left out).
/// A listing shows no long card field, so those come back empty: PostgreSQL neither reads
/// nor sends a lorebook or an example dialogue for a page of twenty summaries, and a cached
/// page (`service.rs`) stays small.
const COLUMNS: &str = "c.id, c.owner_id, c.name, c.description, c.avatar_media_id, c.category, \
    c.traits, c.greeting, c.tone, c.interests, c.visibility, c.nsfw, c.tags, \
    '' AS scenario, c.personality_summary, '' AS example_dialogue, \
    '{}'::text[] AS alternate_greetings, '' AS system_prompt, \
    '' AS post_history_instructions, '' AS creator_notes, '' AS creator, \
    '' AS character_version, '{}'::jsonb AS extensions, NULL::jsonb AS lorebook, c.hidden_at, \
    c.rating_count, c.rating, c.conversation_count, c.created_at, c.updated_at";

const LISTED: &str = "c.visibility = 'public' AND c.hidden_at IS NULL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    Popular,
    Rating,
    New,
}

impl Sort {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "popular" => Some(Self::Popular),
            "rating" => Some(Self::Rating),
            "new" => Some(Self::New),
            _ => None,
        }
    }

    fn order(self) -> &'static str {
        match self {
            Self::Popular => "conversation_count DESC, id",
            Self::Rating => "rating DESC, rating_count DESC, id",
            Self::New => "created_at DESC, id",
        }
    }
}

/// What to list. `search` is already trimmed and non-empty when present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filters {
    pub category: Option<String>,
    pub tag: Option<String>,
    pub search: Option<String>,
}

/// The search words as a prefix `tsquery` ("drag & elf:*" style, every word a prefix). Only
/// letters and digits survive, so the text cannot carry tsquery syntax.
pub fn prefix_tsquery(search: &str) -> String {
    search
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(16)
        .map(|word| format!("{}:*", word.to_lowercase()))
        .collect::<Vec<_>>()
        .join(" & ")
}

struct Builder {
    binds: Vec<Bind>,
}

impl Builder {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// The filter conditions and, for a search, the rank columns.
    fn conditions(&mut self, filters: &Filters) -> (String, String) {
        let mut conditions = Vec::new();
        if let Some(category) = &filters.category {
            let p = self.bind(Bind::Text(category.clone()));
            conditions.push(format!("c.category = {p}"));
        }
        if let Some(tag) = &filters.tag {
            let p = self.bind(Bind::Text(tag.clone()));
            conditions.push(format!("c.tags @> ARRAY[{p}]::text[]"));
        }
        let mut rank = "false AS exact, 0::real AS score".to_owned();
        if let Some(search) = &filters.search {
            let q = self.bind(Bind::Text(search.clone()));
            let words = prefix_tsquery(search);
            if words.is_empty() {
                conditions.push(format!("({q} % c.name OR {q} <% c.name)"));
                rank = format!(
                    "lower(c.name) = lower({q}) AS exact, \
                     greatest(similarity({q}, c.name), word_similarity({q}, c.name)) AS score"
                );
            } else {
                let t = self.bind(Bind::Text(words));
                conditions.push(format!(
                    "(c.search @@ to_tsquery('simple', {t}) OR {q} % c.name OR {q} <% c.name)"
                ));
                // A text match is scored by its text rank, where the name (weight A)
                // outweighs tags and description; only a row found by its name's trigrams
                // alone (a typo) pays for the similarity functions. Scoring every text match
                // by both cost 40 % more on a broad search.
                rank = format!(
                    "lower(c.name) = lower({q}) AS exact, \
                     CASE WHEN c.search @@ to_tsquery('simple', {t}) \
                          THEN ts_rank(c.search, to_tsquery('simple', {t})) \
                          ELSE greatest(similarity({q}, c.name), word_similarity({q}, c.name)) \
                     END AS score"
                );
            }
        }
        let conditions = conditions
            .iter()
            .map(|c| format!(" AND {c}"))
            .collect::<String>();
        (conditions, rank)
    }
}

fn order(filters: &Filters, sort: Sort) -> String {
    if filters.search.is_some() {
        format!("exact DESC, score DESC, {}", sort.order())
    } else {
        sort.order().to_owned()
    }
}

/// One page of what `viewer` may list.
pub fn page(viewer: Option<Uuid>, filters: &Filters, sort: Sort, offset: i64, size: i64) -> Sql {
    let mut b = Builder { binds: Vec::new() };
    let (conditions, rank) = b.conditions(filters);
    let order = order(filters, sort);
    let text = match viewer {
        None => {
            let limit = b.bind(Bind::Int(size));
            let offset = b.bind(Bind::Int(offset));
            format!(
                "SELECT {COLUMNS}, {rank} FROM catalog.characters c \
                 WHERE {LISTED}{conditions} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
            )
        }
        Some(viewer) => {
            let v = b.bind(Bind::Uuid(viewer));
            let each = b.bind(Bind::Int(offset + size));
            let limit = b.bind(Bind::Int(size));
            let offset = b.bind(Bind::Int(offset));
            format!(
                "SELECT * FROM ( \
                   (SELECT {COLUMNS}, {rank} FROM catalog.characters c \
                    WHERE {LISTED}{conditions} ORDER BY {order} LIMIT {each}) \
                   UNION ALL \
                   (SELECT {COLUMNS}, {rank} FROM catalog.characters c \
                    WHERE c.owner_id = {v} AND NOT ({LISTED}){conditions} \
                    ORDER BY {order} LIMIT {each}) \
                 ) listed ORDER BY {order} LIMIT {limit} OFFSET {offset}"
            )
        }
    };
    Sql {
        text,
        binds: b.binds,
    }
}

/// How many listed (public, not hidden) characters match.
pub fn count_listed(filters: &Filters) -> Sql {
    let mut b = Builder { binds: Vec::new() };
    let (conditions, _) = b.conditions(filters);
    Sql {
        text: format!(
            "SELECT count(*) AS count FROM catalog.characters c WHERE {LISTED}{conditions}"
        ),
        binds: b.binds,
    }
}

/// How many of `owner`'s own unlisted characters (not public, or hidden) match.
pub fn count_own_unlisted(owner: Uuid, filters: &Filters) -> Sql {
    let mut b = Builder { binds: Vec::new() };
    let (conditions, _) = b.conditions(filters);
    let v = b.bind(Bind::Uuid(owner));
    Sql {
        text: format!(
            "SELECT count(*) AS count FROM catalog.characters c \
             WHERE c.owner_id = {v} AND NOT ({LISTED}){conditions}"
        ),
        binds: b.binds,
    }
}

/// [`page`] for an anonymous search, with each bind written as a literal in its place.
pub fn inlined_search(search: &str, size: i64) -> String {
    let filters = Filters {
        category: None,
        tag: None,
        search: Some(search.trim().to_owned()),
    };
    let sql = page(None, &filters, Sort::Popular, 0, size);
    let mut text = sql.text;
    // From the highest number down, so `$1` does not match the start of `$10`.
    for (index, bind) in sql.binds.iter().enumerate().rev() {
        let literal = match bind {
            Bind::Text(v) => format!("'{}'", v.replace('\'', "''")),
            Bind::Uuid(v) => format!("'{v}'::uuid"),
            Bind::Int(v) => v.to_string(),
        };
        text = text.replace(&format!("${}", index + 1), &literal);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_become_prefixes_and_lose_syntax() {
        assert_eq!(prefix_tsquery("Sera  dragon"), "sera:* & dragon:*");
        assert_eq!(prefix_tsquery("a|b & !c:*"), "a:* & b:* & c:*");
        assert_eq!(prefix_tsquery("!!!"), "");
    }

    #[test]
    fn the_inlined_search_quotes_its_text() {
        let sql = inlined_search("o'brien", 20);
        assert!(sql.contains("'o''brien'"), "{sql}");
        assert!(!sql.contains('$'), "{sql}");
        assert!(sql.contains("LIMIT 20 OFFSET 0"), "{sql}");
    }

    #[test]
    fn placeholders_are_numbered_in_bind_order() {
        let filters = Filters {
            category: Some("fantasy".into()),
            tag: None,
            search: Some("luna".into()),
        };
        let sql = page(Some(Uuid::nil()), &filters, Sort::Popular, 40, 20);
        assert_eq!(sql.binds.len(), 7);
        assert!(sql.text.contains("$7"));
        assert!(!sql.text.contains("$8"));
    }
}
