//! Reading a `multipart/form-data` upload as it arrives (RFC 7578), without copying the
//! file: every piece handed on is a slice of a buffer that came off the socket.
//!
//! This replaced actix-multipart, which copies each chunk of the body into a buffer of its
//! own and looks for the boundary one `\r` at a time. On a 100 MiB upload of binary data
//! that copy and that search were about a sixth of the server's time (`bench/RESULTS.md`,
//! Media). Here the delimiter (`CRLF--boundary`) is searched with one prepared
//! `memchr::memmem::Finder`, and bytes are copied only to join a chunk to the few bytes
//! before it that might begin a delimiter (a chunk that ends in `\r`, one in 256 of random
//! data) and to join a part's headers when they arrive in pieces.
//!
//! Limits: a part's headers are at most [`HEADER_BYTES`], a form has at most [`MAX_PARTS`]
//! parts, what is skipped unread (the preamble, the rest of a part the caller did not
//! read) is at most [`SKIP_BYTES`] in all, and a boundary is 1 to 70 characters (RFC 2046).
//! What follows the closing delimiter (the epilogue) is not read.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use actix_web::error::PayloadError;
use actix_web::http::header::{ContentDisposition, HeaderValue};
use actix_web::mime;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use memchr::memmem;

/// The longest header block of one part.
pub const HEADER_BYTES: usize = 8 * 1024;
/// The most parts one form may hold.
pub const MAX_PARTS: usize = 16;
/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;
/// The most bytes skipped unread, over the whole form: a stray field or a second file is
/// refused once it passes this, rather than read to its end.
pub const SKIP_BYTES: usize = 64 * 1024;
/// Spaces or tabs allowed after a delimiter, before its line ends (transport padding).
const MAX_PADDING: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("the body is not multipart/form-data with a boundary")]
    NotMultipart,
    #[error("the body ended before the form's closing boundary")]
    Incomplete,
    #[error("a boundary line is malformed")]
    Boundary,
    #[error("a part's headers are malformed")]
    Headers,
    #[error("a part's headers are longer than {HEADER_BYTES} bytes")]
    HeadersTooLong,
    #[error("a part has no form-data name")]
    NoName,
    #[error("the form has more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("the form holds more than {SKIP_BYTES} bytes that are not read")]
    TooMuchSkipped,
    #[error("the body could not be read: {0}")]
    Payload(#[from] PayloadError),
}

/// One field of the form, as its headers name it. (A file's name is not kept: what a file is
/// comes from its bytes, and its download is named after its id.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter, or inside a part's body: both read up to a delimiter.
    Preamble,
    Body,
    /// Just past a delimiter: `--` closes the form, a line end starts a part's headers.
    Delimited,
    Headers,
    Done,
}

/// A form read from a body stream, one part after another.
pub struct Form<S> {
    stream: S,
    /// What has arrived and is not handed on yet.
    buf: Bytes,
    /// Chunks taken from the body and not looked at yet.
    arrived: VecDeque<Bytes>,
    ended: bool,
    /// Finds the delimiter: `\r\n--` and the boundary (its needle).
    finder: memmem::Finder<'static>,
    state: State,
    parts: usize,
    skipped: usize,
    /// The task that last asked the body for more, woken when the form is dropped.
    waker: Option<Waker>,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: Option<&HeaderValue>) -> Result<String, FormError> {
    let mime: mime::Mime = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or(FormError::NotMultipart)?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != mime::FORM_DATA {
        return Err(FormError::NotMultipart);
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .ok_or(FormError::NotMultipart)?;
    let boundary = boundary.as_str();
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return Err(FormError::NotMultipart);
    }
    Ok(boundary.to_owned())
}

impl<S> Form<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    pub fn new(stream: S, boundary: &str) -> Self {
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Self {
            stream,
            // The first delimiter has no line end before it: one is supplied, so that every
            // delimiter is found the same way.
            buf: Bytes::from_static(b"\r\n"),
            arrived: VecDeque::new(),
            ended: false,
            finder,
            state: State::Preamble,
            parts: 0,
            skipped: 0,
            waker: None,
        }
    }

    /// The next part's name, after skipping whatever is left of the current one; `None`
    /// once the form is closed.
    pub async fn next_part(&mut self) -> Result<Option<Part>, FormError> {
        std::future::poll_fn(|cx| self.poll_next_part(cx)).await
    }

    /// The next piece of the current part's body; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, FormError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The current part's body as a stream of pieces.
    pub fn body(&mut self) -> impl Stream<Item = Result<Bytes, FormError>> + Unpin + '_ {
        futures_util::stream::poll_fn(|cx| self.poll_chunk(cx))
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, FormError>>> {
        if self.state != State::Body {
            return Poll::Ready(None);
        }
        match ready!(self.poll_until_delimiter(cx)) {
            Ok(Some(piece)) => Poll::Ready(Some(Ok(piece))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    /// The next piece before a delimiter, or `None` once the delimiter is passed (the state
    /// is then `Delimited`).
    fn poll_until_delimiter(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, FormError>> {
        loop {
            if let Some(at) = self.finder.find(&self.buf) {
                if at > 0 {
                    // The piece first; the delimiter is passed on the next call.
                    return Poll::Ready(Ok(Some(self.buf.split_to(at))));
                }
                self.buf.advance(self.finder.needle().len());
                self.state = State::Delimited;
                return Poll::Ready(Ok(None));
            }
            let kept = self.delimiter_start();
            if self.buf.len() > kept {
                let piece = self.buf.split_to(self.buf.len() - kept);
                return Poll::Ready(Ok(Some(piece)));
            }
            if !ready!(self.poll_fill(cx))? {
                return Poll::Ready(Err(self.fail(FormError::Incomplete)));
            }
        }
    }

    /// How many bytes at the end of the buffer might begin a delimiter that the next
    /// chunk completes.
    fn delimiter_start(&self) -> usize {
        let delimiter = self.finder.needle();
        let from = self.buf.len().saturating_sub(delimiter.len() - 1);
        let tail = &self.buf[from..];
        memchr::memchr_iter(b'\r', tail)
            .find(|&at| delimiter.starts_with(&tail[at..]))
            .map_or(0, |at| tail.len() - at)
    }

    /// Reads one more chunk onto the buffer; `false` once the body has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, FormError>> {
        if self.arrived.is_empty() && !self.ended {
            if self
                .waker
                .as_ref()
                .is_none_or(|waker| !waker.will_wake(cx.waker()))
            {
                self.waker = Some(cx.waker().clone());
            }
            // Whatever the body holds is taken at once (its chunks, uncopied), as
            // actix-multipart does: actix-http then never waits, paused, on a reader that has
            // stopped asking (see `Drop`).
            loop {
                match Pin::new(&mut self.stream).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => self.arrived.push_back(chunk),
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(self.fail(error.into())));
                    }
                    Poll::Ready(None) => {
                        self.ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let Some(chunk) = self.arrived.pop_front() else {
            return if self.ended {
                Poll::Ready(Ok(false))
            } else {
                Poll::Pending
            };
        };
        if self.buf.is_empty() {
            self.buf = chunk;
        } else if !chunk.is_empty() {
            let mut joined = BytesMut::with_capacity(self.buf.len() + chunk.len());
            joined.extend_from_slice(&self.buf);
            joined.extend_from_slice(&chunk);
            self.buf = joined.freeze();
        }
        Poll::Ready(Ok(true))
    }

    fn fail(&mut self, error: FormError) -> FormError {
        self.state = State::Done;
        self.buf = Bytes::new();
        self.arrived.clear();
        error
    }

    fn poll_next_part(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Part>, FormError>> {
        loop {
            match self.state {
                // The preamble, and what the caller left of a part, are skipped.
                State::Preamble | State::Body => {
                    if let Some(piece) = ready!(self.poll_until_delimiter(cx))? {
                        self.skipped += piece.len();
                        if self.skipped > SKIP_BYTES {
                            return Poll::Ready(Err(self.fail(FormError::TooMuchSkipped)));
                        }
                    }
                }
                State::Delimited => {
                    if self.buf.starts_with(b"--") {
                        self.state = State::Done;
                        self.buf = Bytes::new();
                        return Poll::Ready(Ok(None));
                    }
                    let padding = self
                        .buf
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    if padding > MAX_PADDING {
                        return Poll::Ready(Err(self.fail(FormError::Boundary)));
                    }
                    let rest = &self.buf[padding..];
                    if rest.starts_with(b"\r\n") {
                        self.buf.advance(padding + 2);
                        self.state = State::Headers;
                        continue;
                    }
                    // Too little to tell yet: nothing, `\r`, or a lone `-`.
                    let undecided =
                        b"\r\n".starts_with(rest) || (padding == 0 && b"--".starts_with(&self.buf));
                    if !undecided {
                        return Poll::Ready(Err(self.fail(FormError::Boundary)));
                    }
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Err(self.fail(FormError::Incomplete)));
                    }
                }
                State::Headers => {
                    if let Some(part) = self.take_headers()? {
                        return Poll::Ready(Ok(Some(part)));
                    }
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Err(self.fail(FormError::Incomplete)));
                    }
                }
                State::Done => return Poll::Ready(Ok(None)),
            }
        }
    }

    /// The part whose headers the buffer holds whole, if it does.
    fn take_headers(&mut self) -> Result<Option<Part>, FormError> {
        let end = if self.buf.starts_with(b"\r\n") {
            Some(2)
        } else {
            memmem::find(&self.buf, b"\r\n\r\n").map(|at| at + 4)
        };
        let Some(end) = end.filter(|&end| end <= HEADER_BYTES) else {
            if self.buf.len() >= HEADER_BYTES {
                return Err(self.fail(FormError::HeadersTooLong));
            }
            return Ok(None);
        };
        let head = self.buf.split_to(end);
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(self.fail(FormError::TooManyParts));
        }
        let part = parse_headers(&head).map_err(|error| self.fail(error))?;
        self.state = State::Body;
        Ok(Some(part))
    }
}

/// A form given up before its end (a refused upload) wakes the task that read it. That task
/// is also the connection's: actix-http stops reading a body whose reader has enough
/// buffered, and it learns that the reader is gone (so that it may drain the rest and send
/// the answer) only when it is polled again. actix-multipart behaves the same way: it wakes
/// when dropped, and takes all that has arrived whenever it reads (`poll_fill`). With
/// neither, a 413 to a chunked upload on the S3 store stalled until the client gave up in
/// about half the runs of `an_s3_store_keeps_nothing_of_a_refused_or_deleted_upload`; with
/// the wake alone in about one in a hundred; with both in none of 60 runs of 5 uploads.
impl<S> Drop for Form<S> {
    fn drop(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A part's name, from its `Content-Disposition: form-data` header.
fn parse_headers(head: &[u8]) -> Result<Part, FormError> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let disposition = match httparse::parse_headers(head, &mut headers) {
        Ok(httparse::Status::Complete((_, headers))) => {
            headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-disposition"))
                .ok_or(FormError::NoName)?
                .value
        }
        _ => return Err(FormError::Headers),
    };
    let value = HeaderValue::from_bytes(disposition).map_err(|_| FormError::Headers)?;
    let disposition = ContentDisposition::from_raw(&value).map_err(|_| FormError::Headers)?;
    if !disposition.is_form_data() {
        return Err(FormError::NoName);
    }
    let name = disposition.get_name().ok_or(FormError::NoName)?.to_owned();
    Ok(Part { name })
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    const BOUNDARY: &str = "XyZ-boundary-42";

    /// A file whose bytes come close to the delimiter in every way but the real one.
    fn tricky_file() -> Vec<u8> {
        let mut file = b"\0\0\0\x18ftypisom".to_vec();
        for near in [
            "\r\n--XyZ-boundary-4",
            "\r\n--XyZ-boundary",
            "--XyZ-boundary-42\r\n",
            "\r\r\n--XyZ",
            "\r\n-",
            "\r\n\r\n",
            "\r",
        ] {
            file.extend_from_slice(near.as_bytes());
            file.extend((0..37u8).map(|i| i.wrapping_mul(7)));
        }
        file.push(b'\r');
        file
    }

    fn form_body(file: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"a preamble, ignored\r\n");
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"type\"\r\n\r\nvideo");
        body.extend_from_slice(format!("\r\n--{BOUNDARY} \t\r\n").as_bytes());
        body.extend_from_slice(
            b"content-disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n\
              Content-Type: video/mp4\r\n\r\n",
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\nan epilogue").as_bytes());
        body
    }

    type Read = Vec<(Part, Vec<u8>)>;

    fn read(chunks: Vec<Bytes>) -> Result<Read, FormError> {
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let mut form = Form::new(stream, BOUNDARY);
        async move {
            let mut parts = Vec::new();
            while let Some(part) = form.next_part().await? {
                let mut body = Vec::new();
                while let Some(piece) = form.chunk().await {
                    body.extend_from_slice(&piece?);
                }
                parts.push((part, body));
            }
            Ok(parts)
        }
        .now_or_never()
        .expect("a stream of ready chunks never waits")
    }

    fn split(body: &[u8], size: usize) -> Vec<Bytes> {
        body.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    fn part(name: &str) -> Part {
        Part {
            name: name.to_owned(),
        }
    }

    #[test]
    fn a_form_reads_the_same_however_its_body_is_cut() {
        let file = tricky_file();
        let body = form_body(&file);
        let expected = vec![
            (part("type"), b"video".to_vec()),
            (part("file"), file.clone()),
        ];
        assert_eq!(read(vec![Bytes::from(body.clone())]).unwrap(), expected);
        for at in 0..=body.len() {
            let chunks = vec![
                Bytes::copy_from_slice(&body[..at]),
                Bytes::copy_from_slice(&body[at..]),
            ];
            assert_eq!(read(chunks).unwrap(), expected, "cut at {at}");
        }
        for size in [1, 2, 3, 7, 19, 64] {
            assert_eq!(
                read(split(&body, size)).unwrap(),
                expected,
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn a_file_is_handed_on_as_the_chunks_it_came_in() {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
        );
        let file: Bytes = (0..100_000u32)
            .map(|i| (i % 251) as u8 | 1)
            .collect::<Vec<_>>()
            .into();
        assert!(!file.ends_with(b"\r"));
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let chunks = vec![Bytes::from(head), file.clone(), Bytes::from(tail)];
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let mut form = Form::new(stream, BOUNDARY);
        async {
            assert_eq!(form.next_part().await.unwrap(), Some(part("file")));
            let piece = form.chunk().await.unwrap().unwrap();
            // The very bytes that arrived, not a copy of them.
            assert_eq!(piece.as_ptr(), file.as_ptr());
            assert_eq!(piece.len(), file.len());
            assert!(form.chunk().await.is_none());
            assert_eq!(form.next_part().await.unwrap(), None);
        }
        .now_or_never()
        .unwrap();
    }

    #[test]
    fn parts_left_unread_are_skipped() {
        let body = form_body(&tricky_file());
        let stream = futures_util::stream::iter(split(&body, 5).into_iter().map(Ok));
        let mut form = Form::new(stream, BOUNDARY);
        async {
            assert_eq!(form.next_part().await.unwrap(), Some(part("type")));
            assert_eq!(form.next_part().await.unwrap(), Some(part("file")));
            assert_eq!(form.next_part().await.unwrap(), None);
        }
        .now_or_never()
        .unwrap();
    }

    fn read_text(body: &str) -> Result<Read, FormError> {
        read(split(body.as_bytes(), 3))
    }

    #[test]
    fn broken_forms_are_refused() {
        let b = BOUNDARY;
        let field = |name: &str| {
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\nx\r\n")
        };
        // No closing delimiter, or no delimiter at all.
        let open = field("type");
        assert!(matches!(read_text(&open), Err(FormError::Incomplete)));
        assert!(matches!(read_text("just text"), Err(FormError::Incomplete)));
        assert!(matches!(read_text(""), Err(FormError::Incomplete)));
        // A delimiter followed by something else than `--` or a line end.
        let glued = format!("--{b}X\r\n\r\nx\r\n--{b}--");
        assert!(matches!(read_text(&glued), Err(FormError::Boundary)));
        // A part without a form-data name.
        let nameless = format!("--{b}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{b}--");
        assert!(matches!(read_text(&nameless), Err(FormError::NoName)));
        let headless = format!("--{b}\r\n\r\nx\r\n--{b}--");
        assert!(matches!(read_text(&headless), Err(FormError::NoName)));
        let attachment =
            format!("--{b}\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--{b}--");
        assert!(matches!(read_text(&attachment), Err(FormError::NoName)));
        let garbled = format!("--{b}\r\nno colon here\r\n\r\nx\r\n--{b}--");
        assert!(matches!(read_text(&garbled), Err(FormError::Headers)));
        // Headers past the limit, even before they end.
        let long = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Long: {}\r\n\r\nx\r\n--{b}--",
            "y".repeat(HEADER_BYTES)
        );
        assert!(matches!(read_text(&long), Err(FormError::HeadersTooLong)));
        let endless = format!("--{b}\r\nX-Long: {}", "y".repeat(2 * HEADER_BYTES));
        assert!(matches!(
            read_text(&endless),
            Err(FormError::HeadersTooLong)
        ));
        // Too many parts.
        let many = format!("{}--{b}--", field("a").repeat(MAX_PARTS + 1));
        assert!(matches!(read_text(&many), Err(FormError::TooManyParts)));
        let enough = format!("{}--{b}--", field("a").repeat(MAX_PARTS));
        assert_eq!(read_text(&enough).unwrap().len(), MAX_PARTS);
    }

    #[test]
    fn what_is_skipped_unread_is_limited() {
        let b = BOUNDARY;
        let big = |size: usize| {
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"stray\"\r\n\r\n{}\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nvideo\r\n--{b}--",
                "z".repeat(size)
            )
        };
        let skip_all = |body: String| {
            let stream =
                futures_util::stream::iter(split(body.as_bytes(), 4096).into_iter().map(Ok));
            let mut form = Form::new(stream, BOUNDARY);
            async move {
                let mut names = Vec::new();
                while let Some(part) = form.next_part().await? {
                    names.push(part.name);
                }
                Ok::<_, FormError>(names)
            }
            .now_or_never()
            .unwrap()
        };
        // Both parts are skipped: the stray one and `type`'s five bytes.
        assert_eq!(skip_all(big(SKIP_BYTES - 5)).unwrap(), ["stray", "type"]);
        assert!(matches!(
            skip_all(big(SKIP_BYTES - 4)),
            Err(FormError::TooMuchSkipped)
        ));
        // Read parts do not count.
        assert_eq!(
            read(split(big(4 * SKIP_BYTES).as_bytes(), 999))
                .unwrap()
                .len(),
            2
        );
        // Nor does a preamble within the limit, but a longer one does.
        let preambled = |size: usize| format!("{}\r\n{}", "p".repeat(size), big(0));
        assert_eq!(skip_all(preambled(SKIP_BYTES - 10)).unwrap().len(), 2);
        assert!(matches!(
            skip_all(preambled(SKIP_BYTES + 1)),
            Err(FormError::TooMuchSkipped)
        ));
    }

    #[test]
    fn the_boundary_comes_from_a_form_data_content_type() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        let found = boundary(Some(&value("multipart/form-data; boundary=\"a b\"")));
        assert_eq!(found.unwrap(), "a b");
        let found = boundary(Some(&value("Multipart/Form-Data; boundary=abc")));
        assert_eq!(found.unwrap(), "abc");
        for refused in [
            "application/json",
            "multipart/mixed; boundary=abc",
            "multipart/form-data",
            "multipart/form-data; boundary=\"\"",
            &format!("multipart/form-data; boundary={}", "a".repeat(71)),
        ] {
            let refused_value = value(refused);
            assert!(
                matches!(boundary(Some(&refused_value)), Err(FormError::NotMultipart)),
                "{refused}"
            );
        }
        assert!(matches!(boundary(None), Err(FormError::NotMultipart)));
    }
}
