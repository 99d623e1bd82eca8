//! [`ResponseBody`]: the one body type every bulwark layer answers with, and request-body
//! buffering with a size limit ([`to_bytes_limited`]).
//!
//! A layer either passes the inner service's body through untouched or answers with bytes it
//! built itself (a rejection, a cached or replayed response, a fallback). [`ResponseBody`] is an
//! enum of those cases, so the pass-through path costs no allocation and no boxing, plus the
//! case of a body a layer began to read to keep it (the cache, idempotency) and then found too
//! large to keep, or failing: the bytes already read come first, then the rest of the body (or
//! its error), so the client still gets the answer exactly as the service sent it.
//! Layers that buffer a request body hand the inner service a [`RequestBody`] (the same type) so
//! it works with any body type, hyper's `Incoming` included.
//!
//! ```
//! use bulwark::body::{ResponseBody, to_bytes_limited};
//! use http_body_util::Full;
//! use bytes::Bytes;
//!
//! # tokio_test();
//! # fn tokio_test() {
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let body = ResponseBody::new(Full::new(Bytes::from_static(b"hello")));
//! let bytes = to_bytes_limited(body, 5).await.unwrap();
//! assert_eq!(bytes, "hello");
//!
//! let too_big = ResponseBody::<Full<Bytes>>::full(Bytes::from_static(b"hello!"));
//! assert!(to_bytes_limited(too_big, 5).await.unwrap_err().is_too_large());
//! # });
//! # }
//! ```

use std::{
    any::Any,
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::Rejection;

pin_project! {
    /// A body that is either the inner service's own body, passed through untouched, or bytes
    /// a bulwark layer produced (a rejection, a cached or replayed response, a fallback).
    ///
    /// Its error type is the inner body's, so wrapping never makes an infallible body fallible.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

/// The request-side name of [`ResponseBody`]: what a layer that buffered the request body
/// passes to its inner service.
pub type RequestBody<B> = ResponseBody<B>;

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        // The part read, then the rest of the body.
        Prefixed { prefix: Option<Bytes>, body: Pin<Box<B>> },
        // The part read, then the error the body failed with (always a `B::Error`).
        Failed { prefix: Option<Bytes>, error: Option<Box<dyn Any + Send + Sync>> },
    }
}

impl<B> ResponseBody<B> {
    /// Passes `body` through.
    #[inline]
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body of `bytes`.
    #[inline]
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full {
                data: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }

    /// An empty body.
    #[inline]
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }

    /// The bytes a layer already read from `rest`, then the rest of it: for a body a layer
    /// began to buffer (to store it) and then found too large to keep.
    pub fn prefixed(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Prefixed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body: rest,
            },
        }
    }

    /// The bytes a layer already read from a body, then `error`, the body's own error
    /// (`B::Error`) it failed with while being read: the client sees the failure as it
    /// happened.
    pub(crate) fn failed<E: Send + Sync + 'static>(prefix: Bytes, error: E) -> Self {
        Self {
            kind: Kind::Failed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                error: Some(Box::new(error)),
            },
        }
    }

    /// The inner body, if this is a pass-through body.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Full { .. } | Kind::Prefixed { .. } | Kind::Failed { .. } => None,
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Prefixed { prefix, .. } => f
                .debug_struct("ResponseBody::Prefixed")
                .field("prefix_len", &prefix.as_ref().map_or(0, Bytes::len))
                .finish_non_exhaustive(),
            Kind::Failed { prefix, .. } => f
                .debug_struct("ResponseBody::Failed")
                .field("prefix_len", &prefix.as_ref().map_or(0, Bytes::len))
                .finish_non_exhaustive(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Prefixed { prefix, body } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                None => body.as_mut().poll_frame(cx),
            },
            KindProj::Failed { prefix, error } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                // Always a `B::Error`: `failed` is only called with one.
                None => Poll::Ready(
                    error
                        .take()
                        .and_then(|e| e.downcast::<B::Error>().ok())
                        .map(|e| Err(*e)),
                ),
            },
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Prefixed { prefix, body } => prefix.is_none() && body.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Prefixed { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + extra);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            // Never exact: a server told the length would frame the prefix as the whole
            // answer and never poll the error, so the client would take a cut-off body for a
            // complete one. Without an upper bound it is sent chunked and broken off instead.
            Kind::Failed { prefix, .. } => {
                let mut hint = SizeHint::new();
                hint.set_lower(prefix.as_ref().map_or(0, |p| p.len() as u64));
                hint
            }
        }
    }
}

/// Why [`to_bytes_limited`] gave up.
#[derive(Debug)]
pub enum BufferError<E> {
    /// The body is longer than the limit (known from its size hint or found while reading).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body itself failed (the client went away, a broken chunked encoding, ...).
    Body(E),
    /// The body ended before the length it announced (its size hint's lower bound), or ran
    /// past its upper bound: what was read is not the body that was meant.
    WrongLength {
        /// The bytes the body gave.
        received: usize,
    },
}

impl<E> BufferError<E> {
    /// Whether the body was too large.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// The rejection to answer with: [`Rejection::PayloadTooLarge`] or
    /// [`Rejection::BodyReadFailed`].
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::TooLarge { limit } => Rejection::payload_too_large(*limit),
            Self::Body(_) | Self::WrongLength { .. } => Rejection::BodyReadFailed,
        }
    }
}

impl<E: fmt::Display> fmt::Display for BufferError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "body larger than {limit} bytes"),
            Self::Body(e) => write!(f, "body read failed: {e}"),
            Self::WrongLength { received } => write!(
                f,
                "body of {received} bytes does not match the length it announced"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BufferError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TooLarge { .. } | Self::WrongLength { .. } => None,
            Self::Body(e) => Some(e),
        }
    }
}

/// Reads a whole body into memory, refusing bodies longer than `limit` bytes.
///
/// A body whose size hint already exceeds the limit (a `Content-Length` that is too large) is
/// refused before anything is read. Trailers are dropped.
pub async fn to_bytes_limited<B>(body: B, limit: usize) -> Result<Bytes, BufferError<B::Error>>
where
    B: Body,
{
    let mut collect = Collect::new(&body, limit)?;
    let mut body = std::pin::pin!(body);
    std::future::poll_fn(|cx| collect.poll(body.as_mut(), cx)).await
}

/// The state of reading one body into memory up to a limit: the one limited reader every layer
/// uses ([`to_bytes_limited`], the fallback's inline future, [`read_limited`]), as a poll
/// function for futures that keep it inline instead of boxing an `async` block.
#[derive(Debug)]
pub(crate) struct Collect {
    /// The first chunk, kept as it came: a body of one chunk is never copied.
    first: Option<Bytes>,
    /// The chunks so far, once there is more than one.
    rest: Option<BytesMut>,
    len: usize,
    limit: usize,
    /// The body's size hint's upper bound, to size the buffer once and to check the length.
    upper: Option<u64>,
    /// The size hint's lower bound: a body that ends shorter was cut off.
    lower: u64,
    /// Whether a body over the limit gives back what was read (to pass it on), or nothing.
    keep_prefix: bool,
}

/// How a limited read ended, with what was read. Every prefix holds every byte taken from the
/// body, so what was read plus what the body still holds is the whole body.
#[derive(Debug)]
pub(crate) enum Read<E> {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Longer than the limit: the bytes read, the chunk that crossed the limit included (empty
    /// when the size hint said so before anything was read, or when no prefix was asked for).
    TooLarge(Bytes),
    /// The body failed after these bytes.
    Failed(Bytes, E),
    /// The body ended short of its size hint's lower bound, or went past its upper bound,
    /// after these bytes (a `Content-Length` it did not keep).
    WrongLength(Bytes),
}

impl Collect {
    /// Starts reading `body`, or refuses it at once if its size hint is over `limit`.
    pub(crate) fn new<B: Body>(body: &B, limit: usize) -> Result<Self, BufferError<B::Error>> {
        let hint = body.size_hint();
        if hint.lower() > limit as u64 {
            return Err(BufferError::TooLarge { limit });
        }
        Ok(Self {
            first: None,
            rest: None,
            len: 0,
            limit,
            upper: hint.upper(),
            lower: hint.lower(),
            keep_prefix: false,
        })
    }

    /// Reads what `body` has; ready with the whole body, or the reason it was given up.
    pub(crate) fn poll<B: Body>(
        &mut self,
        body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, BufferError<B::Error>>> {
        Poll::Ready(match ready!(self.poll_read(body, cx)) {
            Read::Whole(bytes) => Ok(bytes),
            Read::TooLarge(_) => Err(BufferError::TooLarge { limit: self.limit }),
            Read::Failed(_, e) => Err(BufferError::Body(e)),
            Read::WrongLength(bytes) => Err(BufferError::WrongLength {
                received: bytes.len(),
            }),
        })
    }

    /// Reads what `body` has; ready with how the read ended.
    #[inline]
    pub(crate) fn poll_read<B: Body>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Read<B::Error>> {
        while let Some(frame) = ready!(body.as_mut().poll_frame(cx)) {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Poll::Ready(Read::Failed(self.take(), e)),
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let n = data.remaining();
            self.len = self.len.saturating_add(n);
            let over = self.len > self.limit;
            if over && !self.keep_prefix {
                return Poll::Ready(Read::TooLarge(Bytes::new()));
            }
            match (&mut self.first, &mut self.rest) {
                (None, None) => self.first = Some(data.copy_to_bytes(n)),
                (Some(f), None) => {
                    // The whole body when its size is known, within the limit; never less than
                    // what is in hand (more, past the limit, when a prefix is kept).
                    let upper = usize::try_from(self.upper.unwrap_or(0)).unwrap_or(usize::MAX);
                    let capacity = upper.min(self.limit).max(self.len);
                    let mut buf = BytesMut::with_capacity(capacity);
                    buf.extend_from_slice(f);
                    buf.extend_from_slice(&data.copy_to_bytes(n));
                    self.first = None;
                    self.rest = Some(buf);
                }
                (_, Some(buf)) => buf.extend_from_slice(&data.copy_to_bytes(n)),
            }
            if over {
                return Poll::Ready(Read::TooLarge(self.take()));
            }
            if self.upper.is_some_and(|upper| self.len as u64 > upper) {
                return Poll::Ready(Read::WrongLength(self.take()));
            }
        }
        if (self.len as u64) < self.lower {
            return Poll::Ready(Read::WrongLength(self.take()));
        }
        Poll::Ready(Read::Whole(self.take()))
    }

    /// What was read so far, leaving the reader empty.
    #[inline]
    fn take(&mut self) -> Bytes {
        match (self.first.take(), self.rest.take()) {
            (_, Some(buf)) => buf.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        }
    }
}

/// What [`read_limited`] made of a body.
pub(crate) enum Limited<B: Body> {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Longer than the limit: what was read, and the body with the rest.
    TooLarge(Bytes, Pin<Box<B>>),
    /// The body failed after what was read.
    Failed(Bytes, B::Error),
    /// The body did not keep the length it announced: what was read, and the body (ended, or
    /// past its bound). Passed on as [`ResponseBody::prefixed`], it keeps announcing that
    /// length, so a server frames it as the cut-off answer it is.
    WrongLength(Bytes, Pin<Box<B>>),
}

/// Reads a body up to `limit` bytes, keeping what it cannot take whole so it can still be passed
/// on untouched: a longer body comes back with the bytes read so far and the rest
/// ([`ResponseBody::prefixed`]), a failing one with the bytes read and its error
/// ([`ResponseBody::failed`]). The cache and idempotency keep responses with it.
pub(crate) async fn read_limited<B: Body>(body: B, limit: usize) -> Limited<B> {
    let mut body = Box::pin(body);
    let Ok(mut collect) = Collect::new(&*body, limit) else {
        return Limited::TooLarge(Bytes::new(), body);
    };
    collect.keep_prefix = true;
    match std::future::poll_fn(|cx| collect.poll_read(body.as_mut(), cx)).await {
        Read::Whole(bytes) => Limited::Whole(bytes),
        Read::TooLarge(prefix) => Limited::TooLarge(prefix, body),
        Read::Failed(prefix, e) => Limited::Failed(prefix, e),
        Read::WrongLength(prefix) => Limited::WrongLength(prefix, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A body that yields its parts one frame at a time, with no size hint.
    struct Chunks(std::vec::IntoIter<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(
                self.0
                    .next()
                    .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))),
            )
        }
    }

    fn chunks(parts: Vec<&'static str>) -> Chunks {
        Chunks(parts.into_iter())
    }

    /// A body with an exact length hint whose stream ends early, or runs long.
    struct Announced(u64, Option<&'static str>);

    impl Body for Announced {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(
                self.1
                    .take()
                    .map(|s| Ok(Frame::data(Bytes::from_static(s.as_bytes())))),
            )
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }

    /// Found by `tests/hostile.rs`: a body that ended before its announced length was read as
    /// whole, so the cache stored and served a cut-off answer as complete.
    #[tokio::test]
    async fn a_body_that_breaks_its_announced_length_is_not_whole() {
        for (announced, sent) in [(100, "short"), (2, "longer")] {
            let err = to_bytes_limited(Announced(announced, Some(sent)), 1_000)
                .await
                .unwrap_err();
            assert!(
                matches!(err, BufferError::WrongLength { received } if received == sent.len()),
                "{err}"
            );
            assert!(matches!(
                read_limited(Announced(announced, Some(sent)), 1_000).await,
                Limited::WrongLength(prefix, _) if prefix == sent
            ));
        }
        let whole = to_bytes_limited(Announced(4, Some("kept")), 1_000)
            .await
            .unwrap();
        assert_eq!(whole, "kept");
    }
    #[tokio::test]
    async fn a_prefixed_body_gives_the_part_read_then_the_rest() {
        let body = ResponseBody::prefixed(
            Bytes::from_static(b"he"),
            Box::pin(Full::new(Bytes::from_static(b"llo"))),
        );
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_failed_body_gives_the_part_read_then_its_error() {
        let mut body = ResponseBody::<Chunks>::failed(
            Bytes::from_static(b"par"),
            std::io::Error::other("connection reset"),
        );
        // Never an exact length: a server would frame the prefix as the whole answer.
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(body.size_hint().lower(), 3);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "par");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "connection reset");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn limit_at_below_and_above_with_chunks() {
        assert_eq!(
            to_bytes_limited(chunks(vec!["ab", "cd"]), 5).await.unwrap(),
            "abcd"
        );
        assert_eq!(
            to_bytes_limited(chunks(vec!["ab", "cde"]), 5)
                .await
                .unwrap(),
            "abcde"
        );
        assert!(
            to_bytes_limited(chunks(vec!["ab", "cd", "ef"]), 5)
                .await
                .unwrap_err()
                .is_too_large()
        );
    }

    #[tokio::test]
    async fn size_hint_over_limit_is_refused_unread() {
        let err = to_bytes_limited(Full::new(Bytes::from_static(b"123456")), 5)
            .await
            .unwrap_err();
        assert!(matches!(err, BufferError::TooLarge { limit: 5 }));
        assert_eq!(err.rejection(), Rejection::payload_too_large(5));
    }

    #[tokio::test]
    async fn full_and_empty_bodies() {
        let b = ResponseBody::<Full<Bytes>>::full("xyz");
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "xyz");
        let e = ResponseBody::<Full<Bytes>>::empty();
        assert!(e.is_end_stream());
        assert_eq!(
            ResponseBody::<Full<Bytes>>::full("").size_hint().exact(),
            Some(0)
        );
    }

    /// Yields `ok` chunks, then fails.
    struct Breaks(std::vec::IntoIter<&'static str>);

    impl Body for Breaks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(match self.0.next() {
                Some(p) => Ok(Frame::data(Bytes::from_static(p.as_bytes()))),
                None => Err(std::io::Error::other("reset")),
            }))
        }
    }

    #[tokio::test]
    async fn a_limited_read_keeps_every_byte_it_took() {
        match read_limited(chunks(vec!["ab", "cd"]), 4).await {
            Limited::Whole(b) => assert_eq!(b, "abcd"),
            _ => panic!("within the limit"),
        }
        // Over the limit: the chunk that crossed it is in the prefix, the rest in the body.
        let Limited::TooLarge(prefix, rest) = read_limited(chunks(vec!["ab", "cde", "f"]), 4).await
        else {
            panic!("over the limit")
        };
        assert_eq!(prefix, "abcde");
        let whole = ResponseBody::prefixed(prefix, rest)
            .collect()
            .await
            .unwrap();
        assert_eq!(whole.to_bytes(), "abcdef");
        // Refused by its size hint: nothing read, the body untouched.
        let Limited::TooLarge(prefix, rest) =
            read_limited(Full::new(Bytes::from_static(b"123456")), 5).await
        else {
            panic!("over the limit by its hint")
        };
        assert!(prefix.is_empty());
        assert_eq!(rest.collect().await.unwrap().to_bytes(), "123456");
        // A failing body: what came before the error, then the error.
        let Limited::Failed(prefix, e) = read_limited(Breaks(vec!["ab", "c"].into_iter()), 9).await
        else {
            panic!("failed")
        };
        assert_eq!(prefix, "abc");
        assert_eq!(e.to_string(), "reset");
    }

    #[tokio::test]
    async fn to_bytes_limited_reports_a_failing_body() {
        let err = to_bytes_limited(Breaks(vec!["ab"].into_iter()), 9)
            .await
            .unwrap_err();
        assert!(matches!(err, BufferError::Body(_)));
        assert_eq!(err.rejection(), Rejection::BodyReadFailed);
    }
}
