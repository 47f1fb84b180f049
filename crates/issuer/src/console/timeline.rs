//! An environment's key timeline as SVG: one row per key, a bar from its
//! creation (published, pending) to its activation (signing), retirement
//! (published, not signing) and removal; a revoked key's bar stops at its
//! revocation. A vertical line marks now, a dashed one the next scheduled
//! rotation. Everything is computed from the stored timestamps, the
//! rotation policy and the time passed in (DESIGN.md rule 4); the picture
//! needs no script and no style attribute (colours come from classes).

use keyward_store::{KeyRecord, RotationPolicy, Timestamp};
use maud::{html, Markup};

use crate::rotation;

const WIDTH: f64 = 960.0;
const LABEL: f64 = 190.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 38.0;
const ROW: f64 = 30.0;
const BAR: f64 = 18.0;
/// Most keys drawn (the newest).
const MAX_ROWS: usize = 12;

/// One stretch of a key's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// `pending`, `active`, `retired`.
    pub(crate) phase: &'static str,
    pub(crate) from: Timestamp,
    /// `None`: goes on past the picture's end (no end is scheduled).
    pub(crate) to: Option<Timestamp>,
}

/// A key's stretches, in order, and its revocation time if revoked.
pub(crate) fn segments(k: &KeyRecord) -> (Vec<Segment>, Option<Timestamp>) {
    let stop = k.revoked_at;
    let cut = |t: Option<Timestamp>| match (t, stop) {
        (Some(t), Some(s)) => Some(t.min(s)),
        (t, s) => t.or(s),
    };
    let mut out = Vec::new();
    let mut push = |phase, from: Timestamp, to: Option<Timestamp>| {
        let from = from.min(stop.unwrap_or(from));
        if to.is_none_or(|to| to > from) {
            out.push(Segment { phase, from, to });
        }
    };
    push("pending", k.created_at, cut(Some(k.activates_at)));
    push("active", k.activates_at, cut(k.retires_at));
    if let Some(r) = k.retires_at {
        push("retired", r, cut(k.removes_at));
    }
    // Nothing after the revocation.
    out.retain(|s| stop.is_none_or(|s2| s.from < s2));
    (out, stop)
}

/// The keys worth drawing at `now`: the newest [`MAX_ROWS`], oldest first.
fn shown(keys: &[KeyRecord]) -> Vec<&KeyRecord> {
    let mut v: Vec<&KeyRecord> = keys.iter().collect();
    v.sort_by_key(|k| (k.created_at, k.activates_at));
    let skip = v.len().saturating_sub(MAX_ROWS);
    v.split_off(skip)
}

/// The time span drawn: every instant shown, now and the next rotation,
/// with a margin; at least an hour.
fn span(keys: &[&KeyRecord], now: Timestamp, next: Option<Timestamp>) -> (Timestamp, Timestamp) {
    let mut lo = now;
    let mut hi = now;
    let mut see = |t: Timestamp| {
        lo = lo.min(t);
        hi = hi.max(t);
    };
    for k in keys {
        see(k.created_at);
        see(k.activates_at);
        for t in [k.retires_at, k.removes_at, k.revoked_at]
            .into_iter()
            .flatten()
        {
            see(t);
        }
    }
    if let Some(n) = next {
        see(n);
    }
    let pad = ((hi - lo) / 20).max(300);
    let (lo, hi) = ((lo - pad).max(0), hi + pad);
    if hi - lo < 3600 {
        (lo, lo + 3600)
    } else {
        (lo, hi)
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of `t`.
fn short(t: Timestamp) -> String {
    let s = crate::fmt_time(t);
    format!("{} {}", &s[..10], &s[11..16])
}

/// A kid short enough for the label column (the whole one is its title).
fn short_kid(kid: &str) -> String {
    match kid.char_indices().nth(14) {
        Some((i, _)) => format!("{}…", &kid[..i]),
        None => kid.to_string(),
    }
}

/// The timeline of `keys` under `policy` at `now`.
pub(crate) fn svg(keys: &[KeyRecord], policy: &RotationPolicy, now: Timestamp) -> Markup {
    let next = rotation::next_rotation(policy, keys, now);
    let rows = shown(keys);
    let (t0, t1) = span(&rows, now, next);
    let plot = WIDTH - LABEL - RIGHT;
    let x = |t: Timestamp| LABEL + plot * ((t.clamp(t0, t1) - t0) as f64) / ((t1 - t0) as f64);
    let height = TOP + ROW * rows.len().max(1) as f64 + 34.0;
    let bottom = height - 30.0;
    let ticks: Vec<Timestamp> = (0..=4).map(|i| t0 + (t1 - t0) * i / 4).collect();
    let next_label = next.map(|n| match n <= now {
        true => "next rotation: due now".to_string(),
        false => format!("next rotation {}", short(n)),
    });
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox={"0 0 " (WIDTH) " " (height)} width=(WIDTH) height=(height)
            aria-label="key timeline" {
            title { "Key timeline" }
            // Time axis.
            @for t in &ticks {
                line.grid x1=(x(*t)) x2=(x(*t)) y1=(TOP - 8.0) y2=(bottom) {}
                text.tick x=(x(*t)) y=(bottom + 16.0) text-anchor="middle" { (short(*t)) }
            }
            @if rows.is_empty() {
                text.empty x=(LABEL) y=(TOP + 18.0) { "no keys" }
            }
            @for (i, k) in rows.iter().enumerate() {
                @let y = TOP + ROW * i as f64;
                @let (segs, revoked) = segments(k);
                g.key data-kid=(k.kid) {
                    text.kid x=(LABEL - 8.0) y=(y + BAR - 4.0) text-anchor="end" {
                        title { (k.kid) }
                        (short_kid(&k.kid)) " (" (k.state(now).name()) ")"
                    }
                    @for s in &segs {
                        @let end = s.to.unwrap_or(t1);
                        rect class={"seg " (s.phase) @if s.to.is_none() { " open" }}
                            x=(x(s.from)) y=(y) width=((x(end) - x(s.from)).max(1.0)) height=(BAR) {
                            title {
                                (k.kid) " " (s.phase) " from " (crate::fmt_time(s.from))
                                @match s.to {
                                    Some(t) => { " to " (crate::fmt_time(t)) }
                                    None => { ", no end scheduled" }
                                }
                            }
                        }
                    }
                    @if let Some(r) = revoked {
                        line.revoked x1=(x(r)) x2=(x(r)) y1=(y - 3.0) y2=(y + BAR + 3.0) {
                            title { (k.kid) " revoked at " (crate::fmt_time(r)) }
                        }
                    }
                }
            }
            @if let (Some(n), Some(label)) = (next, &next_label) {
                line.next x1=(x(n)) x2=(x(n)) y1=(TOP - 10.0) y2=(bottom) {
                    title { (label) " (" (crate::fmt_time(n)) ")" }
                }
                text.next x=(x(n)) y=(TOP - 14.0) text-anchor="middle" { (label) }
            }
            line.now x1=(x(now)) x2=(x(now)) y1=(TOP - 24.0) y2=(bottom) {
                title { "now: " (crate::fmt_time(now)) }
            }
            text.now x=(x(now)) y=(TOP - 28.0) text-anchor="middle" { "now " (short(now)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_jose::Algorithm;

    /// A realistic base time (the picture prints dates).
    const T: i64 = 1_700_000_000;

    fn key(kid: &str, created: i64, activates: i64) -> KeyRecord {
        KeyRecord {
            env: "e".into(),
            kid: kid.into(),
            alg: Algorithm::ES256,
            size_bits: 256,
            public_jwk: "{}".into(),
            material: keyward_store::KeyMaterial::Device {
                store: keyward_store::KeyStoreName::Pkcs11,
                reference: "r".into(),
            },
            origin: "generated".into(),
            owner: None,
            description: None,
            created_at: created,
            activates_at: activates,
            retires_at: None,
            removes_at: None,
            revoked_at: None,
            destroyed_at: None,
        }
    }

    #[test]
    fn segments_follow_the_stored_times() {
        let mut k = key("a", 0, 100);
        assert_eq!(
            segments(&k).0,
            vec![
                Segment {
                    phase: "pending",
                    from: 0,
                    to: Some(100)
                },
                Segment {
                    phase: "active",
                    from: 100,
                    to: None
                }
            ]
        );
        k.retires_at = Some(500);
        k.removes_at = Some(800);
        let (s, revoked) = segments(&k);
        assert_eq!(revoked, None);
        assert_eq!(
            s.iter()
                .map(|s| (s.phase, s.from, s.to))
                .collect::<Vec<_>>(),
            vec![
                ("pending", 0, Some(100)),
                ("active", 100, Some(500)),
                ("retired", 500, Some(800))
            ]
        );
        // A revocation cuts the bar where it happened.
        k.revoked_at = Some(300);
        let (s, revoked) = segments(&k);
        assert_eq!(revoked, Some(300));
        assert_eq!(
            s.iter()
                .map(|s| (s.phase, s.from, s.to))
                .collect::<Vec<_>>(),
            vec![("pending", 0, Some(100)), ("active", 100, Some(300))]
        );
        // Revoked while pending: no active stretch at all.
        let mut p = key("p", 0, 100);
        p.revoked_at = Some(50);
        assert_eq!(
            segments(&p)
                .0
                .iter()
                .map(|s| (s.phase, s.from, s.to))
                .collect::<Vec<_>>(),
            vec![("pending", 0, Some(50))]
        );
        // A key made active at once has no pending stretch.
        assert_eq!(segments(&key("i", 7, 7)).0[0].phase, "active");
    }

    #[test]
    fn the_picture_shows_keys_now_and_the_next_rotation() {
        let policy = RotationPolicy {
            lead_secs: 100,
            token_ttl_secs: 60,
            rotate_every_secs: 1000,
            ..RotationPolicy::default()
        };
        let keys = vec![key("k1", T, T)];
        let svg = svg(&keys, &policy, T + 10).into_string();
        assert!(svg.starts_with("<svg class=\"timeline\""), "{svg}");
        assert!(svg.contains("data-kid=\"k1\""), "{svg}");
        assert!(svg.contains("class=\"seg active open\""), "{svg}");
        assert!(svg.contains("<line class=\"now\""), "{svg}");
        // Next rotation: rotate_every - lead after activation.
        assert!(
            svg.contains(&format!("next rotation {}", short(T + 900))),
            "{svg}"
        );
        assert!(!svg.contains("style="), "no inline style: {svg}");
        // Overdue: shown as due.
        assert!(svg_at(&keys, &policy, T + 2000).contains("next rotation: due now"));
        // No key: said, and no next rotation.
        let empty = svg_at(&[], &policy, T);
        assert!(empty.contains("no keys") && !empty.contains("class=\"next\""));
    }

    fn svg_at(keys: &[KeyRecord], p: &RotationPolicy, now: i64) -> String {
        svg(keys, p, now).into_string()
    }

    #[test]
    fn only_the_newest_keys_are_drawn() {
        let keys: Vec<KeyRecord> = (0..20)
            .map(|i| key(&format!("k{i:02}"), T + i * 10, T + i * 10))
            .collect();
        let s = svg(&keys, &RotationPolicy::default(), T + 200).into_string();
        assert!(!s.contains("data-kid=\"k07\"") && s.contains("data-kid=\"k08\""));
        assert_eq!(s.matches("<g class=\"key\"").count(), MAX_ROWS);
    }
}
