//! Closing a connection the way nginx's lingering close does. When the server ends a
//! connection while its client may still be sending (a 413 for an upload sent whole,
//! without waiting for `100 Continue`, as Python's urllib and many scripts do), closing
//! the socket with unread bytes makes the kernel reset the connection, and the client's
//! read of the answer usually fails ("connection reset", "broken pipe") although the
//! answer was sent. So a socket the client has not ended stops writing (FIN), then
//! reads and discards what still arrives — at most [`LINGER_BYTES`], for at most
//! [`LINGER_TIME`], giving up after [`LINGER_IDLE`] of silence — and only then closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The most a lingering close reads before closing anyway.
pub const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// The longest a lingering close waits for the client to finish sending.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// A client silent this long is not sending any more: close.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// A connection's socket, with what it must keep alive until it is really closed.
pub struct Lingering<T: Send + 'static> {
    stream: Option<TcpStream>,
    /// The client ended its side (a read saw the end): nothing is left to read.
    ended: bool,
    /// Held until the socket is closed (the connection's slot: a lingering socket
    /// still counts against the connection limits).
    keep: Option<T>,
}

impl<T: Send + 'static> Lingering<T> {
    pub fn new(stream: TcpStream, keep: T) -> Self {
        Self {
            stream: Some(stream),
            ended: false,
            keep: Some(keep),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<T: Send + 'static> Drop for Lingering<T> {
    fn drop(&mut self) {
        let (Some(stream), keep) = (self.stream.take(), self.keep.take()) else {
            return;
        };
        if self.ended {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                linger(stream).await;
                drop(keep);
            });
        }
    }
}

/// Stops writing, then reads until the client ends, goes quiet, or the bounds are met.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut read = 0;
    let drained = async {
        while read < LINGER_BYTES {
            match tokio::time::timeout(LINGER_IDLE, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drained).await;
}

impl<T: Send + 'static + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(this.stream()?).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            this.ended = true;
        }
        polled
    }
}

impl<T: Send + 'static + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_shutdown(cx)
    }
}
