//! CHARX: a zip with the V3 card at `card.json` and its assets referenced as
//! `embeded://path/in/zip`. We read the card and the main icon (it becomes the avatar);
//! other embedded assets are not kept yet (see the module README).

use std::io::{Cursor, Read};

use serde_json::Value;

use super::{Avatar, CardError, MAX_CARD_JSON, MAX_IMPORT_BYTES, sniff_image};

/// A zip with more entries than this is not a character card.
const MAX_ENTRIES: usize = 1_000;

pub const SIGNATURE: &[u8; 4] = b"PK\x03\x04";

pub struct Charx {
    pub card: Vec<u8>,
    pub avatar: Option<Avatar>,
}

fn zip_error(err: zip::result::ZipError) -> CardError {
    match err {
        zip::result::ZipError::FileNotFound => {
            CardError::malformed("the CHARX archive has no card.json at its root")
        }
        _ => CardError::malformed("the file is not a readable CHARX (zip) archive"),
    }
}

/// The bytes of one entry, refusing more than `limit` whatever the entry claims: a zip bomb
/// is caught by counting what inflates, not by trusting the header.
fn read_entry<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, CardError> {
    let entry = archive.by_name(name).map_err(zip_error)?;
    let mut bytes = Vec::new();
    entry
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| CardError::malformed(format!("{what} in the CHARX archive is corrupt")))?;
    if bytes.len() > limit {
        return Err(CardError::TooLarge(format!(
            "{what} inflates to more than {limit} bytes"
        )));
    }
    Ok(bytes)
}

pub fn read(bytes: &[u8]) -> Result<Charx, CardError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    if archive.len() > MAX_ENTRIES {
        return Err(CardError::TooLarge(format!(
            "the CHARX archive has more than {MAX_ENTRIES} entries"
        )));
    }
    let card = read_entry(&mut archive, "card.json", MAX_CARD_JSON, "card.json")?;
    let avatar = match icon_path(&card) {
        Some(path) => {
            let image = read_entry(&mut archive, &path, MAX_IMPORT_BYTES, "the icon")?;
            if sniff_image(&image).is_none() {
                return Err(CardError::malformed(
                    "the icon in the CHARX archive is not a PNG, JPEG or WebP image",
                ));
            }
            Some(Avatar { bytes: image })
        }
        None => None,
    };
    Ok(Charx { card, avatar })
}

/// The zip path of the main icon (`type: "icon"`, preferring `name: "main"`), when it is
/// embedded.
fn icon_path(card: &[u8]) -> Option<String> {
    let card: Value = serde_json::from_slice(card).ok()?;
    let assets = card.pointer("/data/assets")?.as_array()?;
    let icons: Vec<&Value> = assets
        .iter()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("icon"))
        .collect();
    let main = icons
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some("main"))
        .or_else(|| icons.first())?;
    main.get("uri")?
        .as_str()?
        .strip_prefix("embeded://")
        .map(str::to_owned)
}
