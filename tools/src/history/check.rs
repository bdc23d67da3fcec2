//! The checker: is a recorded history explainable by the contract's sequential rules?
//!
//! Codes and token families are checked rule by rule; each rule names an order of events no
//! sequential execution can produce, given only the real-time order of calls (A ended before
//! B started) and treating an unknown outcome as "may or may not have happened, at any moment
//! after its start". Sessions are registers checked for linearizability with [`super::wgl`].
//! Feeds are checked for order, gaps, repeats and agreement with the calls.
//!
//! Secrets never appear in a report: tokens and codes are named by the operation that minted
//! them (`tok#17`, `code#4`) and their public ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde_json::Value;

use super::wgl::{self, Entry, Verdict};
use super::{History, Op, Outcome};

/// One thing the history shows that the contract forbids.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub kind: &'static str,
    pub detail: String,
}

/// The checker's verdict on a history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub ops: usize,
    pub unknown: usize,
    /// Per-object histories checked: codes, token families, sessions, feeds.
    pub histories: usize,
    pub events: usize,
    /// Session histories whose search ran out of budget (neither passed nor failed).
    pub undecided: usize,
    pub anomalies: Vec<Anomaly>,
    /// Interesting counts: races run, winners, and so on.
    pub stats: BTreeMap<&'static str, u64>,
}

impl Report {
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.anomalies {
            *counts.entry(a.kind).or_insert(0) += 1;
        }
        counts
    }

    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// One line: operations, histories and anomalies by kind.
    pub fn summary(&self) -> String {
        let counts = self.counts();
        let kinds = if counts.is_empty() {
            "none".to_string()
        } else {
            counts.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
        };
        let stats = self.stats.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ");
        format!(
            "history: {} operations ({} unknown), {} histories, {} events, {} undecided; anomalies: {} ({kinds}); {stats}",
            self.ops,
            self.unknown,
            self.histories,
            self.events,
            self.undecided,
            self.anomalies.len()
        )
    }

    /// Adds another report's figures (several runs in one summary).
    pub fn merge(&mut self, other: Report) {
        self.ops += other.ops;
        self.unknown += other.unknown;
        self.histories += other.histories;
        self.events += other.events;
        self.undecided += other.undecided;
        self.anomalies.extend(other.anomalies);
        for (k, v) in other.stats {
            *self.stats.entry(k).or_insert(0) += v;
        }
    }

    /// The first `n` anomalies of each kind, one per line.
    pub fn examples(&self, n: usize) -> String {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = String::new();
        for a in &self.anomalies {
            let k = seen.entry(a.kind).or_insert(0);
            *k += 1;
            if *k <= n {
                out.push_str(&format!("  {}: {}\n", a.kind, a.detail));
            }
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A minted refresh token.
struct Token {
    label: String,
    family: String,
    client: String,
    user: String,
    mint: usize,
}

/// A family-wide effect that definitely happened within `op`'s interval.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// Revokes every token minted before it (revoke, client delete).
    Revoke,
    /// A new token: every token minted before it is no longer the family's active one.
    Supersede,
    /// Reuse or code replay: the family is revoked for good.
    Permanent,
}

struct Index<'a> {
    ops: &'a [Op],
    tokens: HashMap<&'a str, Token>,
    /// Family -> (client, user).
    families: HashMap<String, (String, String)>,
    /// Code value -> (issuing op, grant, client).
    codes: HashMap<&'a str, (usize, String, String)>,
}

impl<'a> Index<'a> {
    fn build(ops: &'a [Op]) -> Self {
        let mut index = Index { ops, tokens: HashMap::new(), families: HashMap::new(), codes: HashMap::new() };
        for op in ops {
            let Some(v) = op.outcome.ok() else { continue };
            match op.method {
                "token.issue" | "token.rotate" => {
                    let (Some(token), Some(grant)) = (s(v, "token"), s(v, "grant_id")) else { continue };
                    let presented = op.param("token").and_then(|t| index.tokens.get(t));
                    let client = op.param("client_id").unwrap_or_default().to_string();
                    let user = op
                        .param("user_id")
                        .or_else(|| s(v, "user_id"))
                        .map(str::to_string)
                        .or_else(|| presented.map(|p| p.user.clone()))
                        .unwrap_or_default();
                    let label = format!("tok#{}({})", op.id, s(v, "token_id").unwrap_or("?"));
                    index.families.entry(grant.to_string()).or_insert_with(|| (client.clone(), user.clone()));
                    index.tokens.insert(token, Token { label, family: grant.to_string(), client, user, mint: op.id });
                }
                "code.issue" => {
                    let (Some(code), Some(grant)) = (s(v, "code"), s(v, "grant_id")) else { continue };
                    let client = s(v, "client_id").or(op.param("client_id")).unwrap_or_default().to_string();
                    index.codes.insert(code, (op.id, grant.to_string(), client));
                }
                _ => {}
            }
        }
        index
    }

    fn op(&self, id: usize) -> &'a Op {
        &self.ops[id]
    }

    /// Families a `token.revoke` or `client.delete` call covers.
    fn covered(&self, op: &Op) -> Vec<String> {
        let matching = |pred: &dyn Fn(&(String, String)) -> bool| -> Vec<String> {
            self.families.iter().filter(|(_, cu)| pred(cu)).map(|(f, _)| f.clone()).collect()
        };
        match op.method {
            "token.revoke" => {
                if let Some(t) = op.param("token") {
                    self.tokens.get(t).map(|t| vec![t.family.clone()]).unwrap_or_default()
                } else if let Some(g) = op.param("grant_id") {
                    vec![g.to_string()]
                } else if let Some(c) = op.param("client_id") {
                    let u = op.param("user_id");
                    matching(&|(fc, fu)| fc == c && u.is_none_or(|u| u == fu))
                } else if let Some(u) = op.param("user_id") {
                    matching(&|(_, fu)| fu == u)
                } else {
                    Vec::new()
                }
            }
            "client.delete" => {
                let c = op.param("client_id").unwrap_or_default();
                matching(&|(fc, _)| fc == c)
            }
            _ => Vec::new(),
        }
    }
}

/// Checks a history; the report lists every anomaly found.
pub fn check(history: &History) -> Report {
    let ops = &history.ops;
    let mut report =
        Report { ops: ops.len(), unknown: ops.iter().filter(|o| o.outcome.is_unknown()).count(), ..Report::default() };
    let index = Index::build(ops);
    check_codes(&index, &mut report);
    check_tokens(&index, history.grace_secs, &mut report);
    check_sessions(ops, &mut report);
    check_feeds(&index, history, &mut report);
    report
}

fn deleted_true(op: &Op) -> bool {
    op.outcome.ok().and_then(|v| v.get("deleted")).and_then(Value::as_bool) == Some(true)
}

fn check_codes(index: &Index, report: &mut Report) {
    let mut consumes: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in index.ops.iter().filter(|o| o.method == "code.consume") {
        if let Some(code) = op.param("code") {
            consumes.entry(code).or_default().push(op);
        }
    }
    let deletes: Vec<&Op> = index.ops.iter().filter(|o| o.method == "client.delete" && deleted_true(o)).collect();
    report.histories += consumes.len();
    for (code, calls) in &consumes {
        let Some((issue, _, client)) = index.codes.get(code) else { continue };
        let label = format!("code#{issue}");
        let wins: Vec<&&Op> = calls.iter().filter(|c| c.outcome.is_ok()).collect();
        *report.stats.entry("code_consumes").or_insert(0) += calls.len() as u64;
        if calls.iter().any(|a| calls.iter().any(|b| a.id < b.id && !a.precedes(b) && !b.precedes(a))) {
            *report.stats.entry("code_races").or_insert(0) += 1;
        }
        if wins.len() > 1 {
            let ids: Vec<usize> = wins.iter().map(|c| c.id).collect();
            report.anomalies.push(Anomaly {
                kind: "code_redeemed_twice",
                detail: format!("{label}: {} successful code.consume calls {ids:?}", wins.len()),
            });
        }
        for win in &wins {
            // Any earlier answered attempt (success, or an invalid_grant that burned it).
            if let Some(burner) = calls
                .iter()
                .find(|d| d.id != win.id && d.precedes(win) && (d.outcome.is_ok() || d.outcome.code() == Some(1003)))
            {
                report.anomalies.push(Anomaly {
                    kind: "code_redeemed_after_burn",
                    detail: format!(
                        "{label}: op {} redeemed it after op {} had ended with {:?}",
                        win.id,
                        burner.id,
                        short(&burner.outcome)
                    ),
                });
            }
            if let Some(delete) = deletes.iter().find(|k| {
                k.param("client_id") == Some(client.as_str()) && index.op(*issue).precedes(k) && k.precedes(win)
            }) {
                report.anomalies.push(Anomaly {
                    kind: "code_survived_client_delete",
                    detail: format!("{label}: op {} redeemed it after client.delete op {}", win.id, delete.id),
                });
            }
        }
    }
}

fn short(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(_) => "ok".into(),
        Outcome::Err { code, reason } => format!("{code} {reason}"),
        Outcome::Unknown(why) => format!("unknown ({why})"),
    }
}

fn check_tokens(index: &Index, grace_secs: u64, report: &mut Report) {
    let ops = index.ops;
    // Definite family-wide effects, per family: (op, kind).
    let mut kills: HashMap<&str, Vec<(usize, Kill)>> = HashMap::new();
    // Successful rotations of each token.
    let mut rotations: HashMap<&str, Vec<usize>> = HashMap::new();
    // Successful uses (get or rotate) of each token.
    let mut uses: HashMap<&str, Vec<usize>> = HashMap::new();
    for op in ops {
        let presented = op.param("token").and_then(|t| index.tokens.get_key_value(t));
        match (op.method, &op.outcome) {
            ("token.issue" | "token.rotate", Outcome::Ok(v)) => {
                if let Some(t) = s(v, "token").and_then(|t| index.tokens.get(t)) {
                    kills.entry(t.family.as_str()).or_default().push((op.id, Kill::Supersede));
                }
                if op.method == "token.rotate"
                    && let Some((value, _)) = presented
                {
                    rotations.entry(value).or_default().push(op.id);
                    uses.entry(value).or_default().push(op.id);
                }
            }
            ("token.get", Outcome::Ok(_)) => {
                if let Some((value, _)) = presented {
                    uses.entry(value).or_default().push(op.id);
                }
            }
            ("token.rotate", Outcome::Err { reason, .. }) if reason == "reuse_detected" => {
                if let Some((_, t)) = presented {
                    kills.entry(t.family.as_str()).or_default().push((op.id, Kill::Permanent));
                }
            }
            ("code.consume", Outcome::Err { reason, .. }) if reason == "consumed" => {
                if let Some((_, grant, _)) = op.param("code").and_then(|c| index.codes.get(c)) {
                    let family = index.families.get_key_value(grant).map(|(f, _)| f.as_str());
                    if let Some(f) = family {
                        kills.entry(f).or_default().push((op.id, Kill::Permanent));
                    }
                }
            }
            ("token.revoke", Outcome::Ok(_)) => {
                for f in index.covered(op) {
                    if let Some((f, _)) = index.families.get_key_value(&f) {
                        kills.entry(f.as_str()).or_default().push((op.id, Kill::Revoke));
                    }
                }
            }
            ("client.delete", Outcome::Ok(_)) if deleted_true(op) => {
                for f in index.covered(op) {
                    if let Some((f, _)) = index.families.get_key_value(&f) {
                        kills.entry(f.as_str()).or_default().push((op.id, Kill::Revoke));
                    }
                }
            }
            _ => {}
        }
    }
    // Races: a token presented by two or more rotations at once.
    let mut presented: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in ops.iter().filter(|o| o.method == "token.rotate") {
        if let Some((value, _)) = op.param("token").and_then(|t| index.tokens.get_key_value(t)) {
            presented.entry(value).or_default().push(op);
        }
    }
    for calls in presented.values() {
        let overlapping = calls.iter().any(|a| calls.iter().any(|b| a.id < b.id && !a.precedes(b) && !b.precedes(a)));
        if overlapping {
            *report.stats.entry("rotate_races").or_insert(0) += 1;
        }
    }
    report.histories += index.families.len();
    *report.stats.entry("tokens_minted").or_insert(0) += index.tokens.len() as u64;
    *report.stats.entry("rotations_ok").or_insert(0) += rotations.values().map(|r| r.len() as u64).sum::<u64>();

    // Strict mode: one token, at most one successful rotation.
    if grace_secs == 0 {
        for (value, rs) in &rotations {
            if rs.len() > 1 {
                let t = &index.tokens[value];
                report.anomalies.push(Anomaly {
                    kind: "token_rotated_twice",
                    detail: format!("{}: {} successful token.rotate calls {rs:?}", t.label, rs.len()),
                });
            }
        }
    }

    // A token used after something definitely made it inactive.
    for (value, us) in &uses {
        let t = &index.tokens[value];
        let mint = index.op(t.mint);
        let family_kills = kills.get(t.family.as_str()).map(Vec::as_slice).unwrap_or_default();
        for &u in us {
            let use_op = index.op(u);
            let rotated_before = rotations.get(value).and_then(|rs| {
                rs.iter().find(|&&r| r != u && index.op(r).precedes(use_op) && grace_secs == 0).copied()
            });
            let found = if let Some(r) = rotated_before {
                Some(("rotated_token_usable", r))
            } else {
                let find = |want: Kill, before_mint: bool| {
                    family_kills
                        .iter()
                        .find(|(k, kind)| {
                            let k_op = index.op(*k);
                            *kind == want
                                && *k != t.mint
                                && *k != u
                                && k_op.precedes(use_op)
                                && (!before_mint || mint.precedes(k_op))
                        })
                        .map(|(k, _)| *k)
                };
                find(Kill::Permanent, false)
                    .map(|k| ("revoked_family_usable", k))
                    .or_else(|| find(Kill::Revoke, true).map(|k| ("revoked_token_usable", k)))
                    .or_else(|| find(Kill::Supersede, true).map(|k| ("superseded_token_usable", k)))
            };
            if let Some((kind, k)) = found {
                report.anomalies.push(Anomaly {
                    kind,
                    detail: format!(
                        "{}: {} op {u} succeeded after op {k} ({} {}) had ended",
                        t.label,
                        use_op.method,
                        index.op(k).method,
                        short(&index.op(k).outcome)
                    ),
                });
            }
        }
    }

    // Two tokens minted concurrently in one family, each used after the other was minted: in
    // any order of the two mints, the earlier one was no longer active when it was used.
    let mut by_family: HashMap<&str, Vec<&str>> = HashMap::new();
    for value in uses.keys() {
        by_family.entry(index.tokens[value].family.as_str()).or_default().push(value);
    }
    for (family, values) in &by_family {
        let mut values = values.clone();
        values.sort_by_key(|v| index.tokens[v].mint);
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                let (ta, tb) = (&index.tokens[a], &index.tokens[b]);
                let (ma, mb) = (index.op(ta.mint), index.op(tb.mint));
                if ma.precedes(mb) || mb.precedes(ma) {
                    continue;
                }
                let used_after = |value: &str, other: &Op| {
                    uses[value].iter().find(|&&u| other.precedes(index.op(u)) && u != other.id).copied()
                };
                if let (Some(ua), Some(ub)) = (used_after(a, mb), used_after(b, ma)) {
                    report.anomalies.push(Anomaly {
                        kind: "two_active_tokens",
                        detail: format!(
                            "family {family}: {} (minted by op {}) used by op {ua} and {} (minted by op {}) used by op {ub}, both after both mints",
                            ta.label, ta.mint, tb.label, tb.mint
                        ),
                    });
                }
            }
        }
    }

    // A family revoked for good takes no new tokens.
    for op in ops.iter().filter(|o| matches!(o.method, "token.issue" | "token.rotate")) {
        let Some(t) = op.outcome.ok().and_then(|v| s(v, "token")).and_then(|v| index.tokens.get(v)) else { continue };
        let permanent = kills
            .get(t.family.as_str())
            .and_then(|ks| ks.iter().find(|(k, kind)| *kind == Kill::Permanent && index.op(*k).precedes(op)));
        if let Some((k, _)) = permanent {
            report.anomalies.push(Anomaly {
                kind: "mint_into_revoked_family",
                detail: format!(
                    "family {}: {} op {} minted {} after op {k} ({}) revoked the family",
                    t.family,
                    op.method,
                    op.id,
                    t.label,
                    short(&index.op(*k).outcome)
                ),
            });
        }
    }

    // Acknowledged tokens stay known, and usable while nothing could have ended them.
    for op in ops.iter().filter(|o| matches!(o.method, "token.get" | "token.rotate")) {
        let Some(t) = op.param("token").and_then(|v| index.tokens.get(v)) else { continue };
        let mint = index.op(t.mint);
        if !mint.precedes(op) {
            continue;
        }
        match &op.outcome {
            Outcome::Err { code: 1001, reason } => report.anomalies.push(Anomaly {
                kind: "acked_token_lost",
                detail: format!("{}: {} op {} answered 1001 {reason} after it was minted", t.label, op.method, op.id),
            }),
            Outcome::Err { code: 1003, reason }
                if op.method == "token.get" && possible_killer(index, t, op).is_none() =>
            {
                report.anomalies.push(Anomaly {
                    kind: "acked_token_unusable",
                    detail: format!(
                        "{}: token.get op {} answered {reason} though no call could have ended it",
                        t.label, op.id
                    ),
                });
            }
            _ => {}
        }
    }
}

/// A call that might have made `t` inactive before `use_op`.
fn possible_killer<'a>(index: &Index<'a>, t: &Token, use_op: &Op) -> Option<&'a Op> {
    let mint = index.op(t.mint);
    index.ops.iter().find(|x| {
        if x.id == t.mint || x.id == use_op.id || x.start >= use_op.effective_end() || x.effective_end() < mint.start {
            return false;
        }
        let failed_harmlessly = |x: &Op| match &x.outcome {
            Outcome::Ok(_) | Outcome::Unknown(_) => false,
            Outcome::Err { code, reason } => {
                *code != 1003 || matches!(reason.as_str(), "revoked" | "expired" | "client_mismatch")
            }
        };
        match x.method {
            "token.rotate" => {
                x.param("token").and_then(|v| index.tokens.get(v)).is_some_and(|p| p.family == t.family)
                    && !failed_harmlessly(x)
            }
            "token.issue" => x.param("grant_id") == Some(t.family.as_str()) && x.outcome.code().is_none(),
            "token.revoke" => x.outcome.code().is_none() && index.covered(x).contains(&t.family),
            "code.consume" => {
                x.param("code").and_then(|c| index.codes.get(c)).is_some_and(|(_, g, _)| *g == t.family)
                    && !x.outcome.is_ok()
                    && x.outcome.code() != Some(-32602)
            }
            "client.delete" => {
                x.param("client_id") == Some(t.client.as_str()) && (x.outcome.is_unknown() || deleted_true(x))
            }
            _ => false,
        }
    })
}

/// A session's state: `(data.n, client, orphan)`, or absent. An orphan is a session put while
/// its client was being deleted: it outlives the delete until its TTL, stays readable, but
/// `code.issue` refuses it (docs/decisions.md, "Deleting races issuing").
type SessionState = Option<(u64, String, bool)>;

#[derive(Debug)]
enum SessionInput {
    Put {
        n: u64,
        client: String,
        known: bool,
        /// The put overlapped a `client.delete` of its client, so it may have read the client
        /// before the delete and committed after it.
        may_orphan: bool,
    },
    Get(Option<u64>),
    Update {
        n: u64,
        outcome: Option<bool>,
    },
    Delete(Option<bool>),
    Purge {
        client: String,
        known: bool,
    },
    /// `code.issue` from the session: Some(true) ok, Some(false) not found, None unknown.
    Complete(Option<bool>),
    ClientDelete {
        client: String,
        known: bool,
    },
}

fn data_n(v: &Value) -> Option<u64> {
    v.get("data").and_then(|d| d.get("n")).and_then(Value::as_u64)
}

fn session_step(state: &SessionState, input: &SessionInput) -> Vec<SessionState> {
    use SessionInput::*;
    match input {
        Put { n, client, known, may_orphan } => {
            let mut next = vec![Some((*n, client.clone(), false))];
            if *may_orphan {
                next.push(Some((*n, client.clone(), true)));
            }
            if !*known {
                next.push(state.clone());
            }
            next
        }
        Get(seen) => {
            if state.as_ref().map(|(n, _, _)| *n) == *seen {
                vec![state.clone()]
            } else {
                vec![]
            }
        }
        Update { n, outcome } => match (state, outcome) {
            (Some((_, c, o)), Some(true)) => vec![Some((*n, c.clone(), *o))],
            (None, Some(false)) => vec![None],
            (Some((_, c, o)), None) => vec![state.clone(), Some((*n, c.clone(), *o))],
            (None, None) => vec![None],
            _ => vec![],
        },
        Delete(outcome) => match (state, outcome) {
            (Some(_), Some(true)) | (None, Some(false)) => vec![None],
            (_, None) => vec![state.clone(), None],
            _ => vec![],
        },
        Purge { client, known } | ClientDelete { client, known } => match state {
            Some((_, c, _)) if c == client => {
                if *known {
                    vec![None]
                } else {
                    vec![state.clone(), None]
                }
            }
            _ => vec![state.clone()],
        },
        Complete(outcome) => match (state, outcome) {
            (Some((_, _, true)), Some(false)) => vec![state.clone()],
            (Some((_, _, true)), None) => vec![state.clone()],
            (Some((_, _, false)), Some(true)) => vec![None],
            (None, Some(false)) => vec![None],
            (Some((_, _, false)), None) => vec![state.clone(), None],
            (None, None) => vec![None],
            _ => vec![],
        },
    }
}

/// The session input an op contributes to session `id`'s history, if any.
fn session_input(op: &Op, id: &str, ops: &[Op]) -> Option<SessionInput> {
    use SessionInput::*;
    let unknown = op.outcome.is_unknown();
    let not_found = op.outcome.code() == Some(1001);
    let targets = op.param("id") == Some(id);
    match op.method {
        "session.put" if targets => {
            let n = data_n(&op.params)?;
            let client = op.param("client_id")?.to_string();
            let may_orphan = ops.iter().any(|d| {
                d.method == "client.delete"
                    && d.param("client_id") == Some(client.as_str())
                    && d.start <= op.effective_end()
                    && op.start <= d.effective_end()
            });
            (op.outcome.is_ok() || unknown).then_some(Put { n, client, known: !unknown, may_orphan })
        }
        "session.get" if targets => match &op.outcome {
            Outcome::Ok(v) => Some(Get(Some(data_n(v).unwrap_or(u64::MAX)))),
            _ if not_found => Some(Get(None)),
            _ => None,
        },
        "session.update" if targets => {
            let n = data_n(&op.params)?;
            match &op.outcome {
                Outcome::Ok(_) => Some(Update { n, outcome: Some(true) }),
                _ if not_found => Some(Update { n, outcome: Some(false) }),
                Outcome::Unknown(_) => Some(Update { n, outcome: None }),
                _ => None,
            }
        }
        "session.delete" if targets => match &op.outcome {
            Outcome::Ok(v) => Some(Delete(v.get("deleted").and_then(Value::as_bool))),
            Outcome::Unknown(_) => Some(Delete(None)),
            _ => None,
        },
        "session.purge" => {
            let client = op.param("client_id")?.to_string();
            (op.outcome.is_ok() || unknown).then_some(Purge { client, known: !unknown })
        }
        "code.issue" if op.param("session_id") == Some(id) => match &op.outcome {
            Outcome::Ok(_) => Some(Complete(Some(true))),
            _ if not_found => Some(Complete(Some(false))),
            Outcome::Unknown(_) => Some(Complete(None)),
            _ => None,
        },
        "client.delete" => {
            let client = op.param("client_id")?.to_string();
            (deleted_true(op) || unknown).then_some(ClientDelete { client, known: !unknown })
        }
        _ => None,
    }
}

fn check_sessions(ops: &[Op], report: &mut Report) {
    let mut ids: Vec<&str> = ops
        .iter()
        .filter(|o| o.method.starts_with("session.") && o.method != "session.purge")
        .filter_map(|o| o.param("id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let mut entries = Vec::new();
        let mut op_of = Vec::new();
        for op in ops {
            if let Some(input) = session_input(op, id, ops) {
                entries.push(Entry { start: op.start, end: op.effective_end(), input });
                op_of.push(op.id);
            }
        }
        report.histories += 1;
        match wgl::check(&entries, None, session_step, 5_000_000) {
            Verdict::Linearizable => {}
            Verdict::Undecided => report.undecided += 1,
            Verdict::Violation { stuck_at } => {
                let op = &ops[op_of[stuck_at]];
                let kind = match (&entries[stuck_at].input, &op.outcome) {
                    (SessionInput::Get(None), _) => "session_acked_write_lost",
                    (SessionInput::Get(Some(_)), _) => "session_stale_or_phantom_read",
                    _ => "session_not_linearizable",
                };
                report.anomalies.push(Anomaly {
                    kind,
                    detail: format!(
                        "session {id}: {} ops admit no sequential order; the search got stuck at op {} ({} -> {})",
                        entries.len(),
                        op.id,
                        op.method,
                        short(&op.outcome)
                    ),
                });
            }
        }
    }
}

fn cursor(e: &Value) -> Option<u64> {
    s(e, "cursor").and_then(|c| c.parse().ok())
}

/// The identity of an event, to compare what two subscribers got for one cursor.
fn event_key(e: &Value) -> String {
    ["kind", "token_id", "grant_id", "session_id", "client_id", "reason"]
        .iter()
        .map(|k| s(e, k).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("|")
}

fn check_feeds(index: &Index, history: &History, report: &mut Report) {
    let feeds = &history.feeds;
    for feed in feeds {
        report.histories += 1;
        report.events += feed.events.len();
        for failure in &feed.failures {
            report.anomalies.push(Anomaly { kind: "subscribe_failed", detail: format!("{}: {failure}", feed.name) });
        }
        let mut seen = HashSet::new();
        let mut last = None;
        for e in &feed.events {
            let Some(c) = cursor(e) else {
                report.anomalies.push(Anomaly { kind: "event_without_cursor", detail: format!("{}: {e}", feed.name) });
                continue;
            };
            if !seen.insert(c) {
                report.anomalies.push(Anomaly {
                    kind: "event_repeated",
                    detail: format!("{}: cursor {c} delivered twice", feed.name),
                });
            } else if last.is_some_and(|l| c < l) {
                report.anomalies.push(Anomaly {
                    kind: "event_out_of_order",
                    detail: format!("{}: cursor {c} after {}", feed.name, last.unwrap_or_default()),
                });
            }
            last = Some(last.map_or(c, |l: u64| l.max(c)));
            if let Some(filter) = &feed.client_id
                && s(e, "client_id") != Some(filter.as_str())
            {
                report.anomalies.push(Anomaly {
                    kind: "event_filter_leak",
                    detail: format!("{}: cursor {c} is for client {:?}", feed.name, s(e, "client_id")),
                });
            }
        }
    }

    // Every subscriber of a stream subscribed from the start of the log and was drained at the
    // end: they must all hold the same events (a filtered one, the matching subset).
    for stream in ["token", "session"] {
        let mut all: BTreeMap<u64, String> = BTreeMap::new();
        let full: Vec<_> = feeds.iter().filter(|f| f.stream == stream && f.client_id.is_none()).collect();
        for f in &full {
            for e in &f.events {
                if let Some(c) = cursor(e) {
                    let key = event_key(e);
                    if let Some(other) = all.get(&c) {
                        if *other != key {
                            report.anomalies.push(Anomaly {
                                kind: "event_mismatch",
                                detail: format!("{stream} cursor {c}: {other} vs {key} on {}", f.name),
                            });
                        }
                    } else {
                        all.insert(c, key);
                    }
                }
            }
        }
        for f in feeds.iter().filter(|f| f.stream == stream) {
            let own: HashSet<u64> = f.events.iter().filter_map(cursor).collect();
            let missing: Vec<u64> = full
                .iter()
                .flat_map(|g| g.events.iter())
                .filter(|e| f.client_id.as_deref().is_none_or(|c| s(e, "client_id") == Some(c)))
                .filter_map(cursor)
                .filter(|c| !own.contains(c))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !missing.is_empty() {
                report.anomalies.push(Anomaly {
                    kind: "event_gap",
                    detail: format!(
                        "{}: {} events others received never arrived (cursors {:?}...)",
                        f.name,
                        missing.len(),
                        &missing[..missing.len().min(8)]
                    ),
                });
            }
        }
    }
    check_events_against_calls(index, history, report);
}

/// Acknowledged changes have their events; events have a change that could have caused them.
fn check_events_against_calls(index: &Index, history: &History, report: &mut Report) {
    let ops = index.ops;
    let pick = |stream: &str| {
        history.feeds.iter().find(|f| f.stream == stream && f.client_id.is_none()).map(|f| f.events.as_slice())
    };
    if let Some(events) = pick("session") {
        let mut count: HashMap<(&str, &str), i64> = HashMap::new();
        for e in events {
            if let (Some(kind), Some(id)) = (s(e, "kind"), s(e, "session_id")) {
                *count.entry((kind, id)).or_insert(0) += 1;
            }
        }
        let mut acked: HashMap<(&str, &str), i64> = HashMap::new();
        let mut possible: HashMap<(&str, &str), i64> = HashMap::new();
        for op in ops {
            let key = match op.method {
                "session.delete" => op.param("id").map(|id| ("deleted", id)),
                "code.issue" => op.param("session_id").map(|id| ("completed", id)),
                _ => None,
            };
            let Some(key) = key else { continue };
            let happened = match op.method {
                "session.delete" => deleted_true(op),
                _ => op.outcome.is_ok(),
            };
            if happened {
                *acked.entry(key).or_insert(0) += 1;
            }
            if happened || op.outcome.is_unknown() {
                *possible.entry(key).or_insert(0) += 1;
            }
        }
        for (key, n) in &acked {
            let got = count.get(key).copied().unwrap_or(0);
            if got < *n {
                report.anomalies.push(Anomaly {
                    kind: "acked_change_without_event",
                    detail: format!("session {}: {n} acknowledged {} but {got} events", key.1, key.0),
                });
            }
        }
        // Sessions this history touched (a feed from the start of the log also holds other
        // runs' events).
        let ours: HashSet<&str> = ops.iter().filter_map(|o| o.param("id").or(o.param("session_id"))).collect();
        for (key, got) in &count {
            let n = possible.get(key).copied().unwrap_or(0);
            if matches!(key.0, "deleted" | "completed") && *got > n && ours.contains(key.1) {
                report.anomalies.push(Anomaly {
                    kind: "event_without_change",
                    detail: format!("session {}: {got} {} events but {n} calls that could cause one", key.1, key.0),
                });
            }
        }
        let purged_acked: u64 = ops
            .iter()
            .filter(|o| o.method == "session.purge")
            .filter_map(|o| o.outcome.ok().and_then(|v| v.get("purged")).and_then(Value::as_u64))
            .sum();
        let purged_events = events.iter().filter(|e| s(e, "kind") == Some("purged")).count() as u64;
        if purged_events < purged_acked {
            report.anomalies.push(Anomaly {
                kind: "acked_change_without_event",
                detail: format!("session.purge acknowledged {purged_acked} removals but {purged_events} purged events"),
            });
        }
    }
    if let Some(events) = pick("token") {
        let by_id: HashMap<String, &str> = index
            .tokens
            .iter()
            .filter_map(|(value, t)| {
                let op = index.op(t.mint);
                op.outcome.ok().and_then(|v| s(v, "token_id")).map(|id| (id.to_string(), *value))
            })
            .collect();
        let mut rotated_events: HashMap<&str, usize> = HashMap::new();
        for e in events.iter().filter(|e| s(e, "kind") == Some("rotated")) {
            if let Some(id) = s(e, "token_id") {
                *rotated_events.entry(id).or_insert(0) += 1;
            }
        }
        // Each successful rotation of T reports T (or its successor) as rotated.
        for op in ops.iter().filter(|o| o.method == "token.rotate" && o.outcome.is_ok()) {
            let old = op
                .param("token")
                .and_then(|v| index.tokens.get(v))
                .and_then(|t| index.op(t.mint).outcome.ok().and_then(|v| s(v, "token_id")).map(str::to_string));
            let new = op.outcome.ok().and_then(|v| s(v, "token_id"));
            let found = old.as_deref().is_some_and(|id| rotated_events.contains_key(id))
                || new.is_some_and(|id| rotated_events.contains_key(id));
            if !found {
                report.anomalies.push(Anomaly {
                    kind: "acked_change_without_event",
                    detail: format!("token.rotate op {} succeeded but no rotated event names its token", op.id),
                });
            }
        }
        // A rotated event needs a rotation of that token that succeeded or may have.
        for (id, n) in &rotated_events {
            let Some(value) = by_id.get(*id) else { continue };
            let t = &index.tokens[value];
            let candidates = ops
                .iter()
                .filter(|o| o.method == "token.rotate" && (o.outcome.is_ok() || o.outcome.is_unknown()))
                .filter(|o| o.param("token") == Some(value) || o.id == t.mint)
                .count();
            if candidates == 0 {
                report.anomalies.push(Anomaly {
                    kind: "event_without_change",
                    detail: format!("{}: {n} rotated events but no rotation of it succeeded", t.label),
                });
            }
        }
        // Reuse answered reuse_detected: the family's reuse_detected event exists.
        let reuse_events: HashSet<&str> =
            events.iter().filter(|e| s(e, "kind") == Some("reuse_detected")).filter_map(|e| s(e, "grant_id")).collect();
        // Only where nothing else could have revoked the family first (a reuse of an already
        // revoked family has nothing left to revoke).
        let mut reused: HashSet<&str> = HashSet::new();
        for op in ops.iter().filter(|o| o.method == "token.rotate" && o.outcome.reason() == Some("reuse_detected")) {
            let Some(t) = op.param("token").and_then(|v| index.tokens.get(v)) else { continue };
            let revoked_before = ops.iter().any(|x| {
                x.id != op.id
                    && x.start < op.end
                    && x.outcome.code().is_none_or(|c| c == 1003)
                    && match x.method {
                        "token.revoke" | "client.delete" => index.covered(x).contains(&t.family),
                        "code.consume" => x
                            .param("code")
                            .and_then(|c| index.codes.get(c))
                            .is_some_and(|(_, g, _)| *g == t.family && !x.outcome.is_ok()),
                        "token.rotate" => {
                            x.outcome.reason() == Some("reuse_detected")
                                && x.param("token")
                                    .and_then(|v| index.tokens.get(v))
                                    .is_some_and(|p| p.family == t.family)
                        }
                        _ => false,
                    }
            });
            if !revoked_before {
                reused.insert(t.family.as_str());
            }
        }
        for f in reused {
            if !reuse_events.contains(f) {
                report.anomalies.push(Anomaly {
                    kind: "acked_change_without_event",
                    detail: format!("family {f}: token.rotate answered reuse_detected but no reuse_detected event"),
                });
            }
        }
        let revoked_acked: u64 = ops
            .iter()
            .filter(|o| o.method == "token.revoke")
            .filter_map(|o| o.outcome.ok().and_then(|v| v.get("revoked")).and_then(Value::as_u64))
            .sum();
        let revoked_events = events.iter().filter(|e| s(e, "kind") == Some("revoked")).count() as u64;
        if revoked_events < revoked_acked {
            report.anomalies.push(Anomaly {
                kind: "acked_change_without_event",
                detail: format!(
                    "token.revoke acknowledged {revoked_acked} revocations but {revoked_events} revoked events"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(id: usize, method: &'static str, params: Value, start: u64, end: u64, outcome: Outcome) -> Op {
        Op { id, conn: 0, method, params, start, end, outcome }
    }

    fn ok(v: Value) -> Outcome {
        Outcome::Ok(v)
    }

    fn err(code: i64, reason: &str) -> Outcome {
        Outcome::Err { code, reason: reason.into() }
    }

    fn issue(id: usize, token: &str, start: u64, end: u64) -> Op {
        op(
            id,
            "token.issue",
            json!({"client_id": "c", "user_id": "u"}),
            start,
            end,
            ok(json!({"token": token, "token_id": format!("id-{token}"), "grant_id": "g"})),
        )
    }

    fn rotate(id: usize, from: &str, to: Option<&str>, start: u64, end: u64) -> Op {
        let outcome = match to {
            Some(to) => ok(json!({"token": to, "token_id": format!("id-{to}"), "grant_id": "g"})),
            None => err(1003, "reuse_detected"),
        };
        op(id, "token.rotate", json!({"token": from, "client_id": "c"}), start, end, outcome)
    }

    fn get(id: usize, token: &str, start: u64, end: u64, outcome: Outcome) -> Op {
        op(id, "token.get", json!({"token": token}), start, end, outcome)
    }

    fn kinds(ops: Vec<Op>) -> Vec<&'static str> {
        let report = check(&History { ops, feeds: vec![], grace_secs: 0 });
        let mut k: Vec<_> = report.anomalies.iter().map(|a| a.kind).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn a_strict_race_with_one_winner_is_clean() {
        let ops = vec![
            issue(0, "t0", 0, 10),
            rotate(1, "t0", Some("t1"), 20, 30),
            rotate(2, "t0", None, 21, 31),
            get(3, "t1", 40, 50, err(1003, "revoked")),
        ];
        assert_eq!(kinds(ops), Vec::<&str>::new());
    }

    #[test]
    fn two_winners_and_both_successors_usable_are_caught() {
        let ops = vec![
            issue(0, "t0", 0, 10),
            rotate(1, "t0", Some("t1"), 20, 30),
            rotate(2, "t0", Some("t2"), 21, 31),
            get(3, "t1", 40, 50, ok(json!({}))),
            get(4, "t2", 40, 50, ok(json!({}))),
        ];
        assert_eq!(kinds(ops), vec!["token_rotated_twice", "two_active_tokens"]);
    }

    #[test]
    fn uses_after_rotation_reuse_and_revocation_are_caught_but_concurrent_ones_are_not() {
        let ops = vec![
            issue(0, "t0", 0, 10),
            rotate(1, "t0", Some("t1"), 20, 30),
            get(2, "t0", 25, 35, ok(json!({}))), // concurrent with the rotation: fine
            get(3, "t0", 40, 50, ok(json!({}))), // after it: rotated
            rotate(4, "t0", None, 60, 70),       // reuse: family revoked
            get(5, "t1", 80, 90, ok(json!({}))),
        ];
        assert_eq!(kinds(ops), vec!["revoked_family_usable", "rotated_token_usable"]);
        // An unknown rotation may have happened at any time: a later failed get is explained,
        // and a later successful one too.
        let ops = vec![
            issue(0, "t0", 0, 10),
            op(1, "token.rotate", json!({"token": "t0", "client_id": "c"}), 20, 30, Outcome::Unknown("t".into())),
            get(2, "t0", 40, 50, ok(json!({}))),
            get(3, "t0", 60, 70, err(1003, "rotated")),
        ];
        assert_eq!(kinds(ops), Vec::<&str>::new());
    }

    #[test]
    fn code_races_replays_and_lost_tokens() {
        let code = |id, s, e| {
            op(
                id,
                "code.issue",
                json!({"client_id": "c"}),
                s,
                e,
                ok(json!({"code": "k", "grant_id": "g", "client_id": "c"})),
            )
        };
        let consume = |id, s, e, o| op(id, "code.consume", json!({"code": "k", "client_id": "c"}), s, e, o);
        let ops = vec![code(0, 0, 1), consume(1, 10, 20, ok(json!({}))), consume(2, 11, 21, ok(json!({})))];
        assert_eq!(kinds(ops), vec!["code_redeemed_twice"]);
        let ops =
            vec![code(0, 0, 1), consume(1, 10, 20, err(1003, "pkce_mismatch")), consume(2, 30, 40, ok(json!({})))];
        assert_eq!(kinds(ops), vec!["code_redeemed_after_burn"]);
        let ops = vec![issue(0, "t0", 0, 10), get(1, "t0", 20, 30, err(1001, "not_found"))];
        assert_eq!(kinds(ops), vec!["acked_token_lost"]);
        let ops = vec![issue(0, "t0", 0, 10), get(1, "t0", 20, 30, err(1003, "revoked"))];
        assert_eq!(kinds(ops), vec!["acked_token_unusable"]);
    }

    #[test]
    fn feeds_must_agree_in_order_without_gaps_or_phantoms() {
        use crate::history::Feed;
        let ev =
            |c: &str, kind: &str, sid: &str| json!({"cursor": c, "kind": kind, "session_id": sid, "client_id": "c"});
        let feed =
            |name: &str, events: Vec<Value>| Feed { name: name.into(), stream: "session", events, ..Feed::default() };
        let put = op(0, "session.put", json!({"id": "s", "client_id": "c", "data": {"n": 1}}), 0, 5, ok(json!({})));
        let delete = op(1, "session.delete", json!({"id": "s"}), 6, 10, ok(json!({"deleted": true})));
        let history = History {
            ops: vec![put, delete],
            feeds: vec![
                feed("a", vec![ev("1", "deleted", "s"), ev("3", "deleted", "x"), ev("2", "deleted", "s")]),
                feed("b", vec![ev("1", "deleted", "s"), ev("1", "deleted", "s")]),
            ],
            grace_secs: 0,
        };
        let report = check(&history);
        let mut k: Vec<_> = report.anomalies.iter().map(|a| a.kind).collect();
        k.sort_unstable();
        // a: 2 after 3; b: 1 twice and missing 2, 3; a: two deletes of s for one call.
        assert_eq!(k, vec!["event_gap", "event_out_of_order", "event_repeated", "event_without_change"]);
    }

    #[test]
    fn sessions_are_registers() {
        let put =
            |id, n, s, e, o| op(id, "session.put", json!({"id": "s", "client_id": "c", "data": {"n": n}}), s, e, o);
        let get = |id, s, e, o| op(id, "session.get", json!({"id": "s"}), s, e, o);
        let ops = vec![put(0, 1, 0, 10, ok(json!({}))), get(1, 20, 30, err(1001, "not_found"))];
        assert_eq!(kinds(ops), vec!["session_acked_write_lost"]);
        let ops = vec![
            put(0, 1, 0, 10, ok(json!({}))),
            put(1, 2, 5, u64::MAX - 1, Outcome::Unknown("t".into())),
            get(2, 20, 30, ok(json!({"data": {"n": 2}}))),
            get(3, 40, 50, ok(json!({"data": {"n": 2}}))),
        ];
        assert_eq!(kinds(ops), Vec::<&str>::new());
        let ops = vec![
            put(0, 1, 0, 10, ok(json!({}))),
            put(1, 2, 20, 30, ok(json!({}))),
            get(2, 40, 50, ok(json!({"data": {"n": 1}}))),
        ];
        assert_eq!(kinds(ops), vec!["session_stale_or_phantom_read"]);
    }

    // A session put while its client was being deleted may outlive the delete, readable, while
    // code.issue refuses it (the documented orphan). Without an overlapping delete, a refusal
    // of a readable session is still an anomaly.
    #[test]
    fn only_a_put_racing_its_clients_delete_may_leave_an_orphan() {
        let put =
            |id, n, s, e, o| op(id, "session.put", json!({"id": "s", "client_id": "c", "data": {"n": n}}), s, e, o);
        let get = |id, s, e, o| op(id, "session.get", json!({"id": "s"}), s, e, o);
        let complete = |id, s, e, o| op(id, "code.issue", json!({"session_id": "s"}), s, e, o);
        let delete = |id, s, e| op(id, "client.delete", json!({"client_id": "c"}), s, e, ok(json!({"deleted": true})));
        let orphan = vec![
            put(0, 1, 0, 10, ok(json!({}))),
            delete(1, 5, 8),
            get(2, 20, 30, ok(json!({"data": {"n": 1}}))),
            complete(3, 40, 50, err(1001, "not_found")),
        ];
        assert_eq!(kinds(orphan), Vec::<&str>::new());
        let no_race = vec![
            put(0, 1, 0, 10, ok(json!({}))),
            delete(1, 12, 15),
            get(2, 20, 30, ok(json!({"data": {"n": 1}}))),
            complete(3, 40, 50, err(1001, "not_found")),
        ];
        assert_eq!(kinds(no_race).len(), 1);
        let alone = vec![put(0, 1, 0, 10, ok(json!({}))), complete(1, 40, 50, err(1001, "not_found"))];
        assert_eq!(kinds(alone).len(), 1);
    }
}
