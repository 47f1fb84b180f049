//! When keys change state. Everything here is a pure function of the stored
//! timestamps, the environment's policy and the time passed in (DESIGN.md
//! rule 4), so every replica computes the same answer.
//!
//! A rotation publishes the next key `lead` before it signs: it is created
//! `pending` with `activates_at = now + lead`, and the key that signs until
//! then gets `retires_at` equal to that instant. A retired key stays published
//! until every token it signed has expired and every JWKS cache has
//! refreshed: `removes_at = retires_at + token_ttl + jwks_max_age`.

use keyward_store::{KeyRecord, KeyState, RotationPolicy, Timestamp};
use thiserror::Error;

/// The longest a verifier may cache the JWKS: half the rotation lead (so a
/// verifier that honours `Cache-Control` sees the next key before it signs),
/// and never more than an hour.
pub fn jwks_max_age(policy: &RotationPolicy) -> i64 {
    (policy.lead_secs / 2).clamp(0, 3600)
}

/// How long a retired key stays published.
pub fn retention_after_retire(policy: &RotationPolicy) -> i64 {
    policy.token_ttl_secs + jwks_max_age(policy)
}

/// The key that signs at `now`: among active keys, the latest to activate.
pub fn signing_key(keys: &[KeyRecord], now: Timestamp) -> Option<&KeyRecord> {
    keys.iter()
        .filter(|k| k.state(now) == KeyState::Active)
        .max_by(|a, b| {
            a.activates_at
                .cmp(&b.activates_at)
                .then(a.created_at.cmp(&b.created_at))
        })
}

/// Keys published in the JWKS at `now`: pending, active and retired.
pub fn published(keys: &[KeyRecord], now: Timestamp) -> impl Iterator<Item = &KeyRecord> {
    keys.iter().filter(move |k| k.is_published(now))
}

/// How a new key enters an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Publish now, sign after the environment's policy lead time (the
    /// default).
    PolicyLead,
    /// Publish now, sign after this many seconds.
    Lead(i64),
    /// Sign at once. Verifiers that cached the JWKS do not know the key yet
    /// and reject its tokens until they refresh.
    Immediate,
}

impl Schedule {
    /// The schedule a request names: `immediate`, or a lead in seconds,
    /// or by default the policy's lead.
    pub fn requested(immediate: bool, lead_secs: Option<i64>) -> Schedule {
        match (immediate, lead_secs) {
            (true, _) => Schedule::Immediate,
            (false, Some(lead)) => Schedule::Lead(lead),
            (false, None) => Schedule::PolicyLead,
        }
    }
}

/// What a rotation will write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    /// When the new key starts signing.
    pub activates_at: Timestamp,
    /// Existing keys whose schedule changes (retire and removal times set).
    pub retiring: Vec<KeyRecord>,
}

/// Why a new key cannot be scheduled.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationError {
    /// A lead time below zero was asked for.
    #[error("the lead time cannot be negative")]
    NegativeLead(i64),
    /// A lead rotation while key `kid` is still pending: the new key would
    /// retire it before it ever signs.
    #[error(
        "a rotation is already in progress: key {kid} activates at {}; wait for it, or use --immediate",
        crate::fmt_time(*activates_at)
    )]
    InProgress {
        kid: String,
        activates_at: Timestamp,
    },
}

/// Plans bringing a new key into an environment whose keys are `keys`.
///
/// With no key that is active or pending, the new key activates at once (there
/// is nothing to hand over from). Otherwise the new key activates after the
/// lead (or now, for [`Schedule::Immediate`]), and every active or pending key
/// retires at that instant. A second lead rotation while one is pending is
/// refused: its key would never sign.
pub fn plan(
    policy: &RotationPolicy,
    keys: &[KeyRecord],
    now: Timestamp,
    schedule: Schedule,
) -> Result<RotationPlan, RotationError> {
    let live: Vec<&KeyRecord> = keys
        .iter()
        .filter(|k| matches!(k.state(now), KeyState::Active | KeyState::Pending))
        .collect();
    let lead = match schedule {
        _ if live.is_empty() => None,
        Schedule::Immediate => None,
        Schedule::PolicyLead => Some(policy.lead_secs),
        Schedule::Lead(lead) => Some(lead),
    };
    let activates_at = match lead {
        None => now,
        Some(lead) => {
            if lead < 0 {
                return Err(RotationError::NegativeLead(lead));
            }
            if let Some(p) = live.iter().find(|k| k.state(now) == KeyState::Pending) {
                return Err(RotationError::InProgress {
                    kid: p.kid.clone(),
                    activates_at: p.activates_at,
                });
            }
            now + lead
        }
    };
    let removal = retention_after_retire(policy);
    let retiring = live
        .into_iter()
        .filter(|k| k.retires_at.is_none_or(|r| r > activates_at))
        .map(|k| {
            let mut k = k.clone();
            k.retires_at = Some(activates_at);
            k.removes_at = Some(activates_at + removal);
            k
        })
        .collect();
    Ok(RotationPlan {
        activates_at,
        retiring,
    })
}

/// Whether the environment's scheduled rotation is due at `now`: the signing
/// key is older than `rotate_every - lead` and nothing is pending.
pub fn rotation_due(policy: &RotationPolicy, keys: &[KeyRecord], now: Timestamp) -> bool {
    match signing_key(keys, now) {
        None => !keys.iter().any(|k| k.state(now) == KeyState::Pending),
        Some(_) => rotation_overdue_secs(policy, keys, now).is_some(),
    }
}

/// When the scheduler next rotates the environment, from what `keys` hold:
/// `rotate_every - lead` after the newest key that signs or will sign
/// (a pending key's activation counts, so the rotation after it is
/// shown). `None` when no key signs or will (the scheduler leaves such an
/// environment alone). A time at or before `now` means the rotation is
/// due and happens at the scheduler's next tick ([`rotation_due`]).
pub fn next_rotation(
    policy: &RotationPolicy,
    keys: &[KeyRecord],
    now: Timestamp,
) -> Option<Timestamp> {
    let newest = keys
        .iter()
        .filter(|k| k.state(now) == KeyState::Pending)
        .max_by_key(|k| k.activates_at)
        .or_else(|| signing_key(keys, now))?;
    Some(newest.activates_at + policy.rotate_every_secs - policy.lead_secs)
}

/// How long the scheduled rotation has been overdue at `now`: the seconds
/// since it became due ([`rotation_due`]) while no key is pending. `None`
/// while nothing signs (keys are made on purpose, never by the scheduler),
/// while a rotation is pending, and before it is due. `serve` rotates within
/// one scheduler tick of the due time, so a value that keeps growing means
/// no replica is rotating (none running, or each failing).
pub fn rotation_overdue_secs(
    policy: &RotationPolicy,
    keys: &[KeyRecord],
    now: Timestamp,
) -> Option<i64> {
    if keys.iter().any(|k| k.state(now) == KeyState::Pending) {
        return None;
    }
    let due = signing_key(keys, now)?.activates_at + policy.rotate_every_secs - policy.lead_secs;
    (now >= due).then_some(now - due)
}

/// Whether a rotation is under way at `now`: a key is pending (published,
/// not signing yet), or the signing key took over from another less than
/// one JWKS cache lifetime ago (verifiers that cached the previous set are
/// still refreshing). Alerts that a handover can trip are silenced on it.
pub fn rotation_in_progress(policy: &RotationPolicy, keys: &[KeyRecord], now: Timestamp) -> bool {
    if keys.iter().any(|k| k.state(now) == KeyState::Pending) {
        return true;
    }
    signing_key(keys, now).is_some_and(|k| {
        now - k.activates_at < jwks_max_age(policy)
            && keys
                .iter()
                .any(|o| o.kid != k.kid && o.retires_at == Some(k.activates_at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_jose::seal::{seal, RootKey};
    use keyward_jose::Algorithm;

    fn key(kid: &str, activates_at: i64) -> KeyRecord {
        KeyRecord {
            env: "e".into(),
            kid: kid.into(),
            alg: Algorithm::ES256,
            size_bits: 256,
            public_jwk: "{}".into(),
            material: keyward_store::KeyMaterial::Sealed(
                seal(&RootKey::generate(), b"x", b"y").unwrap(),
            ),
            origin: "generated".into(),
            owner: None,
            description: None,
            created_at: activates_at,
            activates_at,
            retires_at: None,
            removes_at: None,
            revoked_at: None,
            destroyed_at: None,
        }
    }

    fn policy() -> RotationPolicy {
        RotationPolicy {
            lead_secs: 100,
            token_ttl_secs: 60,
            rotate_every_secs: 1000,
            ..RotationPolicy::default()
        }
    }

    #[test]
    fn the_policy_lead_is_the_environments() {
        let keys = vec![key("a", 0)];
        let by_policy = plan(&policy(), &keys, 10, Schedule::PolicyLead).unwrap();
        assert_eq!(
            by_policy,
            plan(&policy(), &keys, 10, Schedule::Lead(100)).unwrap()
        );
        assert_eq!(by_policy.activates_at, 110);
    }

    #[test]
    fn first_key_activates_now() {
        let p = plan(&policy(), &[], 10, Schedule::Lead(100)).unwrap();
        assert_eq!(p.activates_at, 10);
        assert!(p.retiring.is_empty());
    }

    #[test]
    fn lead_rotation_hands_over_at_activation() {
        let keys = vec![key("a", 0)];
        let p = plan(&policy(), &keys, 10, Schedule::Lead(100)).unwrap();
        assert_eq!(p.activates_at, 110);
        assert_eq!(p.retiring.len(), 1);
        assert_eq!(p.retiring[0].retires_at, Some(110));
        assert_eq!(p.retiring[0].removes_at, Some(110 + 60 + 50));
        // A second lead rotation while the first is pending is refused.
        let mut next = key("b", 110);
        next.created_at = 10;
        let keys = vec![p.retiring[0].clone(), next];
        let e = plan(&policy(), &keys, 20, Schedule::Lead(100)).unwrap_err();
        assert_eq!(
            e,
            RotationError::InProgress {
                kid: "b".into(),
                activates_at: 110
            }
        );
        assert!(
            e.to_string()
                .starts_with("a rotation is already in progress: key b activates at "),
            "{e}"
        );
        // A negative lead is refused whatever the keys.
        assert_eq!(
            plan(&policy(), &[key("a", 0)], 20, Schedule::Lead(-1)),
            Err(RotationError::NegativeLead(-1))
        );
        // Immediate replaces both the signing and the pending key now.
        let p2 = plan(&policy(), &keys, 20, Schedule::Immediate).unwrap();
        assert_eq!(p2.activates_at, 20);
        assert_eq!(p2.retiring.len(), 2);
        assert!(p2.retiring.iter().all(|k| k.retires_at.unwrap() <= 110));
    }

    #[test]
    fn signing_key_and_published_follow_the_clock() {
        let mut a = key("a", 0);
        a.retires_at = Some(110);
        a.removes_at = Some(220);
        let b = key("b", 110);
        let keys = vec![a, b];
        assert_eq!(signing_key(&keys, 50).unwrap().kid, "a");
        assert_eq!(signing_key(&keys, 110).unwrap().kid, "b");
        assert_eq!(published(&keys, 50).count(), 2);
        assert_eq!(published(&keys, 219).count(), 2);
        assert_eq!(published(&keys, 220).count(), 1);
    }

    #[test]
    fn due_after_rotate_every_minus_lead() {
        let keys = vec![key("a", 0)];
        assert!(!rotation_due(&policy(), &keys, 899));
        assert!(rotation_due(&policy(), &keys, 900));
        assert!(rotation_due(&policy(), &[], 0));
    }

    #[test]
    fn next_rotation_agrees_with_rotation_due() {
        let keys = vec![key("a", 0)];
        assert_eq!(next_rotation(&policy(), &keys, 10), Some(900));
        for now in [0, 899, 900, 5000] {
            let next = next_rotation(&policy(), &keys, now).unwrap();
            assert_eq!(rotation_due(&policy(), &keys, now), now >= next, "{now}");
        }
        // With a key pending, the next one follows it.
        let p = plan(&policy(), &keys, 900, Schedule::PolicyLead).unwrap();
        let mut b = key("b", p.activates_at);
        b.created_at = 900;
        let keys = vec![p.retiring[0].clone(), b];
        assert_eq!(next_rotation(&policy(), &keys, 950), Some(1000 + 900));
        assert!(!rotation_due(&policy(), &keys, 950));
        // No key that signs: nothing scheduled.
        assert_eq!(next_rotation(&policy(), &[], 0), None);
        let mut revoked = key("r", 0);
        revoked.revoked_at = Some(5);
        assert_eq!(next_rotation(&policy(), &[revoked], 10), None);
    }

    #[test]
    fn overdue_counts_from_the_due_time_until_a_key_is_pending() {
        let p = policy();
        let keys = vec![key("a", 0)];
        // Due at rotate_every - lead = 900.
        assert_eq!(rotation_overdue_secs(&p, &keys, 899), None);
        assert_eq!(rotation_overdue_secs(&p, &keys, 900), Some(0));
        assert_eq!(rotation_overdue_secs(&p, &keys, 4500), Some(3600));
        // Nothing signs: nothing to rotate on schedule.
        assert_eq!(rotation_overdue_secs(&p, &[], 4500), None);
        // A rotation started at 950: pending until 1050, then the new key
        // signs and its own schedule starts.
        let plan = plan(&p, &keys, 950, Schedule::PolicyLead).unwrap();
        let mut next = key("b", plan.activates_at);
        next.created_at = 950;
        let rotated = vec![plan.retiring[0].clone(), next];
        assert_eq!(rotation_overdue_secs(&p, &rotated, 1000), None);
        assert_eq!(rotation_overdue_secs(&p, &rotated, 1050), None);
        assert_eq!(rotation_overdue_secs(&p, &rotated, 1050 + 900), Some(0));
    }

    #[test]
    fn in_progress_from_publication_until_caches_have_refreshed() {
        let p = policy();
        let keys = vec![key("a", 0)];
        assert!(!rotation_in_progress(&p, &keys, 500));
        assert!(!rotation_in_progress(&p, &[], 500));
        // The first key of an environment is no handover.
        assert!(!rotation_in_progress(&p, &keys, 0));
        let plan = plan(&p, &keys, 950, Schedule::PolicyLead).unwrap();
        let mut next = key("b", plan.activates_at);
        next.created_at = 950;
        let rotated = vec![plan.retiring[0].clone(), next];
        // Pending from its publication at 950.
        assert!(rotation_in_progress(&p, &rotated, 950));
        assert!(rotation_in_progress(&p, &rotated, 1049));
        // b signs at 1050; caches refresh within jwks_max_age (50).
        assert!(rotation_in_progress(&p, &rotated, 1050));
        assert!(rotation_in_progress(&p, &rotated, 1099));
        assert!(!rotation_in_progress(&p, &rotated, 1100));
    }

    #[test]
    fn max_age_is_half_the_lead_capped() {
        assert_eq!(jwks_max_age(&policy()), 50);
        assert_eq!(jwks_max_age(&RotationPolicy::default()), 3600);
    }
}
