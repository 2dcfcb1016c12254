//! Criteria and an access decision, turned into one SQL statement (design idea 3).
//!
//! Visibility is part of the WHERE clause, never a filter after fetching: so `total`, paging
//! and `_include` can only ever see what the user may see, and stay fast on the indexes. The
//! served version of a resource is its newest version whose release moment has passed; a
//! withdrawal (a tombstone version) hides the resource at once.

use super::dates::{Prefix, Range};
use super::params::{DateFilter, Query, SortKey, TokenFilter};
use crate::access::{Decision, Role, SectionSet};
use crate::fhir::reference::in_compartment;
use crate::mapping::Mappings;
use crate::store::db::{Db, Executor as _, Sql, Tx};
use crate::time::Micros;

/// A resource version as search returns it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Hit {
    pub id: i64,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub resource_type: String,
    pub fhir_id: String,
    pub version_no: i64,
    pub release_at: Option<i64>,
    pub sort_date: i64,
    pub patient_id: Option<String>,
    pub section: Option<String>,
    /// The JSON as the source sent it (compressed on PostgreSQL, see `store::bodies`).
    #[sqlx(try_from = "crate::store::bodies::Packed")]
    pub body: String,
    pub withdrawn: i64,
    /// `meta` kept beside the body; `None` for a body that still holds its own.
    pub meta: Option<String>,
    /// The number of matches, on the rows of a first page ([`page_with_total`]).
    #[sqlx(default)]
    #[serde(default)]
    pub total: Option<i64>,
}

const HIT_COLUMNS: &str = "v.id, v.type, v.fhir_id, v.version_no, v.release_at, v.sort_date, v.patient_id, \
                           v.section, v.body, v.withdrawn, v.meta";

/// What a statement needs to know of who asks: the access decision, and the mappings that say
/// which types outside the compartment are shared and which elements the user's roles lose.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub decision: &'a Decision,
    pub mappings: &'a Mappings,
}

impl<'a> Scope<'a> {
    pub fn new(decision: &'a Decision, mappings: &'a Mappings) -> Self {
        Self { decision, mappings }
    }
}

/// `alias` is the version the portal is served now: released, not withdrawn, and no newer
/// version released since.
pub fn served(sql: &mut Sql, alias: &str, now: Micros) {
    served_as(sql, alias, now, true);
}

/// [`served`]; with `by_release = false` the release test is kept off the indexes (`+x`), so
/// that a search sorted by date walks the `(patient, type, sort_date)` index in order.
fn served_as(sql: &mut Sql, alias: &str, now: Micros, by_release: bool) {
    let plus = if by_release { "" } else { "+" };
    sql.push(&format!("{plus}{alias}.release_at <= "));
    sql.bind(now);
    sql.push(&format!(
        " AND {alias}.withdrawn = 0 AND ({alias}.has_newer = 0 OR NOT EXISTS (SELECT 1 FROM versions n \
         WHERE n.resource_id = {alias}.resource_id AND n.id > {alias}.id AND n.release_at <= "
    ));
    sql.bind(now);
    sql.push("))");
}

/// `alias` belongs to a client the decision allows, in a section allowed for it. The type of
/// `alias` is `known_type` when given; otherwise the Patient exception is written out in SQL.
pub fn allowed(sql: &mut Sql, alias: &str, known_type: Option<&str>, decision: &Decision) {
    allowed_as(sql, alias, known_type, decision, false);
}

/// [`allowed`]; with `pinned`, the statement already limits `alias` to the decision's clients
/// (the query names them), so tests of its client that would repeat that are left out. They
/// cost a comparison per row, and SQLite's planner, seeing the client tested three times,
/// would walk the client's versions of every type (`versions_by_patient_release`) instead of
/// those of the query's type.
fn allowed_as(
    sql: &mut Sql,
    alias: &str,
    known_type: Option<&str>,
    decision: &Decision,
    pinned: bool,
) {
    let all: Vec<&str> = decision
        .allowed
        .iter()
        .filter(|a| a.sections == SectionSet::All)
        .map(|a| a.patient_id.as_str())
        .collect();
    let some: Vec<(&str, Vec<&String>)> = decision
        .allowed
        .iter()
        .filter_map(|a| match &a.sections {
            SectionSet::Only(s) if !s.is_empty() => {
                Some((a.patient_id.as_str(), s.iter().collect()))
            }
            _ => None,
        })
        .collect();
    let everyone: Vec<&str> = decision.clients();
    if everyone.is_empty() {
        sql.push("1 = 0");
        return;
    }
    // Pinned, and every client of the decision sees the same: no client test is needed. (A
    // client seen in no section at all counts as different.)
    if pinned {
        let every = everyone.len();
        match (known_type, all.len(), some.as_slice()) {
            (Some("Patient"), _, _) => {
                sql.push("1 = 1");
                return;
            }
            (Some(_), n, []) if n == every => {
                sql.push(&format!("{alias}.section IS NOT NULL"));
                return;
            }
            // Written as a test of the row, not a condition of the index: PostgreSQL would
            // take `section IN (…)` into the index scan, whose order (release, id) is then
            // lost, and read all the client's versions of the type to sort them for a page of
            // 50 (3 × the holder's page at scale 10). `IS TRUE` keeps NULL (no section) out
            // as before.
            (Some(_), 0, [(_, sections)]) if every == 1 => {
                sql.push(&format!("({alias}.section IN ("));
                sql.bind_list(sections.iter().copied());
                sql.push(")) IS TRUE");
                return;
            }
            _ => {}
        }
    }
    sql.push("(");
    let mut first = true;
    let mut or = |sql: &mut Sql| {
        if !first {
            sql.push(" OR ");
        }
        first = false;
    };
    if known_type.is_none_or(|t| t == "Patient") {
        or(sql);
        if known_type.is_none() {
            sql.push(&format!("({alias}.type = 'Patient' AND "));
        } else {
            sql.push("(");
        }
        sql.push(&format!("{alias}.patient_id IN ("));
        sql.bind_list(everyone.iter().copied());
        sql.push("))");
    }
    if known_type != Some("Patient") {
        if !all.is_empty() {
            or(sql);
            sql.push(&format!(
                "({alias}.section IS NOT NULL AND {alias}.patient_id IN ("
            ));
            sql.bind_list(all.iter().copied());
            sql.push("))");
        }
        for (patient, sections) in some {
            or(sql);
            sql.push(&format!("({alias}.patient_id = "));
            sql.bind(patient);
            sql.push(&format!(" AND {alias}.section IN ("));
            sql.bind_list(sections);
            sql.push("))");
        }
    }
    if first {
        sql.push("1 = 0");
    }
    sql.push(")");
}

/// The full visibility test for a version of `resource_type` (steps 6–8 of contract §5), the
/// same for a read, a search, an `_include` and a total.
pub fn visible(sql: &mut Sql, alias: &str, resource_type: &str, scope: Scope<'_>, now: Micros) {
    visible_as(sql, alias, resource_type, scope, now, true);
}

fn visible_as(
    sql: &mut Sql,
    alias: &str,
    resource_type: &str,
    scope: Scope<'_>,
    now: Micros,
    by_release: bool,
) {
    if in_compartment(resource_type) {
        served_as(sql, alias, now, by_release);
        sql.push(" AND ");
        allowed(sql, alias, Some(resource_type), scope.decision);
    } else if scope.mappings.sections.is_shared(resource_type) {
        // Practitioner, Organization, Location, Medication…: only when a resource the user may
        // see refers to it, from an element that is not redacted for the user.
        let clients: Vec<&str> = scope.decision.clients();
        if clients.is_empty() {
            sql.push("1 = 0");
            return;
        }
        served_as(sql, alias, now, by_release);
        // The references of the user's clients only: a seek on the refs key, not a walk over
        // every client's references to a popular Practitioner.
        sql.push(&format!(
            " AND {alias}.patient_id IS NULL AND EXISTS (SELECT 1 FROM refs f JOIN versions w ON w.id = f.version_id \
             WHERE f.target_type = {alias}.type AND f.target_id = {alias}.fhir_id AND f.patient_id IN ("
        ));
        sql.bind_list(clients);
        sql.push(") AND ");
        served(sql, "w", now);
        sql.push(" AND ");
        allowed(sql, "w", None, scope.decision);
        not_redacted_reference(sql, "f", "w", scope);
        sql.push(")");
    } else {
        // Any other type outside the compartment has no client to decide by: never served.
        sql.push("1 = 0");
    }
}

/// ` AND NOT (…)`: the reference `f` of version `w` does not sit in an element that a
/// redaction rule removes for the user's role for `w`'s client. A removal path counts with
/// every path below it; a reference stored without its path (before paths were kept) counts as
/// redacted wherever anything of `w`'s type is redacted for the role; and for a role with any
/// rule, a reference from inside a contained resource never counts (the contained resource may
/// be dropped or redacted by its own type's rules when served).
fn not_redacted_reference(sql: &mut Sql, f: &str, w: &str, scope: Scope<'_>) {
    let redaction = &scope.mappings.redaction;
    let mut roles: Vec<Role> = scope.decision.allowed.iter().map(|a| a.role).collect();
    roles.sort();
    roles.dedup();
    for role in roles {
        let types = redaction.types_for(role);
        if types.is_empty() {
            continue;
        }
        let clients: Vec<&str> = scope
            .decision
            .allowed
            .iter()
            .filter(|a| a.role == role)
            .map(|a| a.patient_id.as_str())
            .collect();
        sql.push(&format!(" AND NOT ({w}.patient_id IN ("));
        sql.bind_list(clients);
        sql.push(&format!(
            ") AND ({f}.element = 'contained' OR substr({f}.element, 1, 10) = 'contained.'"
        ));
        for ty in &types {
            sql.push(&format!(" OR ({w}.type = "));
            sql.bind(*ty);
            sql.push(&format!(" AND ({f}.element = ''"));
            for (path, open) in redaction.removed_prefixes(role, ty) {
                if open {
                    // `value` of `value[x]`: `valueReference` and all below it.
                    sql.push(&format!(" OR substr({f}.element, 1, {}) = ", path.len()));
                    sql.bind(path.as_str());
                } else {
                    sql.push(&format!(" OR {f}.element = "));
                    sql.bind(path.as_str());
                    sql.push(&format!(
                        " OR substr({f}.element, 1, {}) = ",
                        path.len() + 1
                    ));
                    sql.bind(format!("{path}."));
                }
            }
            sql.push("))");
        }
        sql.push("))");
    }
}

fn token_filter(sql: &mut Sql, alias: &str, f: &TokenFilter) {
    sql.push(&format!(
        "EXISTS (SELECT 1 FROM search_tokens t WHERE t.version_id = {alias}.id AND "
    ));
    token_test(sql, f);
    sql.push(")");
}

/// `t.param = '…' AND (…)`: a row `t` of `search_tokens` matches one of the filter's values.
///
/// The parameter's name (one of the R4 definitions' names, never the request's text) is
/// written into the statement, not bound: a bound value that decides whether the partial
/// index of identifiers applies makes SQLite prepare the statement again at every execution.
fn token_test(sql: &mut Sql, f: &TokenFilter) {
    if f.param
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        sql.push(&format!("t.param = '{}' AND (", f.param));
    } else {
        sql.push("t.param = ");
        sql.bind(f.param);
        sql.push(" AND (");
    }
    for (i, v) in f.values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        let mut and = false;
        if let Some(code) = &v.code {
            sql.push("t.code = ");
            sql.bind(code.as_str());
            and = true;
        }
        if let Some(system) = &v.system {
            if and {
                sql.push(" AND ");
            }
            sql.push("t.system = ");
            sql.bind(system.as_str());
            and = true;
        }
        if !and {
            sql.push("1 = 1");
        }
        sql.push(")");
    }
    sql.push(")");
}

/// The range test of a prefix against a stored `[lo, hi)`.
fn range_test(sql: &mut Sql, lo: &str, hi: &str, prefix: Prefix, r: Range) {
    let eq = |sql: &mut Sql| {
        sql.push(&format!("({lo} >= "));
        sql.bind(r.lo);
        sql.push(&format!(" AND {hi} <= "));
        sql.bind(r.hi);
        sql.push(")");
    };
    match prefix {
        Prefix::Eq => eq(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            eq(sql);
        }
        Prefix::Gt => {
            sql.push(&format!("{hi} > "));
            sql.bind(r.hi);
        }
        Prefix::Lt => {
            sql.push(&format!("{lo} < "));
            sql.bind(r.lo);
        }
        Prefix::Ge => {
            sql.push(&format!("({hi} > "));
            sql.bind(r.hi);
            sql.push(" OR ");
            eq(sql);
            sql.push(")");
        }
        Prefix::Le => {
            sql.push(&format!("({lo} < "));
            sql.bind(r.lo);
            sql.push(" OR ");
            eq(sql);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push(&format!("{lo} >= "));
            sql.bind(r.hi);
        }
        Prefix::Eb => {
            sql.push(&format!("{hi} <= "));
            sql.bind(r.lo);
        }
    }
}

fn date_filter(sql: &mut Sql, alias: &str, f: &DateFilter) {
    sql.push(&format!(
        "EXISTS (SELECT 1 FROM search_dates d WHERE d.version_id = {alias}.id AND d.param = "
    ));
    sql.bind(f.param);
    sql.push(" AND (");
    for (i, (prefix, range)) in f.values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        range_test(sql, "d.lo", "d.hi", *prefix, *range);
    }
    sql.push("))");
}

/// `_lastUpdated` on the moment `t` the version became visible, written so that the
/// release-moment index can serve it: `t` is a point, the range `[t, t+1µs)`.
fn last_updated_filter(sql: &mut Sql, alias: &str, values: &[(Prefix, Range)]) {
    let t = format!("{alias}.release_at");
    sql.push("(");
    for (i, (prefix, r)) in values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        let cmp = |sql: &mut Sql, op: &str, bound: i64| {
            sql.push(&format!("{t} {op} "));
            sql.bind(bound);
        };
        match prefix {
            Prefix::Eq | Prefix::Ne => {
                if *prefix == Prefix::Ne {
                    sql.push("NOT ");
                }
                sql.push("(");
                cmp(sql, ">=", r.lo);
                sql.push(" AND ");
                cmp(sql, "<", r.hi);
                sql.push(")");
            }
            Prefix::Gt | Prefix::Sa => cmp(sql, ">=", r.hi),
            Prefix::Ge => cmp(sql, ">=", r.lo),
            Prefix::Lt | Prefix::Eb => cmp(sql, "<", r.lo),
            Prefix::Le => cmp(sql, "<", r.hi),
        }
    }
    sql.push(")");
}

/// The criteria of a query other than visibility and paging.
pub fn criteria(sql: &mut Sql, alias: &str, q: &Query) {
    sql.push(&format!("{alias}.type = "));
    sql.bind(q.resource_type.as_str());
    for ids in &q.ids {
        // Through the resources' (type, id) key, then the versions of those resources.
        sql.push(&format!(
            " AND {alias}.resource_id IN (SELECT r.id FROM resources r WHERE r.type = "
        ));
        sql.bind(q.resource_type.as_str());
        sql.push(" AND r.fhir_id IN (");
        sql.bind_list(ids.iter().map(String::as_str));
        sql.push("))");
    }
    for patients in &q.patients {
        sql.push(&format!(" AND {alias}.patient_id IN ("));
        sql.bind_list(patients.iter().map(String::as_str));
        sql.push(")");
    }
    for f in &q.tokens {
        sql.push(" AND ");
        token_filter(sql, alias, f);
    }
    for f in &q.dates {
        sql.push(" AND ");
        date_filter(sql, alias, f);
    }
    for values in &q.last_updated {
        sql.push(" AND ");
        last_updated_filter(sql, alias, values);
    }
}

/// The WHERE clause of a search: criteria, the clients in scope, visibility.
fn search_where(sql: &mut Sql, q: &Query, scope: Scope<'_>, now: Micros) {
    let decision = scope.decision;
    let by_release = q.sort.key == SortKey::LastUpdated;
    sql.push(" WHERE ");
    criteria(sql, "v", q);
    if !in_compartment(&q.resource_type) {
        // Outside the compartment: stored without a client, on the same index.
        sql.push(" AND ");
        visible_as(sql, "v", &q.resource_type, scope, now, by_release);
        return;
    }
    // Only the clients the query names (`patient=`) matter; when it names only clients the
    // user may see, the criteria already hold `v` to them.
    let named: Option<Vec<&str>> = q.patients.first().map(|first| {
        first
            .iter()
            .filter(|p| q.patients.iter().all(|g| g.contains(p)))
            .map(String::as_str)
            .collect()
    });
    let narrowed;
    let (decision, pinned) = match &named {
        Some(named) => {
            // Only `allowed` is read below.
            narrowed = Decision {
                user_id: decision.user_id,
                allowed: decision
                    .allowed
                    .iter()
                    .filter(|a| named.contains(&a.patient_id.as_str()))
                    .cloned()
                    .collect(),
                refused: Default::default(),
            };
            let pinned =
                !narrowed.allowed.is_empty() && named.iter().all(|p| narrowed.access(p).is_some());
            (&narrowed, pinned)
        }
        None => (decision, false),
    };
    if !pinned {
        // Named first so that the planner starts from the (patient_id, type, …) indexes.
        let clients: Vec<&str> = decision.clients();
        if clients.is_empty() {
            sql.push(" AND 1 = 0");
        } else {
            sql.push(" AND v.patient_id IN (");
            sql.bind_list(clients);
            sql.push(")");
        }
    }
    sql.push(" AND ");
    served_as(sql, "v", now, by_release);
    sql.push(" AND ");
    allowed_as(sql, "v", Some(&q.resource_type), decision, pinned);
}

/// One page of a search: at most `q.count + 1` hits (the extra one says there is a next page).
pub async fn page(
    db: &Db,
    q: &Query,
    scope: Scope<'_>,
    now: Micros,
) -> Result<Vec<Hit>, crate::store::Error> {
    db.fetch_all(&page_sql(q, scope, now)).await
}

/// The first page with its `total`, in one statement: the count is an uncorrelated scalar
/// subquery, which both engines evaluate once, and rides on every row. Hits and the total.
pub async fn page_with_total(
    db: &Db,
    q: &Query,
    scope: Scope<'_>,
    now: Micros,
) -> Result<(Vec<Hit>, i64), crate::store::Error> {
    let hits: Vec<Hit> = db.fetch_all(&page_with_total_sql(q, scope, now)).await?;
    let total = match hits.first() {
        Some(hit) => hit.total.unwrap_or(0),
        // No row to carry it: a first page is empty only when nothing matches, but count to
        // be sure.
        None => count(db, q, scope, now).await?,
    };
    Ok((hits, total))
}

/// The statement of [`page_with_total`].
pub fn page_with_total_sql(q: &Query, scope: Scope<'_>, now: Micros) -> Sql {
    let mut sql = Sql::new("SELECT (");
    sql.append(count_sql(q, scope, now));
    sql.push(&format!(") AS total, {HIT_COLUMNS} FROM versions v"));
    page_rest(&mut sql, q, scope, now);
    sql
}

/// The statement of [`page`].
pub fn page_sql(q: &Query, scope: Scope<'_>, now: Micros) -> Sql {
    let mut sql = Sql::new(format!("SELECT {HIT_COLUMNS} FROM versions v"));
    page_rest(&mut sql, q, scope, now);
    sql
}

/// WHERE, cursor, ORDER BY and LIMIT of a page.
fn page_rest(sql: &mut Sql, q: &Query, scope: Scope<'_>, now: Micros) {
    search_where(sql, q, scope, now);
    let (key, column) = match q.sort.key {
        SortKey::LastUpdated => ("release_at", "v.release_at"),
        SortKey::Date => ("sort_date", "v.sort_date"),
    };
    let (cmp, dir) = if q.sort.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(c) = q.cursor {
        // The bound alone first: PostgreSQL seeks the index to it (an OR is only a filter
        // there, and page 20 would read the 950 entries before it).
        sql.push(&format!(" AND {column} {cmp}= "));
        sql.bind(c.key);
        sql.push(&format!(" AND ({column} {cmp} "));
        sql.bind(c.key);
        sql.push(&format!(" OR ({column} = "));
        sql.bind(c.key);
        sql.push(&format!(" AND v.id {cmp} "));
        sql.bind(c.version_id);
        sql.push("))");
    }
    sql.push(&format!(" ORDER BY v.{key} {dir}, v.id {dir} "));
    limit(sql, i64::from(q.count) + 1);
}

/// `LIMIT n`, written into the text rather than bound: SQLite plans an ORDER BY with the
/// limit's value, so a bound limit expires the prepared statement at every new binding and
/// each execution prepared it again (most of a portal query's time in SQLite). The value is
/// ours (a page size), never the caller's text.
fn limit(sql: &mut Sql, n: i64) {
    sql.push(&format!("LIMIT {n}"));
}

/// The number of visible matches.
pub async fn count(
    db: &Db,
    q: &Query,
    scope: Scope<'_>,
    now: Micros,
) -> Result<i64, crate::store::Error> {
    db.fetch_count(&count_sql(q, scope, now)).await
}

/// The statement of [`count`].
pub fn count_sql(q: &Query, scope: Scope<'_>, now: Micros) -> Sql {
    let mut sql = Sql::new("SELECT COUNT(*) AS n FROM versions v");
    search_where(&mut sql, q, scope, now);
    sql
}

/// The served versions of the given resources that the user may see (for `_include`): the
/// same test as a read.
pub async fn included(
    db: &Db,
    resource_type: &str,
    ids: &[String],
    scope: Scope<'_>,
    now: Micros,
) -> Result<Vec<Hit>, crate::store::Error> {
    db.fetch_all(&included_sql(resource_type, ids, scope, now))
        .await
}

/// The statement of [`included`].
pub fn included_sql(resource_type: &str, ids: &[String], scope: Scope<'_>, now: Micros) -> Sql {
    let mut sql = Sql::new(format!(
        "SELECT {HIT_COLUMNS} FROM versions v WHERE v.type = "
    ));
    sql.bind(resource_type);
    sql.push(" AND v.resource_id IN (SELECT r.id FROM resources r WHERE r.type = ");
    sql.bind(resource_type);
    sql.push(" AND r.fhir_id IN (");
    sql.bind_list(ids.iter().map(String::as_str));
    // The ids once more on the version itself (a version has its resource's id), so that
    // PostgreSQL tests only the named resources for a reference the user may see; without it
    // it tested every Practitioner of the organisation, and `_include` cost 2 ms at scale 10.
    sql.push(")) AND v.fhir_id IN (");
    sql.bind_list(ids.iter().map(String::as_str));
    sql.push(") AND ");
    visible(&mut sql, "v", resource_type, scope, now);
    sql
}

/// What became visible, changed or was withdrawn for the user in `(since, now]`: per resource
/// the newest released version, if released after `since`; a withdrawal only if the resource
/// had been visible before it. Oldest first, keyset-paged on `(release_at, id)`.
pub async fn history(
    db: &Db,
    since: Micros,
    cursor: Option<super::params::Cursor>,
    limit: i64,
    decision: &Decision,
    now: Micros,
) -> Result<Vec<Hit>, crate::store::Error> {
    db.fetch_all(&history_sql(since, cursor, limit, decision, now))
        .await
}

/// The statement of [`history`].
pub fn history_sql(
    since: Micros,
    cursor: Option<super::params::Cursor>,
    limit: i64,
    decision: &Decision,
    now: Micros,
) -> Sql {
    let mut sql = Sql::new(format!("SELECT {HIT_COLUMNS} FROM versions v WHERE "));
    history_where(&mut sql, since, decision, now);
    if let Some(c) = cursor {
        sql.push(" AND v.release_at >= ");
        sql.bind(c.key);
        sql.push(" AND (v.release_at > ");
        sql.bind(c.key);
        sql.push(" OR (v.release_at = ");
        sql.bind(c.key);
        sql.push(" AND v.id > ");
        sql.bind(c.version_id);
        sql.push("))");
    }
    sql.push(" ORDER BY v.release_at, v.id ");
    self::limit(&mut sql, limit);
    sql
}

/// The number of entries of [`history`].
pub async fn history_count(
    db: &Db,
    since: Micros,
    decision: &Decision,
    now: Micros,
) -> Result<i64, crate::store::Error> {
    let mut sql = Sql::new("SELECT COUNT(*) AS n FROM versions v WHERE ");
    history_where(&mut sql, since, decision, now);
    db.fetch_count(&sql).await
}

/// Per resource, the version released in `(since, now]` that is now the user's last word on it:
/// - the served version (no newer version released), if the user may see it: a `PUT`;
/// - else a tombstone in what the user may see (client and section), after which nothing the
///   user may see was released, and before which the user could see a version: a `DELETE`.
///   Every way a resource leaves a user's view writes such a tombstone in the client and
///   section it leaves (a delete, entered-in-error, a move to another client or section, a
///   newer version under `never`, a hold), so a portal's cache stays right.
fn history_where(sql: &mut Sql, since: Micros, decision: &Decision, now: Micros) {
    let clients: Vec<&str> = decision.clients();
    if clients.is_empty() {
        sql.push("1 = 0");
        return;
    }
    sql.push("v.patient_id IN (");
    sql.bind_list(clients);
    sql.push(") AND v.release_at > ");
    sql.bind(since);
    sql.push(" AND v.release_at <= ");
    sql.bind(now);
    sql.push(" AND ");
    allowed(sql, "v", None, decision);
    sql.push(
        " AND ((v.withdrawn = 0 AND (v.has_newer = 0 OR NOT EXISTS (SELECT 1 FROM versions n \
         WHERE n.resource_id = v.resource_id AND n.id > v.id AND n.release_at <= ",
    );
    sql.bind(now);
    sql.push(
        "))) OR (v.withdrawn = 1 AND (v.has_newer = 0 OR NOT EXISTS (SELECT 1 FROM versions n \
         WHERE n.resource_id = v.resource_id AND n.id > v.id AND n.release_at <= ",
    );
    sql.bind(now);
    sql.push(" AND ");
    allowed(sql, "n", None, decision);
    sql.push(
        ")) AND EXISTS (SELECT 1 FROM versions p WHERE p.resource_id = v.resource_id \
         AND p.id < v.id AND p.withdrawn = 0 AND p.release_at <= v.release_at AND ",
    );
    allowed(sql, "p", None, decision);
    sql.push(")))");
}

/// Resources of `source` currently stored (newest version, not withdrawn) matching `q`'s
/// criteria, whatever their release: for conditional references and `ifNoneExist` at ingest.
/// Another source's resources are never matched: a source learns nothing of them.
pub async fn current_matches(
    tx: &mut Tx,
    source: &str,
    q: &Query,
    limit: i64,
) -> Result<Vec<String>, crate::store::Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        fhir_id: String,
    }
    let rows: Vec<Row> = tx.fetch_all(&current_matches_sql(source, q, limit)).await?;
    Ok(rows.into_iter().map(|r| r.fhir_id).collect())
}

/// The statement of [`current_matches`]. An `identifier` starts from the index of identifiers
/// (`search_tokens_by_identifier`); other tokens read the token rows (no index holds every
/// token by value: searches start from a client, and such an index cost a seventh of ingest).
pub fn current_matches_sql(source: &str, q: &Query, limit: i64) -> Sql {
    let mut sql = Sql::new(
        "SELECT v.fhir_id FROM versions v JOIN resources r ON r.id = v.resource_id \
         AND r.last_version = v.version_no WHERE r.source = ",
    );
    sql.bind(source);
    sql.push(" AND ");
    criteria(&mut sql, "v", q);
    let identifier = q.tokens.iter().find(|f| f.param == "identifier");
    if let Some(f) = identifier.or(q.tokens.first()) {
        sql.push(" AND v.id IN (SELECT t.version_id FROM search_tokens t WHERE ");
        token_test(&mut sql, f);
        sql.push(")");
    }
    // A version under `never` is still the resource as stored (withdrawn = 2).
    sql.push(" AND v.withdrawn <> 1 ");
    self::limit(&mut sql, limit);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Access, Role};
    use crate::search::params::{self, Counts};

    fn access(patient: &str, sections: Option<&[&str]>) -> Access {
        Access {
            link_id: 1,
            patient_id: patient.into(),
            role: if sections.is_some() {
                Role::Member
            } else {
                Role::Holder
            },
            sections: sections.map_or(SectionSet::All, |s| {
                SectionSet::Only(s.iter().map(|x| x.to_string()).collect())
            }),
            can_post: false,
        }
    }

    /// The `total` statement of `Observation?{query}` for a user with `allowed`.
    fn count_of(query: &str, allowed: Vec<Access>) -> String {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let counts = Counts {
            default: 50,
            max: 500,
        };
        let q = params::parse("Observation", &pairs, counts).unwrap();
        let decision = Decision {
            user_id: 1,
            allowed,
            refused: Default::default(),
        };
        let mappings = Mappings::load(None, "P14D").unwrap();
        count_sql(&q, Scope::new(&decision, &mappings), 0).text
    }

    fn client_tests(sql: &str) -> usize {
        sql.matches("v.patient_id").count()
    }

    #[test]
    fn a_query_naming_clients_that_see_the_same_tests_the_client_once() {
        let holder = count_of("patient=a", vec![access("a", None), access("b", None)]);
        assert_eq!(client_tests(&holder), 1, "{holder}");
        assert!(holder.contains("v.section IS NOT NULL"), "{holder}");
        let member = count_of("patient=a", vec![access("a", Some(&["metingen"]))]);
        assert_eq!(client_tests(&member), 1, "{member}");
        // A test of the row, so that PostgreSQL keeps the index's order (see `allowed_as`).
        assert!(
            member.contains("AND (v.section IN ($5)) IS TRUE"),
            "{member}"
        );
        let both = count_of("patient=a,b", vec![access("a", None), access("b", None)]);
        assert_eq!(client_tests(&both), 1, "{both}");
    }

    /// The statements PostgreSQL can only plan well when they say so: a next page seeks its
    /// cursor's bound (an OR alone is a filter there), and an `_include` names its ids on the
    /// version too (else every resource of the type is tested for a reference).
    #[test]
    fn a_next_page_seeks_its_bound_and_an_include_names_its_ids_on_the_version() {
        let decision = Decision {
            user_id: 1,
            allowed: vec![access("a", None)],
            refused: Default::default(),
        };
        let mappings = Mappings::load(None, "P14D").unwrap();
        let scope = Scope::new(&decision, &mappings);
        let counts = Counts {
            default: 50,
            max: 500,
        };
        for (sort, column) in [("_lastUpdated", "release_at >="), ("-date", "sort_date <=")] {
            let pairs = vec![
                ("patient".to_string(), "a".to_string()),
                ("_sort".to_string(), sort.to_string()),
            ];
            let mut q = params::parse("Observation", &pairs, counts).unwrap();
            q.cursor = Some(params::Cursor {
                key: 5,
                version_id: 7,
                total: None,
            });
            let text = page_sql(&q, scope, 0).text;
            assert!(text.contains(&format!("AND v.{column} $")), "{text}");
        }
        let ids = vec!["pr1".to_string(), "pr2".to_string()];
        let text = included_sql("Practitioner", &ids, scope, 0).text;
        assert!(text.contains("AND v.fhir_id IN ($"), "{text}");
    }

    #[test]
    fn clients_that_see_different_sections_keep_their_client_tests() {
        // A second client seen in no section, or in other sections than the first.
        for other in [Some(&[][..]), Some(&["agenda"][..]), None] {
            let sql = count_of(
                "patient=a,b",
                vec![access("a", Some(&["metingen"])), access("b", other)],
            );
            assert!(client_tests(&sql) > 1, "{other:?}: {sql}");
        }
        // A named client the user may not see: the clients the user may see are tested.
        let sql = count_of("patient=a,b", vec![access("a", None)]);
        assert!(client_tests(&sql) > 1, "{sql}");
        // Without `patient=`, every client the user may see.
        let sql = count_of("code=1", vec![access("a", None)]);
        assert!(client_tests(&sql) >= 1, "{sql}");
    }
}
