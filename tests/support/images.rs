//! Real image files made on the spot.

use std::io::Write;

/// A real PNG: `side`×`side` pixels of one colour, then `padding` bytes of metadata in a
/// `tEXt` chunk (so a file of any size can be made that is still a valid PNG; stripped of
/// its metadata it is `png(side, 0)` exactly).
pub fn png(side: u32, padding: usize) -> Vec<u8> {
    png_sized(side, side, padding)
}

pub fn png_sized(width: u32, height: u32, padding: usize) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &header);
    if padding > 0 {
        let mut text = b"Comment\0GPS 48.8584 N 2.2945 E ".to_vec();
        text.extend(std::iter::repeat_n(b'x', padding));
        chunk(&mut out, b"tEXt", &text);
    }
    let mut row = vec![0u8]; // no filter
    row.extend([200u8, 120, 40].repeat(usize::try_from(width).unwrap()));
    let rows = row.repeat(usize::try_from(height).unwrap());
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&rows).unwrap();
    chunk(&mut out, b"IDAT", &encoder.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}
