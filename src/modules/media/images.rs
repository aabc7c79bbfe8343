//! What is done to an uploaded image before anyone sees it: its size in pixels is read from
//! its header (nothing is decoded first), its metadata is taken out, and a thumbnail is made.
//!
//! Everything here is CPU work on bytes already in memory: callers run it on the blocking
//! pool or in a job, never on an async worker.

use std::io::Cursor;

use bytes::Bytes;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use img_parts::ImageEXIF;

use super::sniff::Format;

/// The most pixels an image may have (a decompression bomb has far more than its bytes
/// suggest: a 50 KiB PNG can claim 100,000 × 100,000).
pub const MAX_PIXELS: u64 = 40_000_000;

/// The longest edge of a thumbnail.
pub const THUMBNAIL_EDGE: u32 = 256;

/// Images up to this many pixels get their thumbnail while the upload is answered; larger
/// ones get it from a job, so one request never holds a 160 MB decoded bitmap.
pub const INLINE_THUMBNAIL_PIXELS: u64 = 4_000_000;

/// The most memory one decode may take: a 40-megapixel RGBA bitmap and some room.
const DECODE_ALLOC: u64 = MAX_PIXELS * 4 + 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the image is {width}×{height} pixels, more than {MAX_PIXELS} allowed")]
    TooManyPixels { width: u32, height: u32 },
    #[error("the image cannot be read: {0}")]
    Unreadable(String),
}

fn unreadable(error: impl std::fmt::Display) -> ImageError {
    ImageError::Unreadable(error.to_string())
}

fn image_format(format: Format) -> Result<ImageFormat, ImageError> {
    ImageFormat::from_mime_type(format.content_type)
        .ok_or_else(|| unreadable(format!("{} is not an image", format.content_type)))
}

fn reader(bytes: &[u8], format: Format) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(format)?);
    let mut limits = Limits::default();
    limits.max_alloc = Some(DECODE_ALLOC);
    reader.limits(limits);
    Ok(reader)
}

/// The image's width and height from its header alone; refused when it has too many pixels.
pub fn dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), ImageError> {
    let (width, height) = reader(bytes, format)?
        .into_dimensions()
        .map_err(unreadable)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooManyPixels { width, height });
    }
    Ok((width, height))
}

/// Decodes the whole image (after [`dimensions`] said it is not a bomb), turned upright.
fn decode(bytes: &[u8], format: Format) -> Result<DynamicImage, ImageError> {
    let mut decoder = reader(bytes, format)?.into_decoder().map_err(unreadable)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The EXIF orientation, if the image carries one that turns it.
fn orientation(bytes: &[u8], format: Format) -> Orientation {
    reader(bytes, format)
        .and_then(|reader| reader.into_decoder().map_err(unreadable))
        .and_then(|mut decoder| decoder.orientation().map_err(unreadable))
        .unwrap_or(Orientation::NoTransforms)
}

/// The image without its metadata: EXIF (camera, time, GPS position), XMP, IPTC, comments
/// and text chunks are dropped; the pixels, the colour profile and an animation's frames are
/// kept byte for byte. A photo that EXIF said to turn is turned and encoded again instead,
/// since without EXIF it would show sideways.
pub fn strip(bytes: Bytes, format: Format) -> Result<Bytes, ImageError> {
    let image_format = image_format(format)?;
    if image_format != ImageFormat::Gif && orientation(&bytes, format) != Orientation::NoTransforms
    {
        let upright = decode(&bytes, format)?;
        return encode(&upright, image_format);
    }
    match image_format {
        ImageFormat::Jpeg => {
            let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(bytes).map_err(unreadable)?;
            // JFIF (APP0), the ICC profile (APP2) and Adobe's colour transform (APP14) say how
            // to show the pixels; every other APPn and COM segment is metadata (EXIF, XMP,
            // IPTC, JFXX and MPF embedded pictures, comments).
            jpeg.segments_mut().retain(|segment| {
                let marker = segment.marker();
                let contents = segment.contents();
                match marker {
                    0xE0 => contents.starts_with(b"JFIF\0"),
                    0xE2 => contents.starts_with(b"ICC_PROFILE\0"),
                    0xEE => contents.starts_with(b"Adobe"),
                    0xE1..=0xEF | 0xFE => false,
                    _ => true,
                }
            });
            Ok(jpeg.encoder().bytes())
        }
        ImageFormat::Png => {
            let mut png = img_parts::png::Png::from_bytes(bytes).map_err(unreadable)?;
            png.chunks_mut()
                .retain(|chunk| PNG_KEPT.contains(&chunk.kind()));
            Ok(png.encoder().bytes())
        }
        ImageFormat::WebP => {
            let mut webp = img_parts::webp::WebP::from_bytes(bytes).map_err(unreadable)?;
            webp.remove_chunks_by_id(img_parts::webp::CHUNK_XMP);
            // Also rewrites the VP8X flags to say what is left.
            webp.set_exif(None);
            Ok(webp.encoder().bytes())
        }
        ImageFormat::Gif => strip_gif(&bytes),
        other => Err(unreadable(format!("{other:?} is not handled"))),
    }
}

/// The PNG chunks that draw the image; text, time, EXIF and private chunks are left out.
const PNG_KEPT: &[[u8; 4]] = &[
    *b"IHDR", *b"PLTE", *b"IDAT", *b"IEND", *b"tRNS", *b"gAMA", *b"cHRM", *b"sRGB", *b"iCCP",
    *b"sBIT", *b"bKGD", *b"pHYs", *b"acTL", *b"fcTL", *b"fdAT",
];

/// A GIF again from its screen, palettes, timing and still-compressed frames; comment and
/// application blocks (XMP among them) are not copied, except the loop count.
fn strip_gif(bytes: &[u8]) -> Result<Bytes, ImageError> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(bytes).map_err(unreadable)?;
    let palette = decoder.global_palette().unwrap_or_default().to_vec();
    let mut out = Vec::with_capacity(bytes.len());
    {
        let mut encoder = gif::Encoder::new(&mut out, decoder.width(), decoder.height(), &palette)
            .map_err(unreadable)?;
        encoder.set_repeat(decoder.repeat()).map_err(unreadable)?;
        while let Some(frame) = decoder.read_next_frame().map_err(unreadable)? {
            encoder
                .write_lzw_pre_encoded_frame(frame)
                .map_err(unreadable)?;
        }
    }
    Ok(Bytes::from(out))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Bytes, ImageError> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            DynamicImage::ImageRgb8(image.to_rgb8())
                .write_with_encoder(encoder)
                .map_err(unreadable)?;
        }
        other => image.write_to(&mut out, other).map_err(unreadable)?,
    }
    Ok(Bytes::from(out.into_inner()))
}

/// A thumbnail made from an image.
pub struct Thumbnail {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// A thumbnail no larger than [`THUMBNAIL_EDGE`] on its longer side, upright, of the first
/// frame: JPEG when the image is opaque, lossless WebP when it has transparency.
pub fn thumbnail(bytes: &[u8], format: Format) -> Result<Thumbnail, ImageError> {
    dimensions(bytes, format)?;
    let image = decode(bytes, format)?;
    let small = if image.width() > THUMBNAIL_EDGE || image.height() > THUMBNAIL_EDGE {
        image.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE)
    } else {
        image
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if small.color().has_alpha() {
        let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
        DynamicImage::ImageRgba8(small.to_rgba8())
            .write_with_encoder(encoder)
            .map_err(unreadable)?;
        "image/webp"
    } else {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
        DynamicImage::ImageRgb8(small.to_rgb8())
            .write_with_encoder(encoder)
            .map_err(unreadable)?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes: Bytes::from(out.into_inner()),
        content_type,
    })
}
