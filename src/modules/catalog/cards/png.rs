//! Cards inside PNG files: the card is a `tEXt` chunk (`ccv3` for V3, `chara` for V1/V2)
//! holding base64 of the UTF-8 JSON. We walk the chunk list ourselves rather than decode the
//! image: nothing here needs pixels, every chunk we do not own must pass through byte for
//! byte (RisuAI's `risuai`, colour profiles…), and an image decoder would re-encode them.

use super::CardError;

pub const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Larger than this many pixels is refused before anything else is read: such an image is a
/// decompression bomb for whoever decodes it later (thumbnails, browsers).
pub const MAX_PIXELS: u64 = 40_000_000;

/// The `tEXt` keywords that carry a card, compared case-insensitively.
const CARD_KEYWORDS: [&str; 2] = ["ccv3", "chara"];

struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// The whole chunk as it sits in the file: length, type, data and CRC.
    raw: &'a [u8],
}

/// Every chunk of `png` in order, up to and including `IEND`; a truncated or mislabelled
/// file is an error, never a panic.
fn chunks(png: &[u8]) -> Result<Vec<Chunk<'_>>, CardError> {
    let mut rest = png
        .strip_prefix(SIGNATURE.as_slice())
        .ok_or_else(|| CardError::malformed("the file is not a PNG image"))?;
    let mut found = Vec::new();
    loop {
        let truncated = || CardError::malformed("the PNG image is truncated");
        let header = rest.get(..8).ok_or_else(truncated)?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = [header[4], header[5], header[6], header[7]];
        let total = length.checked_add(12).ok_or_else(truncated)?;
        let raw = rest.get(..total).ok_or_else(truncated)?;
        found.push(Chunk {
            kind,
            data: &raw[8..8 + length],
            raw,
        });
        rest = &rest[total..];
        if &kind == b"IEND" {
            return Ok(found);
        }
    }
}

/// A `tEXt` chunk's keyword, when it names a card.
fn card_keyword<'a>(chunk: &Chunk<'a>) -> Option<(&'static str, &'a [u8])> {
    if &chunk.kind != b"tEXt" {
        return None;
    }
    let split = chunk.data.iter().position(|&b| b == 0)?;
    let keyword = &chunk.data[..split];
    CARD_KEYWORDS
        .into_iter()
        .find(|k| keyword.eq_ignore_ascii_case(k.as_bytes()))
        .map(|k| (k, &chunk.data[split + 1..]))
}

/// What a card PNG holds: the card's base64 text and the image without card chunks.
pub struct CardPng<'a> {
    pub text: &'a [u8],
    pub keyword: &'static str,
    pub image: Vec<u8>,
}

pub fn read(png: &[u8]) -> Result<CardPng<'_>, CardError> {
    let chunks = chunks(png)?;
    let header = chunks
        .first()
        .filter(|c| &c.kind == b"IHDR" && c.data.len() >= 8)
        .ok_or_else(|| CardError::malformed("the PNG image has no IHDR header"))?;
    let width = u32::from_be_bytes([
        header.data[0],
        header.data[1],
        header.data[2],
        header.data[3],
    ]);
    let height = u32::from_be_bytes([
        header.data[4],
        header.data[5],
        header.data[6],
        header.data[7],
    ]);
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(CardError::TooLarge(format!(
            "the image is {width}×{height} pixels; at most {MAX_PIXELS} pixels are accepted"
        )));
    }
    let mut best: Option<(&'static str, &[u8])> = None;
    for chunk in &chunks {
        if let Some((keyword, text)) = card_keyword(chunk) {
            // `ccv3` wins over `chara` whatever their order; the first of a kind wins ties.
            let better = match best {
                None => true,
                Some((current, _)) => current == "chara" && keyword == "ccv3",
            };
            if better {
                best = Some((keyword, text));
            }
        }
    }
    let (keyword, text) = best.ok_or_else(|| {
        CardError::malformed("the PNG image has no character card (no tEXt chunk chara or ccv3)")
    })?;
    Ok(CardPng {
        text,
        keyword,
        image: without_cards(&chunks),
    })
}

/// The `tEXt` chunks that are not a card (another app's data, such as RisuAI's), as
/// keyword and text: they travel with the card, not with the avatar (which media strips).
pub fn other_texts(png: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CardError> {
    Ok(chunks(png)?
        .iter()
        .filter(|c| &c.kind == b"tEXt" && card_keyword(c).is_none())
        .filter_map(|c| {
            let split = c.data.iter().position(|&b| b == 0)?;
            let keyword = std::str::from_utf8(&c.data[..split]).ok()?;
            Some((keyword.to_owned(), c.data[split + 1..].to_vec()))
        })
        .collect())
}

/// The image again, minus any card chunks.
fn without_cards(chunks: &[Chunk<'_>]) -> Vec<u8> {
    let size = chunks.iter().map(|c| c.raw.len()).sum::<usize>() + SIGNATURE.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(SIGNATURE);
    for chunk in chunks.iter().filter(|c| card_keyword(c).is_none()) {
        out.extend_from_slice(chunk.raw);
    }
    out
}

/// `png` with its card chunks replaced by `texts` (keyword, base64 text), written just
/// before `IEND` in the order given. Every other chunk passes through unchanged.
pub fn write(png: &[u8], texts: &[(&str, &[u8])]) -> Result<Vec<u8>, CardError> {
    let chunks = chunks(png)?;
    let extra: usize = texts.iter().map(|(k, t)| k.len() + t.len() + 13).sum();
    let mut out = Vec::with_capacity(png.len() + extra);
    out.extend_from_slice(SIGNATURE);
    for chunk in chunks.iter().filter(|c| card_keyword(c).is_none()) {
        if &chunk.kind == b"IEND" {
            for (keyword, text) in texts {
                let mut data = Vec::with_capacity(keyword.len() + 1 + text.len());
                data.extend_from_slice(keyword.as_bytes());
                data.push(0);
                data.extend_from_slice(text);
                push_chunk(&mut out, b"tEXt", &data)?;
            }
        }
        out.extend_from_slice(chunk.raw);
    }
    Ok(out)
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Result<(), CardError> {
    let length = u32::try_from(data.len())
        .map_err(|_| CardError::TooLarge("the card does not fit in a PNG chunk".into()))?;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    Ok(())
}

/// A plain PNG (no card), for characters whose avatar is not stored here. 256×256, one
/// colour; built once from nothing so the repository holds no binary for it.
pub fn placeholder() -> Vec<u8> {
    use std::io::Write;
    const SIDE: u32 = 256;
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&SIDE.to_be_bytes());
    header.extend_from_slice(&SIDE.to_be_bytes());
    // 8-bit RGB, deflate, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut row = vec![0u8];
    for _ in 0..SIDE {
        row.extend_from_slice(&[0x5b, 0x4b, 0x8a]);
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let pixels = (0..SIDE).try_for_each(|_| encoder.write_all(&row));
    let compressed = pixels.and_then(|()| encoder.finish()).unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(SIGNATURE);
    // Writing to a Vec cannot fail and these chunks are small.
    let _ = push_chunk(&mut out, b"IHDR", &header);
    let _ = push_chunk(&mut out, b"IDAT", &compressed);
    let _ = push_chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_texts(texts: &[(&str, &[u8])]) -> Vec<u8> {
        write(&placeholder(), texts).unwrap()
    }

    #[test]
    fn ccv3_is_preferred_whatever_the_order_and_case() {
        let png = with_texts(&[("chara", b"two"), ("CCV3", b"three")]);
        let card = read(&png).unwrap();
        assert_eq!((card.keyword, card.text), ("ccv3", b"three".as_slice()));
        assert_eq!(card.image, placeholder());
    }

    #[test]
    fn writing_replaces_card_chunks_and_keeps_the_rest() {
        let mut png = placeholder();
        // A foreign chunk before IEND must survive, byte for byte.
        let iend = png.len() - 12;
        let mut foreign = Vec::new();
        push_chunk(&mut foreign, b"tEXt", b"risuai\0payload").unwrap();
        png.splice(iend..iend, foreign.iter().copied());
        let once = write(&png, &[("chara", b"old")]).unwrap();
        let twice = write(&once, &[("ccv3", b"new"), ("chara", b"v2")]).unwrap();
        assert!(twice.windows(foreign.len()).any(|w| w == foreign));
        let card = read(&twice).unwrap();
        assert_eq!(card.text, b"new");
        assert_eq!(card.image, png);
        assert!(!twice.windows(3).any(|w| w == b"old"));
    }

    #[test]
    fn broken_files_are_errors() {
        let png = with_texts(&[("chara", b"x")]);
        for cut in [0, 7, 8, 12, 20, png.len() - 1] {
            assert!(read(&png[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(read(&placeholder()), Err(CardError::Malformed(_))));
    }

    #[test]
    fn huge_dimensions_are_refused_as_too_large() {
        let mut png = with_texts(&[("chara", b"x")]);
        // IHDR data starts after the signature (8), length (4) and type (4).
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(read(&png), Err(CardError::TooLarge(_))));
    }
}
