//! The one way keyward fetches a document from another server: an issuer's
//! JWK Set and discovery document (the gate), a client's `jwks_uri` (the
//! issuer, for `private_key_jwt`), a JWK Set named on the command line
//! (`keyward token verify`) and an issuer's revocation feed (the gateway).
//!
//! Every fetch by a [`Fetcher`]:
//!
//! - asks only URLs [`check_url`] accepts: `https://`, or `http://` to a
//!   loopback host unless [`FetchLimits::allow_http`];
//! - ends within [`FetchLimits::timeout`], connection, answer and body
//!   together ([`FetchError::Timeout`]);
//! - reads at most [`FetchLimits::max_body_bytes`], refusing a larger
//!   `Content-Length` before reading and a longer body as soon as it passes
//!   the limit ([`FetchError::TooLarge`]);
//! - accepts only `200 OK` (and `304 Not Modified` to a conditional request);
//!   any other status is [`FetchError::Status`];
//! - follows at most [`MAX_REDIRECTS`] redirects, each to the scheme of the
//!   first URL and to a URL [`check_url`] accepts; any other is
//!   [`FetchError::Redirect`].

use std::time::Duration;

use http::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, StatusCode};

use crate::error::{FetchError, RedirectRefusal, UrlError};

/// Most redirects followed in one fetch.
pub const MAX_REDIRECTS: usize = 5;

/// The bounds of every fetch a [`Fetcher`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    /// Whole-fetch timeout: connection, answer and body (default 5 s).
    pub timeout: Duration,
    /// Largest accepted body (default 256 KiB).
    pub max_body_bytes: usize,
    /// Accept `http://` for non-loopback hosts (default false).
    pub allow_http: bool,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: Duration::from_secs(5),
            max_body_bytes: 256 * 1024,
            allow_http: false,
        }
    }
}

/// What a conditional fetch ([`Fetcher::get_revalidated`]) found.
#[derive(Debug)]
pub enum Fetched {
    /// `200 OK` with this body.
    Body {
        /// The body, at most [`FetchLimits::max_body_bytes`].
        body: Vec<u8>,
        /// The response headers.
        headers: HeaderMap,
    },
    /// `304 Not Modified`: the copy named by the `ETag` sent is current.
    NotModified {
        /// The response headers.
        headers: HeaderMap,
    },
}

/// Fetches JSON documents within [`FetchLimits`]. Cheap to clone; clones
/// share connections.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    limits: FetchLimits,
}

impl Fetcher {
    /// A fetcher with these limits.
    pub fn new(limits: FetchLimits) -> Result<Fetcher, FetchError> {
        let allow_http = limits.allow_http;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let first_scheme = attempt.previous().first().map(|u| u.scheme().to_owned());
            if refusal(
                first_scheme.as_deref(),
                attempt.url(),
                attempt.previous().len(),
                allow_http,
            )
            .is_some()
            {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .redirect(redirects)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Fetcher { client, limits })
    }

    /// The limits of this fetcher.
    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// GETs `url`: its body when the answer is `200 OK`.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        match self.get_revalidated(url, None).await? {
            Fetched::Body { body, .. } => Ok(body),
            // Only a conditional request is answered 304.
            Fetched::NotModified { .. } => Err(FetchError::Status {
                url: url.to_owned(),
                status: StatusCode::NOT_MODIFIED,
            }),
        }
    }

    /// GETs `url`, with `If-None-Match: etag` when given: the body of a
    /// `200 OK`, or [`Fetched::NotModified`] when the server answers 304 to
    /// the `etag` sent.
    pub async fn get_revalidated(
        &self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        check_url(url, self.limits.allow_http)?;
        let after = self.limits.timeout;
        tokio::time::timeout(after, self.fetch(url, etag))
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Timeout {
                    url: url.to_owned(),
                    after,
                })
            })
    }

    async fn fetch(&self, url: &str, etag: Option<&str>) -> Result<Fetched, FetchError> {
        let mut req = self.client.get(url).header(ACCEPT, "application/json");
        if let Some(etag) = etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        let resp = req.send().await.map_err(|e| self.failed(url, e))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified {
                headers: resp.headers().clone(),
            });
        }
        if is_followed_redirect(status) {
            if let Some(e) = redirect_error(url, &resp, self.limits.allow_http) {
                return Err(e);
            }
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status,
            });
        }
        let headers = resp.headers().clone();
        let body = self.read_bounded(url, resp).await?;
        Ok(Fetched::Body { body, headers })
    }

    /// The body, refused as soon as it is known to be larger than the limit
    /// (from `Content-Length`, or while streaming).
    async fn read_bounded(
        &self,
        url: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, FetchError> {
        let max = self.limits.max_body_bytes;
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            max,
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failed(url, e))? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A transport error, by kind.
    fn failed(&self, url: &str, source: reqwest::Error) -> FetchError {
        let url = url.to_owned();
        if source.is_timeout() {
            FetchError::Timeout {
                url,
                after: self.limits.timeout,
            }
        } else if source.is_connect() {
            FetchError::Connect { url, source }
        } else {
            FetchError::Request { url, source }
        }
    }
}

/// The statuses reqwest hands to the redirect policy.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// The last URL of a redirect chain (`resp`'s) and where it pointed, when
/// the redirect policy stopped there.
fn redirect_error(first: &str, resp: &reqwest::Response, allow_http: bool) -> Option<FetchError> {
    let location = resp.headers().get(http::header::LOCATION)?.to_str().ok()?;
    let target = resp.url().join(location).ok()?;
    let first_scheme = reqwest::Url::parse(first)
        .ok()
        .map(|u| u.scheme().to_owned());
    // `resp.url()` is the last URL asked; the chain before it is not kept,
    // so a redirect allowed on its own was refused for the count.
    let why = refusal(first_scheme.as_deref(), &target, 0, allow_http)
        .unwrap_or(RedirectRefusal::TooMany);
    Some(FetchError::Redirect {
        url: resp.url().to_string(),
        location: target.to_string(),
        why,
    })
}

/// Why a redirect to `to` is not followed after `followed` URLs, if it is
/// not.
fn refusal(
    first_scheme: Option<&str>,
    to: &reqwest::Url,
    followed: usize,
    allow_http: bool,
) -> Option<RedirectRefusal> {
    if first_scheme.is_some_and(|s| s != to.scheme()) {
        Some(RedirectRefusal::OtherScheme)
    } else if let Err(e) = check_url(to.as_str(), allow_http) {
        Some(RedirectRefusal::Url(e))
    } else if followed > MAX_REDIRECTS {
        Some(RedirectRefusal::TooMany)
    } else {
        None
    }
}

/// Refuses URLs that are not `https://`, or `http://` to a loopback host
/// unless `allow_http`.
pub fn check_url(url: &str, allow_http: bool) -> Result<(), UrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|source| UrlError::Malformed {
        url: url.to_owned(),
        source,
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(UrlError::PlainHttp {
                    url: url.to_owned(),
                })
            }
        }
        s => Err(UrlError::Scheme {
            url: url.to_owned(),
            scheme: s.to_owned(),
        }),
    }
}

/// The `ETag` of a response's headers, if it is text.
pub fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
