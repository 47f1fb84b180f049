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
        AuditCmd::Verify { json } => {
            let r = store.verify_audit().await?;
            if json {
                print_json(&serde_json::to_value(&r)?);
            }
            match &r.first_broken {
                None => {
                    if !json {
                        outln!(
                            "audit chain intact: {} records, head {}",
                            r.length,
                            r.head_hash.as_deref().unwrap_or("-")
                        );
                    }
                    Ok(())
                }
                Some(b) => bail!("audit chain broken at record {}: {}", b.seq, b.reason),
            }
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
