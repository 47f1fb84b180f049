//! Automatic rotation inside `serve`. Every tick, each environment whose
//! signing key is older than `rotate_every - lead` gets its next key,
//! published now and signing after the lead. Removal needs no action: it is
//! derived from `removes_at`; but a device key that left the JWKS (removed
//! or revoked) has its device object destroyed by the same tick
//! ([`Authority::destroy_unpublished`]), retried at each tick while its
//! device fails.
//!
//! With several replicas on one store, each may decide a rotation is due, but
//! only one performs it: the key is added in a transaction that takes the
//! store's writer lock and re-reads the keys, and a second rotation while one
//! is pending is refused (see [`crate::rotation::plan`]).

use std::sync::Arc;
use std::time::Duration;

use crate::authority::Authority;
use crate::error::error_chain;
use crate::error::IssuerError;
use crate::keyring::{self, Change, KeyChoice, KeyOptions, Origin};
use crate::rotation::{self, RotationError, Schedule};

/// The audit actor of scheduled rotations.
pub const ACTOR: &str = "scheduler";

impl Authority {
    /// Rotates every environment that is due; returns the environments
    /// rotated. An environment that fails is logged and skipped; the error
    /// is returned only when no environment was rotated.
    pub async fn rotate_due(&self) -> Result<Vec<String>, IssuerError> {
        let snapshot = self.snapshot();
        let now = self.now();
        let mut rotated = Vec::new();
        let mut failed = None;
        for e in &snapshot.envs {
            // Keys are made on purpose: an environment with no key is left alone.
            if rotation::signing_key(&e.keys, now).is_none()
                || !rotation::rotation_due(&e.env.policy, &e.keys, now)
            {
                continue;
            }
            let opts = KeyOptions {
                kid: None,
                owner: None,
                description: Some("scheduled rotation".into()),
                origin: Origin::Generated,
            };
            let at = || Change {
                now: self.now(),
                actor: ACTOR,
            };
            // After a root-key rotation, the new root key (or a clear
            // error, for this environment only: the others go on).
            let root = match self.sealing_root().await {
                Ok(root) => root,
                Err(err) => {
                    tracing::error!(env = %e.env.name, error = %error_chain(&err), "scheduled rotation failed: the root key is not available; retried at the next tick");
                    failed.get_or_insert(err);
                    continue;
                }
            };
            match keyring::generate_key(
                &self.store,
                &root,
                self.key_stores(),
                &e.env.name,
                KeyChoice::Policy,
                &opts,
                Schedule::PolicyLead,
                at,
            )
            .await
            {
                Ok(added) => {
                    tracing::info!(env = %e.env.name, kid = %added.key.kid, activates_at = added.key.activates_at, "scheduled rotation");
                    rotated.push(e.env.name.clone());
                }
                // Another replica rotated first.
                Err(IssuerError::Rotation(r @ RotationError::InProgress { .. })) => {
                    tracing::debug!(env = %e.env.name, "rotation skipped: {r}")
                }
                // One environment's failure (its device is down) does not
                // hold back the others: logged, retried at the next tick.
                Err(err) => {
                    tracing::error!(env = %e.env.name, error = %error_chain(&err), "scheduled rotation failed; retried at the next tick");
                    failed.get_or_insert(err);
                }
            }
        }
        if !rotated.is_empty() {
            self.reload().await?;
        }
        match failed {
            Some(e) if rotated.is_empty() => Err(e),
            _ => Ok(rotated),
        }
    }

    /// Destroys the device objects of device keys that left the JWKS and
    /// are not destroyed yet (see [`keyring::destroy_unpublished`]);
    /// returns the kids destroyed. Failures are logged and retried at the
    /// next call.
    pub async fn destroy_unpublished(&self) -> Result<Vec<String>, IssuerError> {
        let at = Change {
            now: self.now(),
            actor: ACTOR,
        };
        let sweep = keyring::destroy_unpublished(&self.store, self.key_stores(), at).await?;
        for (kid, e) in &sweep.failed {
            tracing::warn!(%kid, error = %error_chain(e), "a device key that left the JWKS could not be destroyed yet; retried at the next tick");
        }
        if !sweep.destroyed.is_empty() {
            self.reload().await?;
        }
        Ok(sweep.destroyed)
    }

    /// Runs [`Authority::rotate_due`], [`Authority::destroy_unpublished`]
    /// and [`Authority::purge_login_records`] every `interval` until aborted.
    pub fn spawn_scheduler(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let a = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = a.rotate_due().await {
                    tracing::error!(error = %error_chain(&e), "scheduled rotation failed");
                }
                if let Err(e) = a.destroy_unpublished().await {
                    tracing::error!(error = %error_chain(&e), "the sweep of device keys to destroy failed");
                }
                if let Err(e) = a.purge_login_records().await {
                    tracing::error!(error = %error_chain(&e), "purging expired login records failed");
                }
            }
        })
    }
}
