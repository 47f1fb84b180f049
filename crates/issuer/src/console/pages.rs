//! The console's pages as HTML (maud: every value is escaped by the
//! engine; nothing here writes raw markup). Pure functions of what the
//! handlers looked up: no store, no clock of their own.

use keyward_store::{
    AuditRecord, AuditReport, Client, Environment, KeyRecord, KeyState, Timestamp,
};
use maud::{html, Markup, DOCTYPE};

use super::rates::Rate;
use super::session::Flash;
use crate::fmt_time;

/// The stylesheet, served at [`CSS_PATH`].
pub(crate) const CSS: &str = include_str!("console.css");
pub(crate) const CSS_PATH: &str = "/console/static/console.css";

/// What every page around its body shows.
pub(crate) struct Chrome<'a> {
    /// The logged-in admin token's id and the session's CSRF token
    /// (navigation and logout); `None` on the login and error pages.
    pub(crate) session: Option<(&'a str, &'a str)>,
    pub(crate) flash: Option<&'a Flash>,
}

impl Chrome<'_> {
    pub(crate) const NONE: Chrome<'static> = Chrome {
        session: None,
        flash: None,
    };
}

/// A whole page.
pub(crate) fn page(title: &str, chrome: &Chrome, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keyward console" }
                link rel="stylesheet" href=(CSS_PATH);
            }
            body {
                header {
                    a.brand href="/console/envs" { "keyward" }
                    @if let Some((admin, csrf)) = chrome.session {
                        nav {
                            a href="/console/envs" { "Environments" }
                            a href="/console/audit" { "Audit log" }
                            a href="/console/health" { "Health" }
                        }
                        form.logout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span.who { "admin token " code { (admin) } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(f) = chrome.flash {
                        p class={"flash " @if f.ok { "ok" } @else { "error" }} role="status" { (f.text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub(crate) fn login(csrf: &str, problem: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(p) = problem {
            p.flash.error role="alert" { (p) }
        }
        form.login method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="off" required
                placeholder="kwa_…";
            button type="submit" { "Log in" }
        }
        p.hint { "An admin token is made with " code { "keyward admin-token create" } "." }
    };
    page("Log in", &Chrome::NONE, body)
}

pub(crate) fn problem(status: u16, text: &str, chrome: &Chrome) -> Markup {
    let body = html! {
        p.flash.error role="alert" { (text) }
        p { a href="/console/envs" { "Back to the console" } }
    };
    page(&format!("Refused ({status})"), chrome, body)
}

/// An environment's row on the list.
pub(crate) struct EnvRow<'a> {
    pub(crate) env: &'a Environment,
    pub(crate) signing: Option<&'a KeyRecord>,
    pub(crate) next_rotation: Option<Timestamp>,
    pub(crate) keys: usize,
}

pub(crate) fn envs(rows: &[EnvRow], now: Timestamp, chrome: &Chrome) -> Markup {
    let body = html! {
        @if rows.is_empty() {
            p { "No environment yet: make one with " code { "keyward env create" } "." }
        } @else {
            table.envs {
                thead { tr { th { "Name" } th { "Issuer" } th { "Algorithm" } th { "Key store" }
                    th { "Signing key" } th { "Keys" } th { "Next rotation" } th {} } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={"/console/envs/" (r.env.name)} { (r.env.name) } }
                            td { code { (r.env.issuer) } }
                            td { (r.env.policy.alg.name()) }
                            td { (r.env.key_store.as_str()) }
                            td { @match r.signing { Some(k) => code { (k.kid) }, None => span.bad { "none" } } }
                            td { (r.keys) }
                            td { (when(r.next_rotation, now)) }
                            td { a href={"/console/envs/" (r.env.name) "/clients"} { "Clients" } }
                        }
                    }
                }
            }
        }
    };
    page("Environments", chrome, body)
}

/// A time, or "due now" when it has passed, or "none".
fn when(t: Option<Timestamp>, now: Timestamp) -> Markup {
    html! {
        @match t {
            Some(t) if t <= now => span.warn { "due now (" (fmt_time(t)) ")" },
            Some(t) => { (fmt_time(t)) },
            None => span.muted { "none scheduled" },
        }
    }
}

fn opt_time(t: Option<Timestamp>) -> Markup {
    html! { @match t { Some(t) => { (fmt_time(t)) }, None => span.muted { "–" } } }
}

pub(crate) struct EnvPage<'a> {
    pub(crate) env: &'a Environment,
    pub(crate) keys: &'a [KeyRecord],
    pub(crate) timeline: Markup,
    pub(crate) next_rotation: Option<Timestamp>,
    pub(crate) now: Timestamp,
}

pub(crate) fn env(p: &EnvPage, chrome: &Chrome) -> Markup {
    let csrf = chrome.session.map(|(_, c)| c).unwrap_or_default();
    let name = &p.env.name;
    let policy = &p.env.policy;
    let body = html! {
        p.summary {
            "Issuer " code { (p.env.issuer) } " · " (policy.alg.name())
            " · rotates every " (secs(policy.rotate_every_secs))
            ", next key published " (secs(policy.lead_secs)) " before it signs"
            " · next rotation " (when(p.next_rotation, p.now))
            " · " a href={"/console/envs/" (name) "/clients"} { "Clients" }
        }
        h2 { "Key timeline" }
        figure.timeline {
            (p.timeline)
            figcaption.legend {
                span.sw.pending {} "pending (published, not signing)"
                span.sw.active {} "active (signing)"
                span.sw.retired {} "retired (published, not signing)"
                span.sw.revoked {} "revoked"
                span.sw.now {} "now"
                span.sw.next {} "next scheduled rotation"
            }
        }
        h2 { "Keys" }
        form.rotate method="post" action={"/console/envs/" (name) "/rotate"} {
            input type="hidden" name="csrf" value=(csrf);
            label for="schedule" { "Rotate: the new key signs " }
            select #schedule name="schedule" {
                option value="lead" selected { "after the policy lead (" (secs(policy.lead_secs)) ")" }
                option value="immediate" { "at once (caches that lack it reject its tokens)" }
            }
            button type="submit" { "Rotate now" }
        }
        table.keys {
            thead { tr { th { "Kid" } th { "Algorithm" } th { "State" } th { "Store" } th { "Created" }
                th { "Signs from" } th { "Retires" } th { "Removed" } th { "Revoked" } th { "Actions" } } }
            tbody {
                @for k in p.keys {
                    @let state = k.state(p.now);
                    tr data-kid=(k.kid) {
                        td { code { (k.kid) } }
                        td { (k.alg.name()) }
                        td { span class={"state " (state.name())} { (state.name()) } }
                        td { (k.key_store().as_str()) }
                        td { (fmt_time(k.created_at)) }
                        td { (fmt_time(k.activates_at)) }
                        td { (opt_time(k.retires_at)) }
                        td { (opt_time(k.removes_at)) }
                        td { (opt_time(k.revoked_at)) }
                        td.actions {
                            @if matches!(state, KeyState::Active | KeyState::Pending) {
                                form method="post" action={"/console/envs/" (name) "/keys/" (k.kid) "/retire"} {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Retire" }
                                }
                            }
                            @if !matches!(state, KeyState::Revoked | KeyState::Removed) {
                                form.revoke method="post" action={"/console/envs/" (name) "/keys/" (k.kid) "/revoke"} {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="text" name="confirm" required autocomplete="off"
                                        placeholder="type the kid to confirm" aria-label={"type " (k.kid) " to confirm"};
                                    input type="text" name="reason" placeholder="reason (optional)" maxlength="500";
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&format!("Environment {name}"), chrome, body)
}

/// A duration in seconds as the largest whole unit.
fn secs(s: i64) -> String {
    match s {
        s if s % 86400 == 0 && s > 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub(crate) fn clients(env: &str, list: &[Client], chrome: &Chrome) -> Markup {
    let csrf = chrome.session.map(|(_, c)| c).unwrap_or_default();
    let body = html! {
        p.summary { a href={"/console/envs/" (env)} { "Keys of " (env) } }
        @if list.is_empty() {
            p { "No client yet." }
        } @else {
            table.clients {
                thead { tr { th { "Client id" } th { "Name" } th { "Authentication" } th { "Scopes" }
                    th { "Audiences" } th { "Grant types" } th { "Created" } th { "Actions" } } }
                tbody {
                    @for c in list {
                        tr data-client=(c.client_id) {
                            td { code { (c.client_id) } }
                            td.name { (c.name) }
                            td { (c.auth.as_str()) }
                            td { (c.scopes.join(" ")) }
                            td { (c.audiences.join(" ")) }
                            td { (c.grant_types.join(" ")) }
                            td { (fmt_time(c.created_at)) }
                            td.actions {
                                @if c.auth.uses_secret() {
                                    form method="post" action={"/console/envs/" (env) "/clients/" (c.client_id) "/rotate-secret"} {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" { "New secret" }
                                    }
                                }
                                form method="post" action={"/console/envs/" (env) "/clients/" (c.client_id) "/delete"} {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.danger type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New client" }
        form.create method="post" action={"/console/envs/" (env) "/clients"} {
            input type="hidden" name="csrf" value=(csrf);
            label for="name" { "Name" }
            input #name type="text" name="name" required maxlength="200";
            label for="auth" { "Authentication" }
            select #auth name="auth" {
                option value="client_secret_basic" selected { "client_secret_basic" }
                option value="client_secret_post" { "client_secret_post" }
            }
            label for="scopes" { "Scopes (space-separated)" }
            input #scopes type="text" name="scopes";
            label for="audiences" { "Audiences (space-separated)" }
            input #audiences type="text" name="audiences";
            fieldset {
                legend { "Grant types" }
                label { input type="checkbox" name="client_credentials" value="on" checked; " client_credentials" }
                label { input type="checkbox" name="refresh_token" value="on" checked; " refresh_token" }
            }
            button type="submit" { "Create client" }
        }
    };
    page(&format!("Clients of {env}"), chrome, body)
}

/// A client secret, shown once (in the answer to the POST that made it).
pub(crate) fn secret(env: &str, client: &str, name: &str, secret: &str, chrome: &Chrome) -> Markup {
    let body = html! {
        p.flash.ok role="status" { "Client " code { (client) } " (" (name) ") has a new secret." }
        dl.secret {
            dt { "client_id" } dd { code #client-id { (client) } }
            dt { "client_secret" } dd { code #client-secret { (secret) } }
        }
        p.warn { "Copy the secret now: it is shown once and stored only hashed. Leaving or reloading this page loses it." }
        p { a href={"/console/envs/" (env) "/clients"} { "Back to the clients of " (env) } }
    };
    page("Client secret", chrome, body)
}

/// The audit page's filters, as given.
#[derive(Default)]
pub(crate) struct AuditFilter {
    pub(crate) action: String,
    pub(crate) env: String,
    pub(crate) since: String,
    pub(crate) until: String,
}

pub(crate) struct AuditPage<'a> {
    pub(crate) report: &'a AuditReport,
    pub(crate) filter: &'a AuditFilter,
    pub(crate) records: &'a [AuditRecord],
    /// The `before` of the next (older) page, if there is more.
    pub(crate) older: Option<String>,
}

pub(crate) fn audit(p: &AuditPage, chrome: &Chrome) -> Markup {
    let f = p.filter;
    let body = html! {
        @match &p.report.first_broken {
            None => p.chain.ok {
                "Chain intact: " (p.report.length) " records"
                @if let Some(h) = &p.report.head_hash { ", head " code { (h) } }
            },
            Some(b) => p.chain.bad role="alert" {
                "Chain broken at record " (b.seq) ": " (b.reason)
            },
        }
        form.filters method="get" action="/console/audit" {
            label for="action" { "Action" }
            input #action type="text" name="action" value=(f.action) placeholder="key.rotate, client.";
            label for="env" { "Environment" }
            input #env type="text" name="env" value=(f.env);
            label for="since" { "Since (UTC)" }
            input #since type="text" name="since" value=(f.since) placeholder="2026-01-31T00:00:00Z";
            label for="until" { "Until (UTC)" }
            input #until type="text" name="until" value=(f.until);
            button type="submit" { "Filter" }
        }
        @if p.records.is_empty() {
            p { "No record matches." }
        } @else {
            table.audit {
                thead { tr { th { "#" } th { "At" } th { "Actor" } th { "Action" } th { "Environment" }
                    th { "Subject" } th { "Detail" } } }
                tbody {
                    @for r in p.records {
                        tr {
                            td { (r.seq) }
                            td { (fmt_time(r.at)) }
                            td { (r.actor) }
                            td { code { (r.action) } }
                            td { (r.env.as_deref().unwrap_or("")) }
                            td { (r.subject.as_deref().unwrap_or("")) }
                            td.detail { (detail(&r.detail)) }
                        }
                    }
                }
            }
        }
        @if let Some(q) = &p.older {
            p { a href={"/console/audit?" (q)} { "Older records" } }
        }
    };
    page("Audit log", chrome, body)
}

/// A record's detail, compact, cut at 300 characters.
fn detail(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// An environment's signing on the health page.
pub(crate) struct SignerRow {
    pub(crate) env: String,
    pub(crate) signing: Option<(String, &'static str, &'static str)>,
    /// Why it cannot sign, if it cannot.
    pub(crate) problem: Option<String>,
}

pub(crate) struct HealthPage<'a> {
    pub(crate) ready: bool,
    pub(crate) lines: &'a [String],
    pub(crate) signers: &'a [SignerRow],
    pub(crate) rates: Option<(Vec<Rate>, std::time::Duration)>,
}

pub(crate) fn health(p: &HealthPage, chrome: &Chrome) -> Markup {
    let body = html! {
        h2 { "Readiness" }
        p class={"chain " @if p.ready { "ok" } @else { "bad" }} {
            @if p.ready { "Ready" } @else { "Not ready" }
        }
        ul.readiness { @for l in p.lines { li { (l) } } }
        h2 { "Signers" }
        table.signers {
            thead { tr { th { "Environment" } th { "Signing key" } th { "Algorithm" } th { "Key store" } th { "Status" } } }
            tbody {
                @for s in p.signers {
                    tr {
                        td { (s.env) }
                        @match &s.signing {
                            Some((kid, alg, store)) => { td { code { (kid) } } td { (alg) } td { (store) } },
                            None => { td { span.muted { "none" } } td {} td {} },
                        }
                        td { @match &s.problem { Some(p) => span.bad { (p) }, None => span.good { "signing" } } }
                    }
                }
            }
        }
        h2 { "Token requests" }
        @match &p.rates {
            None => p.muted { "Rates appear once two samples of the counters are a second or more apart (one is taken every 10 s and at each view of this page)." },
            Some((rows, span)) => {
                p.muted { "Per minute over the last " (span.as_secs()) " s (this replica)." }
                @if rows.is_empty() {
                    p { "No token request yet." }
                } @else {
                    table.rates {
                        thead { tr { th { "Environment" } th { "Outcome" } th { "Per minute" } th { "Since start" } } }
                        tbody {
                            @for r in rows {
                                tr {
                                    td { (r.env) }
                                    td { code { (r.outcome) } }
                                    td { (format!("{:.1}", r.per_minute)) }
                                    td { (r.total) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Health", chrome, body)
}
