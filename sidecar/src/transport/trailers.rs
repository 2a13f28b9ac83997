//! Trailers a gRPC handler adds to its answer. tonic ends a unary answer with its own
//! `grpc-status` trailers and gives a handler no way to add to them, but daprd passes a
//! gRPC app's trailers on to a gRPC caller; a handler puts them in the answer's
//! [`Trailers`] extension and [`TrailersLayer`] writes them into the closing frame.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt as _;
use futures_util::future::Map;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

/// Trailers for the answer that carries this extension.
#[derive(Clone, Debug, Default)]
pub struct Trailers(pub HeaderMap);

/// Wraps a gRPC service so that the [`Trailers`] of its answers are sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrailersLayer;

impl<S> tower::Layer<S> for TrailersLayer {
    type Service = WithTrailers<S>;
    fn layer(&self, inner: S) -> WithTrailers<S> {
        WithTrailers(inner)
    }
}

/// A gRPC service whose answers' [`Trailers`] are written into their closing frames.
#[derive(Clone, Debug)]
pub struct WithTrailers<S>(S);

type Answer<B, E> = Result<http::Response<TrailedBody<B>>, E>;

impl<S, Req, B> tower::Service<Req> for WithTrailers<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<TrailedBody<B>>;
    type Error = S::Error;
    type Future = Map<S::Future, fn(Result<http::Response<B>, S::Error>) -> Answer<B, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.0.call(req).map(|answer| {
            answer.map(|mut answer| {
                let extra = answer.extensions_mut().remove::<Trailers>().map(|t| t.0);
                answer.map(|inner| TrailedBody {
                    inner,
                    extra,
                    ended: false,
                })
            })
        })
    }
}

/// A body whose trailers get `extra` added (or, when it has none, are `extra`).
#[derive(Debug)]
pub struct TrailedBody<B> {
    inner: B,
    extra: Option<HeaderMap>,
    /// The inner body has ended: it is not polled again.
    ended: bool,
}

impl<B: Body + Unpin> Body for TrailedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(this.extra.take().map(|e| Ok(Frame::trailers(e))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    // Added to the body's own, never to or in place of a name it has
                    // (`grpc-status`, `grpc-message`).
                    if let Some(extra) = this.extra.take() {
                        let own: Vec<_> = trailers.keys().cloned().collect();
                        append(&mut trailers, extra, |n| !own.contains(n));
                    }
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            None => {
                this.ended = true;
                Poll::Ready(this.extra.take().map(|e| Ok(Frame::trailers(e))))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.extra.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Every value of `more` whose name `keep` takes, added to `to`, none replacing one there
/// (`HeaderMap::extend` would).
pub(crate) fn append(
    to: &mut HeaderMap,
    more: HeaderMap,
    keep: impl Fn(&http::HeaderName) -> bool,
) {
    let mut name = None;
    for (n, value) in more {
        if n.is_some() {
            name = n;
        }
        if let Some(name) = name.as_ref().filter(|n| keep(n)) {
            to.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn extra_trailers_join_the_bodys_own_or_stand_alone() {
        let mut own = HeaderMap::new();
        own.insert("grpc-status", "0".parse().unwrap());
        let mut extra = HeaderMap::new();
        extra.insert("x-after", "done".parse().unwrap());
        extra.append("x-after", "again".parse().unwrap());
        extra.insert("grpc-status", "13".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"hi"))),
            Ok(Frame::trailers(own)),
        ]));
        let joined = TrailedBody {
            inner: body,
            extra: Some(extra.clone()),
            ended: false,
        }
        .collect()
        .await
        .unwrap();
        let trailers = joined.trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "0", "the body's own stays");
        let after: Vec<_> = trailers.get_all("x-after").iter().collect();
        assert_eq!(after, ["done", "again"]);
        assert_eq!(joined.to_bytes(), "hi");

        let alone = TrailedBody {
            inner: http_body_util::Full::new(bytes::Bytes::from_static(b"x")),
            extra: Some(extra),
            ended: false,
        }
        .collect()
        .await
        .unwrap();
        assert_eq!(alone.trailers().unwrap()["x-after"], "done");
    }
}
