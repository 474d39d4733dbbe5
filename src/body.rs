//! [`ResponseBody`]: the inner service's body, or the limiter's own answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through the limiter: the inner service's body, or
    /// the body of a rejection or error answered by the layer. Forwards `is_end_stream`
    /// and `size_hint`; needs no `Default` on the inner body.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // Boxed, so that the body, and every response of the service, is no larger than
        // the inner one's: a moved response is then copied inline.
        Answer { data: Option<Box<Bytes>> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn answer(data: Bytes) -> Self {
        let data = (!data.is_empty()).then(|| Box::new(data));
        Self {
            kind: Kind::Answer { data },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Answer { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data((*data).into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Answer { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Answer { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_no_larger_than_a_pointer_sized_inner_body() {
        type Boxed = Pin<Box<dyn Body<Data = Bytes, Error = ()> + Send>>;
        assert_eq!(
            std::mem::size_of::<ResponseBody<Boxed>>(),
            std::mem::size_of::<Boxed>()
        );
    }
}
