//! `keyward audit`: the append-only audit chain.

use crate::output::outln;
use anyhow::{bail, Result};
use keyward_issuer::fmt_time;
use serde_json::{json, Value};

use crate::args::AuditCmd;
use crate::context::Context;
use crate::output::{print_json, table};

pub async fn run(ctx: &Context, cmd: AuditCmd) -> Result<()> {
    let store = ctx.store().await?;
    match cmd {
        AuditCmd::Verify { json, expect_head } => {
            let r = match &expect_head {
                Some(h) => {
                    if h.len() != 64
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    {
                        bail!("--expect-head must be a head_hash from `keyward audit verify --json`: 64 lowercase hex digits");
                    }
                    store.verify_audit_expecting(h).await?
                }
                None => store.verify_audit().await?,
            };
            if json {
                print_json(&serde_json::to_value(&r)?);
            }
            if let Some(b) = &r.first_broken {
                bail!("audit chain broken at record {}: {}", b.seq, b.reason);
            }
            let head = r.head_hash.as_deref().unwrap_or("-");
            match &r.expected_head {
                Some(e) if e.seq.is_none() => bail!(
                    "the expected head {} is not in the audit chain ({} records, head {head}): records were removed from its end, or the hash is from another store",
                    e.hash,
                    r.length
                ),
                Some(e) if !json => outln!(
                    "audit chain intact: {} records, head {head}; the expected head is record {} ({} records since)",
                    r.length,
                    e.seq.unwrap_or_default(),
                    r.length - e.seq.unwrap_or_default()
                ),
                None if !json => outln!("audit chain intact: {} records, head {head}", r.length),
                _ => {}
            }
            Ok(())
        }
        AuditCmd::List { after, limit, json } => {
            let recs = store.audit(after, limit.clamp(1, 10_000)).await?;
            if json {
                let v: Vec<Value> = recs
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                        v["at_rfc3339"] = json!(fmt_time(r.at));
                        v
                    })
                    .collect();
                print_json(&Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = recs
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            fmt_time(r.at),
                            r.actor.clone(),
                            r.action.clone(),
                            r.env.clone().unwrap_or_else(|| "-".into()),
                            r.subject.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(&["SEQ", "AT", "ACTOR", "ACTION", "ENV", "SUBJECT"], &rows);
            }
            Ok(())
        }
    }
}
