//! Follows a keyward issuer's revocation feed, so the gate refuses revoked
//! access tokens before they expire.
//!
//! The feed is `GET {issuer}/revocations?since=CURSOR&limit=N`, answering
//! `200 {"revocations": [{"jti": "...", "exp": 1234567890, "revoked_at": ...}],
//! "next": CURSOR}`. The cursor starts at 0; pages are fetched until one is
//! empty or shorter than the limit, and the last `next` is asked with on the
//! following poll.
//!
//! Each page is read by keyward's one bounded [`Fetcher`] (size
//! [`MAX_BODY_BYTES`], time [`FETCH_TIMEOUT`], `200 OK` only, plain
//! `http://` only for loopback hosts unless `allow_http` is set, redirects
//! only to the same scheme), parsed strictly and applied only as a whole: a
//! failed or malformed page changes neither the list nor the cursor, and
//! entries already in the list stay. Expired entries are pruned at the time
//! of the clock given (the gate's).
//!
//! Metrics (label `issuer`): `keyward_gate_revocation_feed_failures_total`
//! (counter), `keyward_gate_revocations` (gauge, entries held), and
//! `keyward_gate_revocation_feed_last_success_seconds` (gauge, Unix time of
//! the last complete poll).

use std::sync::Arc;
use std::time::Duration;

use keyward_verify::clock::SharedClock;
use keyward_verify::{check_url, FetchError, FetchLimits, Fetcher, RevocationList};
use metrics::{counter, gauge};
use serde::Deserialize;

use crate::error::{FeedError, PageError};

/// Largest accepted response body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Whole-request timeout for one page.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries asked for per page (the issuer's default).
pub const PAGE_LIMIT: usize = 1000;
/// Pages fetched per poll at most; a longer backlog continues on the next poll.
const MAX_PAGES_PER_POLL: usize = 100;
/// Entries are kept this long past their token's `exp` (clock skew).
const PRUNE_LEEWAY_SECS: i64 = 300;
/// Longest accepted `jti`.
const MAX_JTI_LEN: usize = 1024;

/// One page of the feed.
#[derive(Debug, Deserialize)]
struct Page {
    revocations: Vec<Entry>,
    next: i64,
}

/// One revoked token.
#[derive(Debug, Deserialize)]
struct Entry {
    jti: String,
    exp: i64,
}

/// Starts a task that polls `issuer`'s feed every `interval` (the first poll
/// at once) and records each revoked `jti` in `list`, pruning entries whose
/// tokens have expired. Failures are logged and counted, and the next poll
/// tries again from the same cursor. If the feed URL is not acceptable (see
/// the module docs) the task logs an error and ends. "Now" is `clock`'s.
pub fn spawn(
    issuer: String,
    list: Arc<RevocationList>,
    interval: Duration,
    allow_http: bool,
    clock: SharedClock,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let issuer_label = issuer.clone();
        let client = check_url(&feed_url(&issuer), allow_http)
            .map_err(FetchError::from)
            .and_then(|()| fetcher(allow_http));
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(issuer = %issuer, error = %e, "revocation feed disabled");
                counter!("keyward_gate_revocation_feed_failures_total", "issuer" => issuer_label)
                    .increment(1);
                return;
            }
        };
        let mut cursor = 0i64;
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = poll_once(&client, &issuer, &mut cursor, &list, clock.now()).await;
            let now = clock.now();
            list.prune(now, PRUNE_LEEWAY_SECS);
            match result {
                Ok(n) => {
                    tracing::debug!(issuer = %issuer, new = n, cursor, held = list.len(), "revocation feed polled");
                    gauge!("keyward_gate_revocations", "issuer" => issuer_label.clone())
                        .set(list.len() as f64);
                    gauge!("keyward_gate_revocation_feed_last_success_seconds", "issuer" => issuer_label.clone())
                        .set(now as f64);
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer, error = %e, cursor, "revocation feed poll failed; keeping the entries held");
                    counter!("keyward_gate_revocation_feed_failures_total", "issuer" => issuer_label.clone())
                        .increment(1);
                }
            }
        }
    })
}

/// Fetches every page after `cursor`, recording each entry in `list` and
/// advancing `cursor` page by page. Returns how many entries were read
/// (entries whose tokens have already expired are read but not recorded). On
/// an error, pages read before it stay applied; the failed page changes
/// nothing. At most 100 pages are read per call; the rest is left for the
/// next. Entries whose tokens expired (with leeway) before `now` are not
/// recorded. The fetcher checks the URL ([`spawn`] makes one with
/// [`fetcher`]).
pub async fn poll_once(
    client: &Fetcher,
    issuer: &str,
    cursor: &mut i64,
    list: &RevocationList,
    now: i64,
) -> Result<usize, FeedError> {
    poll_with(client, issuer, cursor, list, now, PAGE_LIMIT).await
}

async fn poll_with(
    client: &Fetcher,
    issuer: &str,
    cursor: &mut i64,
    list: &RevocationList,
    now: i64,
    limit: usize,
) -> Result<usize, FeedError> {
    let base = feed_url(issuer);
    let mut total = 0;
    for _ in 0..MAX_PAGES_PER_POLL {
        let url = format!("{base}?since={cursor}&limit={limit}");
        let body = client.get(&url).await?;
        let page = parse_page(&body).map_err(|source| FeedError::Page { url, source })?;
        if !page.revocations.is_empty() && page.next <= *cursor {
            return Err(FeedError::CursorStuck {
                url: base,
                since: *cursor,
                next: page.next,
            });
        }
        for e in &page.revocations {
            if e.exp.saturating_add(PRUNE_LEEWAY_SECS) >= now {
                list.revoke(&e.jti, e.exp);
            }
        }
        let n = page.revocations.len();
        total += n;
        if page.next > *cursor {
            *cursor = page.next;
        }
        if n < limit {
            break;
        }
    }
    Ok(total)
}

/// `{issuer}/revocations`.
fn feed_url(issuer: &str) -> String {
    format!("{}/revocations", issuer.trim_end_matches('/'))
}

/// The fetcher the feed uses: [`FETCH_TIMEOUT`], [`MAX_BODY_BYTES`].
pub fn fetcher(allow_http: bool) -> Result<Fetcher, FetchError> {
    Fetcher::new(FetchLimits {
        timeout: FETCH_TIMEOUT,
        max_body_bytes: MAX_BODY_BYTES,
        allow_http,
    })
}

/// Strict parsing: a JSON object with `revocations` (entries with a string
/// `jti` and an integer `exp`) and an integer `next`; one bad entry rejects
/// the page.
fn parse_page(body: &[u8]) -> Result<Page, PageError> {
    let page: Page = serde_json::from_slice(body).map_err(PageError::Json)?;
    if page.next < 0 {
        return Err(PageError::NegativeCursor);
    }
    if let Some(e) = page
        .revocations
        .iter()
        .find(|e| e.jti.is_empty() || e.jti.len() > MAX_JTI_LEN)
    {
        return Err(PageError::Jti {
            len: e.jti.len(),
            max: MAX_JTI_LEN,
        });
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_verify::clock::FixedClock;
    use std::collections::HashMap;

    /// The time the tests run at.
    const NOW: i64 = 1_800_000_000;
    use std::sync::Mutex;

    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    /// What the fake issuer answers.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Mode {
        Feed,
        Malformed,
        WrongTypes,
        Oversize,
        ServerError,
        Stuck,
        Slow,
    }

    struct Fake {
        /// (seq, jti, exp), seq ascending from 1.
        entries: Vec<(i64, String, i64)>,
        mode: Mode,
        requests: Vec<String>,
    }

    type Shared = Arc<Mutex<Fake>>;

    async fn feed(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
        let (mode, body) = {
            let mut f = s.lock().unwrap();
            let since: i64 = q.get("since").and_then(|v| v.parse().ok()).unwrap_or(0);
            let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(1000);
            f.requests.push(format!("since={since}&limit={limit}"));
            let page: Vec<_> = f
                .entries
                .iter()
                .filter(|e| e.0 > since)
                .take(limit)
                .collect();
            let next = page.last().map(|e| e.0).unwrap_or(since);
            let items: Vec<_> = page
                .iter()
                .map(|(seq, jti, exp)| serde_json::json!({"jti": jti, "exp": exp, "revoked_at": 1_700_000_000 + seq}))
                .collect();
            let body = serde_json::json!({"revocations": items, "next": next});
            (f.mode, body)
        };
        match mode {
            Mode::Feed => axum::Json(body).into_response(),
            Mode::Malformed => (StatusCode::OK, "{\"revocations\": [{\"jti\": \"x\", ").into_response(),
            Mode::WrongTypes => axum::Json(serde_json::json!({
                "revocations": [{"jti": "ok", "exp": 4_000_000_000i64}, {"jti": "bad", "exp": "soon"}],
                "next": 99
            }))
            .into_response(),
            Mode::Oversize => {
                let pad = "x".repeat(MAX_BODY_BYTES);
                axum::Json(serde_json::json!({
                    "revocations": [{"jti": "big", "exp": 4_000_000_000i64, "pad": pad}],
                    "next": 99
                }))
                .into_response()
            }
            Mode::ServerError => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Mode::Stuck => axum::Json(serde_json::json!({
                "revocations": [{"jti": "loop", "exp": 4_000_000_000i64}],
                "next": 0
            }))
            .into_response(),
            Mode::Slow => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(body).into_response()
            }
        }
    }

    /// A server that answers every connection with `head` and then `body_len`
    /// bytes of a JSON string, without `Content-Length`, and closes: the size
    /// limit must hold while streaming.
    async fn unbounded_server(body_len: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"revocations\":[],\"next\":1,\"pad\":\"";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'y'; 64 * 1024];
                    let mut sent = 0;
                    while sent < body_len {
                        if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                    }
                    let _ = sock.write_all(b"\"}").await;
                });
            }
        });
        format!("http://{addr}")
    }

    async fn fake(entries: usize) -> (String, Shared) {
        let state = Arc::new(Mutex::new(Fake {
            entries: (1..=entries as i64)
                .map(|i| (i * 10, format!("jti-{i}"), 4_000_000_000 + i))
                .collect(),
            mode: Mode::Feed,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/env/revocations", get(feed))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}/env"), state)
    }

    fn set_mode(s: &Shared, mode: Mode) {
        s.lock().unwrap().mode = mode;
    }

    #[tokio::test]
    async fn pages_with_the_cursor() {
        let (issuer, state) = fake(2500).await;
        let list = RevocationList::new();
        let mut cursor = 0;
        let c = fetcher(false).unwrap();
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            2500
        );
        assert_eq!(cursor, 25_000);
        assert_eq!(list.len(), 2500);
        assert!(list.is_revoked("jti-1") && list.is_revoked("jti-2500"));
        assert_eq!(
            state.lock().unwrap().requests,
            [
                "since=0&limit=1000",
                "since=10000&limit=1000",
                "since=20000&limit=1000"
            ]
        );
        // Nothing new: one request, cursor unchanged.
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            0
        );
        assert_eq!(cursor, 25_000);
        // New entries are picked up from the cursor on.
        state
            .lock()
            .unwrap()
            .entries
            .push((25_001, "late".into(), 4_100_000_000));
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            1
        );
        assert_eq!(cursor, 25_001);
        assert!(list.is_revoked("late"));
        let reqs = state.lock().unwrap().requests.clone();
        assert_eq!(reqs[reqs.len() - 1], "since=25000&limit=1000");
    }

    #[tokio::test]
    async fn an_exact_multiple_of_the_limit_ends_on_an_empty_page() {
        let (issuer, state) = fake(6).await;
        let list = RevocationList::new();
        let mut cursor = 0;
        let c = fetcher(false).unwrap();
        let n = poll_with(&c, &issuer, &mut cursor, &list, 0, 3).await;
        assert_eq!(n.unwrap(), 6);
        assert_eq!(cursor, 60);
        assert_eq!(state.lock().unwrap().requests.len(), 3);
    }

    #[tokio::test]
    async fn expired_entries_are_read_but_not_recorded() {
        let (issuer, state) = fake(2).await;
        let now = NOW;
        {
            let mut f = state.lock().unwrap();
            f.entries.push((30, "long-expired".into(), 1_000));
            f.entries.push((40, "within-leeway".into(), now - 10));
        }
        let list = RevocationList::new();
        let mut cursor = 0;
        let c = fetcher(false).unwrap();
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            4
        );
        assert_eq!(cursor, 40);
        assert!(!list.is_revoked("long-expired"));
        assert!(list.is_revoked("within-leeway") && list.is_revoked("jti-2"));
        assert_eq!(list.len(), 3);
    }

    #[tokio::test]
    async fn bad_pages_change_nothing() {
        let (issuer, state) = fake(3).await;
        let list = RevocationList::new();
        let mut cursor = 0;
        let c = fetcher(false).unwrap();
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            3
        );
        state
            .lock()
            .unwrap()
            .entries
            .push((40, "jti-4".into(), 4_000_000_004));
        for mode in [
            Mode::Malformed,
            Mode::WrongTypes,
            Mode::Oversize,
            Mode::ServerError,
            Mode::Stuck,
        ] {
            set_mode(&state, mode);
            let e = poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .expect_err(&format!("{mode:?}"));
            let as_expected = match mode {
                Mode::Malformed | Mode::WrongTypes => matches!(
                    &e,
                    FeedError::Page {
                        source: PageError::Json(_),
                        ..
                    }
                ),
                Mode::Oversize => matches!(
                    &e,
                    FeedError::Fetch(FetchError::TooLarge {
                        max: MAX_BODY_BYTES,
                        ..
                    })
                ),
                Mode::ServerError => matches!(
                    &e,
                    FeedError::Fetch(FetchError::Status { status, .. }) if status.as_u16() == 500
                ),
                Mode::Stuck => matches!(
                    &e,
                    FeedError::CursorStuck {
                        since: 30,
                        next: 0,
                        ..
                    }
                ),
                _ => unreachable!(),
            };
            assert!(as_expected, "{mode:?}: {e:?}");
            // The old entries stay, nothing from the bad page was added.
            assert_eq!(cursor, 30, "{mode:?}");
            assert_eq!(list.len(), 3, "{mode:?}");
            assert!(list.is_revoked("jti-3"));
            for jti in ["ok", "bad", "big", "loop", "jti-4", "x"] {
                assert!(!list.is_revoked(jti), "{mode:?} {jti}");
            }
        }
        // Recovery continues from the cursor.
        set_mode(&state, Mode::Feed);
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            1
        );
        assert!(list.is_revoked("jti-4"));
        assert_eq!(cursor, 40);
    }

    #[tokio::test]
    async fn bodies_without_length_are_bounded_while_read() {
        let c = fetcher(false).unwrap();
        let list = RevocationList::new();
        let mut cursor = 3;
        let issuer = unbounded_server(2 * MAX_BODY_BYTES).await;
        let e = poll_once(&c, &issuer, &mut cursor, &list, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                FeedError::Fetch(FetchError::TooLarge {
                    max: MAX_BODY_BYTES,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(e.to_string().ends_with("larger than 1048576 bytes"), "{e}");
        assert_eq!((cursor, list.len()), (3, 0));
        // Just under the limit is read (and is a valid, empty page).
        let issuer = unbounded_server(MAX_BODY_BYTES - 64 * 1024).await;
        assert_eq!(
            poll_once(&c, &issuer, &mut cursor, &list, NOW)
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn timeouts_and_unreachable_issuers_fail_cleanly() {
        let (issuer, state) = fake(1).await;
        set_mode(&state, Mode::Slow);
        let list = RevocationList::new();
        list.revoke("kept", 4_000_000_000);
        let mut cursor = 7;
        let quick = Fetcher::new(FetchLimits {
            timeout: Duration::from_millis(200),
            max_body_bytes: MAX_BODY_BYTES,
            allow_http: false,
        })
        .unwrap();
        let e = poll_once(&quick, &issuer, &mut cursor, &list, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(e, FeedError::Fetch(FetchError::Timeout { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("timed out after 200 ms"), "{e}");
        // Nothing listens on port 1.
        let c = fetcher(false).unwrap();
        let e = poll_once(&c, "http://127.0.0.1:1", &mut cursor, &list, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(e, FeedError::Fetch(FetchError::Connect { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("connection failed"), "{e}");
        assert_eq!(cursor, 7);
        assert_eq!(list.len(), 1);
        assert!(list.is_revoked("kept"));
    }

    #[test]
    fn strict_page_parsing() {
        let ok = br#"{"revocations":[{"jti":"a","exp":1,"revoked_at":2}],"next":5,"extra":true}"#;
        let p = parse_page(ok).unwrap();
        assert_eq!((p.revocations.len(), p.next), (1, 5));
        for bad in [
            &br#"[]"#[..],
            br#"{"revocations":[]}"#,
            br#"{"next":1}"#,
            br#"{"revocations":[],"next":-1}"#,
            br#"{"revocations":[],"next":1.5}"#,
            br#"{"revocations":[],"next":"1"}"#,
            br#"{"revocations":[{"jti":"a"}],"next":1}"#,
            br#"{"revocations":[{"jti":"a","exp":1.5}],"next":1}"#,
            br#"{"revocations":[{"jti":1,"exp":1}],"next":1}"#,
            br#"{"revocations":[{"jti":"","exp":1}],"next":1}"#,
            br#"{"revocations":[{"jti":"a","jti":"b","exp":1}],"next":1}"#,
            br#"{"revocations":[],"next":1,"next":2}"#,
            b"",
        ] {
            let e = parse_page(bad).map(|_| ()).unwrap_err();
            let what = String::from_utf8_lossy(bad);
            match &e {
                PageError::NegativeCursor => assert!(what.contains("-1"), "{what}"),
                PageError::Jti { len: 0, .. } => assert!(what.contains(r#""jti":"""#), "{what}"),
                PageError::Json(_) => {}
                other => panic!("{what}: {other:?}"),
            }
            assert!(
                e.to_string().starts_with("malformed feed page: "),
                "{what}: {e}"
            );
        }
        let long = format!(
            r#"{{"revocations":[{{"jti":"{}","exp":1}}],"next":1}}"#,
            "j".repeat(MAX_JTI_LEN + 1)
        );
        let e = parse_page(long.as_bytes()).map(|_| ()).unwrap_err();
        assert!(
            matches!(e, PageError::Jti { len, max: MAX_JTI_LEN } if len == MAX_JTI_LEN + 1),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "malformed feed page: jti of {} bytes (1..={MAX_JTI_LEN} accepted)",
                MAX_JTI_LEN + 1
            )
        );
    }

    #[tokio::test]
    async fn spawned_task_follows_the_feed_and_prunes() {
        let (issuer, state) = fake(2).await;
        let list = Arc::new(RevocationList::new());
        // Expired long ago: pruned after the first poll.
        list.revoke("old", 1);
        let task = spawn(
            issuer.clone(),
            list.clone(),
            Duration::from_millis(100),
            false,
            Arc::new(FixedClock(NOW)),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !list.is_revoked("jti-2") || list.is_revoked("old") {
            assert!(tokio::time::Instant::now() < deadline, "feed not applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state
            .lock()
            .unwrap()
            .entries
            .push((30, "jti-3".into(), 4_000_000_003));
        while !list.is_revoked("jti-3") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "new entry not applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Failures keep the entries.
        set_mode(&state, Mode::ServerError);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(list.len(), 3);
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test]
    async fn plain_http_only_for_loopback_or_when_allowed() {
        let list = Arc::new(RevocationList::new());
        // Refused before any request: the task ends.
        let task = spawn(
            "http://issuer.example".into(),
            list.clone(),
            Duration::from_secs(1),
            false,
            Arc::new(FixedClock(NOW)),
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let task = spawn(
            "ftp://127.0.0.1".into(),
            list.clone(),
            Duration::from_secs(1),
            true,
            Arc::new(FixedClock(NOW)),
        );
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        // Allowed: the task keeps running (and failing to connect).
        let task = spawn(
            "http://127.0.0.1:1".into(),
            list.clone(),
            Duration::from_secs(1),
            false,
            Arc::new(FixedClock(NOW)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        task.abort();
    }
}
