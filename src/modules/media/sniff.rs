//! What a file is, decided from its first bytes (never from its name or the client's claim),
//! and the allowlist of what may be uploaded.

/// The three kinds of media an upload declares (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Audio,
    Video,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "image" => Some(Self::Image),
            "audio" => Some(Self::Audio),
            "video" => Some(Self::Video),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

/// A format on the allowlist: the type we serve it as and the extension of its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub kind: Kind,
    pub content_type: &'static str,
    pub extension: &'static str,
}

/// Bytes read before deciding: enough for every signature below and for the markup check.
pub const SNIFF_BYTES: usize = 4096;

/// The allowlist: `infer`'s MIME type for a signature, and how we describe and serve it.
const ALLOWED: &[(&str, Format)] = &[
    ("image/jpeg", format(Kind::Image, "image/jpeg", "jpg")),
    ("image/png", format(Kind::Image, "image/png", "png")),
    ("image/webp", format(Kind::Image, "image/webp", "webp")),
    ("image/gif", format(Kind::Image, "image/gif", "gif")),
    ("audio/mpeg", format(Kind::Audio, "audio/mpeg", "mp3")),
    ("audio/ogg", format(Kind::Audio, "audio/ogg", "ogg")),
    ("audio/x-wav", format(Kind::Audio, "audio/wav", "wav")),
    ("audio/m4a", format(Kind::Audio, "audio/mp4", "m4a")),
    ("video/mp4", format(Kind::Video, "video/mp4", "mp4")),
    ("video/webm", format(Kind::Video, "video/webm", "webm")),
];

const fn format(kind: Kind, content_type: &'static str, extension: &'static str) -> Format {
    Format {
        kind,
        content_type,
        extension,
    }
}

/// The format of a file from its first bytes, if it is on the allowlist.
pub fn sniff(head: &[u8]) -> Option<Format> {
    let found = infer::get(head)?;
    ALLOWED
        .iter()
        .find(|(mime, _)| *mime == found.mime_type())
        .map(|(_, format)| *format)
}

/// The format we stored under `content_type` (to name a download).
pub fn by_content_type(content_type: &str) -> Option<Format> {
    ALLOWED
        .iter()
        .map(|(_, format)| *format)
        .find(|format| format.content_type == content_type)
}

/// Whether the start of a file also reads as markup or script a browser could run: the mark
/// of a polyglot (a valid image header followed by HTML, SVG or JavaScript). Such files are
/// refused even though their signature is allowed. Served files carry `nosniff` and a
/// sandboxing CSP as well; this keeps them out of the store in the first place.
pub fn looks_like_markup(head: &[u8]) -> bool {
    const MARKERS: &[&[u8]] = &[
        b"<html",
        b"<!doctype",
        b"<script",
        b"<svg",
        b"<?xml",
        b"<body",
        b"<iframe",
        b"<object",
        b"<embed",
        b"javascript:",
    ];
    // The start is what a browser sniffs; a caller may hand more (a whole first chunk).
    let lower = head[..head.len().min(SNIFF_BYTES)].to_ascii_lowercase();
    MARKERS
        .iter()
        .any(|marker| lower.windows(marker.len()).any(|window| window == *marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn signatures_decide_and_names_do_not() {
        assert_eq!(sniff(PNG).map(|f| f.content_type), Some("image/png"));
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\0\x10JFIF\0").map(|f| f.kind),
            Some(Kind::Image)
        );
        assert_eq!(
            sniff(b"ID3\x04\0\0\0\0\0\0").map(|f| f.kind),
            Some(Kind::Audio)
        );
        assert_eq!(
            sniff(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom").map(|f| f.content_type),
            Some("video/mp4")
        );
        // Not on the allowlist: a PDF, an executable, text.
        assert_eq!(sniff(b"%PDF-1.7\n"), None);
        assert_eq!(sniff(b"MZ\x90\0\x03\0\0\0"), None);
        assert_eq!(sniff(b"hello, I am a picture, honestly"), None);
    }

    #[test]
    fn markup_after_a_valid_header_is_a_polyglot() {
        let mut polyglot = PNG.to_vec();
        polyglot.extend_from_slice(b"<HTML><script>alert(1)</script>");
        assert!(sniff(&polyglot).is_some());
        assert!(looks_like_markup(&polyglot));
        assert!(!looks_like_markup(PNG));
    }
}
