//! WebSocket (RFC 6455) through the gateway, on routes with `websocket =
//! true`: recognising a handshake, sending it upstream on a connection of
//! its own once the proxy has judged it, and splicing the two upgraded
//! connections. HTTP/2 extended CONNECT (RFC 8441) is not supported.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::{strip_hop_by_hop, ProxyBody};
use crate::upstream::{Sender, Upstream, UpstreamError};

/// Whether `parts` asks for a WebSocket upgrade (RFC 6455 §4.1): HTTP/1.1,
/// `GET`, a `Connection` header naming `upgrade` and an `Upgrade` header
/// naming `websocket` (tokens compared without case).
pub(crate) fn is_websocket_upgrade(parts: &http::request::Parts) -> bool {
    fn names(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && names(&parts.headers, header::CONNECTION, "upgrade")
        && names(&parts.headers, header::UPGRADE, "websocket")
}

/// Whether an upstream's `101` switched to WebSocket.
fn switched_to_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub(crate) fn set_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Sends the WebSocket handshake `req` (already judged, headers set) on a
/// connection of its own. On the upstream's `101`, spawns the splice of
/// the caller's connection (`caller`) with the upstream's and returns the
/// `101` for the caller; any other answer is passed back as usual.
pub(crate) async fn upgrade(
    upstream: &Upstream,
    req: Request<Incoming>,
    caller: OnUpgrade,
    route: &str,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let (mut resp, sender) = upstream.send_upgrade(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut p, b) = resp.into_parts();
        strip_hop_by_hop(&mut p.headers);
        return Ok(Response::from_parts(p, Either::Left(b)));
    }
    if !switched_to_websocket(resp.headers()) {
        return Err(UpstreamError::Upgrade);
    }
    let theirs = hyper::upgrade::on(&mut resp);
    let (mut p, _) = resp.into_parts();
    strip_hop_by_hop(&mut p.headers);
    set_upgrade_headers(&mut p.headers);
    tokio::spawn(splice(caller, theirs, sender, route.to_owned()));
    Ok(Response::from_parts(
        p,
        Either::Right(Full::new(Bytes::new())),
    ))
}

/// Copies bytes both ways between the caller's and the upstream's upgraded
/// connections until both directions have ended (an end of stream on one
/// side is passed on as a write shutdown to the other: over TLS, a
/// `close_notify`). Any other I/O error ends both. `_sender` keeps
/// the upstream connection's client half alive until the upgrade is done.
async fn splice(caller: OnUpgrade, upstream: OnUpgrade, _sender: Sender, route: String) {
    let (caller, upstream) = match tokio::try_join!(caller, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(%route, error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let mut caller = EofTolerant(TokioIo::new(caller));
    let mut upstream = EofTolerant(TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut caller, &mut upstream).await {
        Ok((up, down)) => {
            tracing::debug!(%route, bytes_up = up, bytes_down = down, "websocket closed")
        }
        Err(e) => tracing::debug!(%route, error = %e, "websocket ended with an error"),
    }
}

/// A connection whose read side treats a TLS peer's close without
/// `close_notify` (rustls's `UnexpectedEof`) as an end of stream, as most
/// servers and clients close that way. WebSocket frames carry their own
/// lengths and the endpoints see a truncated frame or a missing close frame
/// themselves; without this, one such close would abort the splice before
/// the other side could be told (with its own `close_notify`).
struct EofTolerant<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for EofTolerant<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EofTolerant<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, method: Method, lines: &[(&str, &str)]) -> http::request::Parts {
        let mut b = Request::builder()
            .method(method)
            .version(version)
            .uri("/ws");
        for (k, v) in lines {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_websocket_handshake_is_recognised_and_nothing_else() {
        let ok = [
            vec![("connection", "Upgrade"), ("upgrade", "websocket")],
            vec![
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket"),
            ],
            vec![
                ("connection", "keep-alive"),
                ("connection", "upgrade"),
                ("upgrade", "h2c, websocket"),
            ],
        ];
        for lines in &ok {
            assert!(
                is_websocket_upgrade(&parts(Version::HTTP_11, Method::GET, lines)),
                "{lines:?}"
            );
        }
        let ws = [("connection", "upgrade"), ("upgrade", "websocket")];
        assert!(!is_websocket_upgrade(&parts(
            Version::HTTP_2,
            Method::GET,
            &ws
        )));
        assert!(!is_websocket_upgrade(&parts(
            Version::HTTP_10,
            Method::GET,
            &ws
        )));
        assert!(!is_websocket_upgrade(&parts(
            Version::HTTP_11,
            Method::POST,
            &ws
        )));
        for lines in [
            vec![("upgrade", "websocket")],
            vec![("connection", "upgrade")],
            vec![("connection", "upgrades"), ("upgrade", "websocket")],
            vec![("connection", "upgrade"), ("upgrade", "websockets")],
            vec![("connection", "upgrade"), ("upgrade", "h2c")],
        ] {
            assert!(
                !is_websocket_upgrade(&parts(Version::HTTP_11, Method::GET, &lines)),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn only_a_switch_to_websocket_counts() {
        let mut h = HeaderMap::new();
        assert!(!switched_to_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!switched_to_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(switched_to_websocket(&h));
    }
}
