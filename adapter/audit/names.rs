//! Which clients a request is about, for its record: what its path and query address, read
//! before the handler runs ([`Addressed::read`]), and what the store says they belong to once
//! the answer is known ([`Addressed::name`]). The clients a query names count as valid ids:
//! the first [`MAX_NAMED`] whatever they are, the rest only where they are clients here, so
//! that a stranger can neither grow the trail at will nor hide a client behind made-up ids.
//! An object a refused request addresses by its path (a resource, a message, a grant, an
//! audit event) names the clients it belongs to: an attempt on their data.

use super::Note;
use crate::store::Db;
use axum::http::StatusCode;

/// The most clients a request's query names for its record whether they are clients or not.
pub(super) const MAX_NAMED: usize = 5;

/// The most ids past [`MAX_NAMED`] looked up for a record: as many as a search takes
/// ([`crate::search::params::MAX_PARAMS`] parameters of
/// [`crate::search::params::MAX_VALUES`] values); a query that names more is refused by
/// [`super::track`] before its handler runs.
pub(super) const MAX_OFFERED: usize =
    crate::search::params::MAX_PARAMS * crate::search::params::MAX_VALUES;

/// What a portal path addresses that is not a resource type: a link (`/portal/grants/{id}`)
/// or an invitation (`/portal/invitations/{id}`).
const LINK: &str = "link";
const INVITATION: &str = "invitation";
/// Before a type: only the stored resource of that type (a source's write of one).
const STORED: &str = "stored:";

/// A number in the one form the portal writes it (`3`, not `03` or `+3`): the ids of
/// Consents, RelatedPersons and AuditEvents are compared as text.
fn canonical(text: Option<&str>) -> Option<i64> {
    let text = text?;
    text.parse::<i64>().ok().filter(|n| n.to_string() == text)
}

/// The clients of the resources of one type with these ids (a search by `_id`): stored ones',
/// and a portal user's messages (`Communication`) and correction requests (`Task`), and the
/// people of links (`RelatedPerson/sluis-link-N`).
async fn owners_of(
    db: &Db,
    resource_type: &str,
    ids: &[String],
) -> Result<Vec<String>, crate::store::Error> {
    let mut owners = crate::store::release::owners_of(db, resource_type, ids).await?;
    let own = match resource_type {
        "Communication" => crate::store::messages::clients_of(db, ids).await?,
        "Task" => crate::store::requests::clients_of(db, ids).await?,
        "RelatedPerson" => {
            let links: Vec<i64> = ids
                .iter()
                .filter_map(|id| canonical(id.strip_prefix("sluis-link-")))
                .collect();
            crate::store::accounts::clients_of_links(db, &links).await?
        }
        _ => Vec::new(),
    };
    for p in own {
        if !owners.contains(&p) {
            owners.push(p);
        }
    }
    Ok(owners)
}

/// The clients `Type/id` belongs to (or a [`LINK`]'s or an [`INVITATION`]'s): see
/// [`Note::name_owners`].
async fn owners(db: &Db, kind: &str, id: &str) -> Result<Vec<String>, crate::store::Error> {
    use crate::store::{accounts, messages, requests};
    if let Some(resource_type) = kind.strip_prefix(STORED) {
        return crate::store::release::owners(db, resource_type, id).await;
    }
    let link = match kind {
        // As the grants' routes read it (`03` and `+3` are grant 3).
        LINK => id.parse::<i64>().ok(),
        "Consent" => canonical(id.strip_prefix("grant-")),
        "RelatedPerson" => canonical(id.strip_prefix("sluis-link-")),
        _ => None,
    };
    let mut owners = match kind {
        LINK | INVITATION => Vec::new(),
        // An event's clients, once moved into the tables (a refused read does not make this
        // process move its records first).
        "AuditEvent" => match canonical(Some(id)).filter(|s| *s > 0) {
            Some(seq) => crate::store::audit::patients_between(db, seq, seq)
                .await?
                .into_iter()
                .map(|(_, p, _)| p)
                .collect(),
            None => Vec::new(),
        },
        _ => crate::store::release::owners(db, kind, id).await?,
    };
    let own = match (kind, link) {
        (_, Some(n)) => accounts::link(db, n).await?.map(|l| l.patient_id),
        (INVITATION, _) => accounts::code_by_id(db, id)
            .await?
            .filter(|c| c.kind == "invitation")
            .map(|c| c.patient_id),
        ("Communication", _) => messages::get(db, id).await?.map(|m| m.patient_id),
        ("Task", _) => requests::get(db, id).await?.map(|r| r.patient_id),
        _ => None,
    };
    owners.extend(own);
    Ok(owners)
}

impl Note {
    /// Names a client (see [`super::names`]); past the first [`MAX_NAMED`], keeps it aside.
    pub(super) fn name(&mut self, id: &str) {
        let id = id.trim_start_matches("Patient/");
        if !crate::fhir::reference::is_fhir_id(id) || self.patients.iter().any(|p| p == id) {
            return;
        }
        if self.patients.len() < MAX_NAMED {
            self.patients.push(id.to_string());
        } else if self.offered.len() < MAX_OFFERED {
            // Repeats count: a search takes no more values, repeated or not.
            self.offered.push(id.to_string());
        } else {
            self.overflowed = true;
        }
    }

    /// Names those of the ids kept aside that are clients of the store (a Patient there,
    /// deleted or not), so that no number of made-up ids in front hides a real one. If the
    /// store cannot say, names them all.
    async fn name_offered(&mut self, db: &Db) {
        if self.offered.is_empty() {
            return;
        }
        let mut offered = std::mem::take(&mut self.offered);
        let mut seen = std::collections::HashSet::new();
        offered.retain(|id| seen.insert(id.clone()));
        let known = match crate::store::clients::known(db, &offered).await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell which named ids are clients: all named");
                offered.clone()
            }
        };
        let known: std::collections::HashSet<String> = known.into_iter().collect();
        for id in offered.into_iter().filter(|id| known.contains(id)) {
            self.add(id);
        }
    }

    /// Names a client the store knows (unchecked, uncapped), once.
    fn add(&mut self, patient: String) {
        if !self.patients.contains(&patient) {
            self.patients.push(patient);
        }
    }

    /// Names the clients whose dossiers `Type/id` has been in (a refused read of it is an
    /// attempt on each): a stored resource's, and for the portal's own objects the client of
    /// the grant or link (`Consent/grant-N`, `RelatedPerson/sluis-link-N`), message
    /// (`Communication`) or request (`Task`). If the store cannot say, a warning.
    async fn name_owners(&mut self, db: &Db, resource_type: &str, id: &str) {
        match owners(db, resource_type, id).await {
            Ok(owners) => owners.into_iter().for_each(|p| self.add(p)),
            Err(e) => tracing::warn!(error = %e, "cannot tell whose resource a refused read was"),
        }
    }
}

/// What a request's path and query address, besides the clients named into its note.
#[derive(Debug, Default)]
pub(super) struct Addressed {
    /// The one object its path addresses: a resource type (or [`LINK`], [`INVITATION`], a
    /// [`STORED`] type) and an id, whose clients a refusal names.
    target: Option<(String, String)>,
    /// The type a search is of (the generic routes', `Communication`, `Task`).
    searched: String,
    /// Its `_id`s (of a type that is not Patient), whose clients it names, shown or not.
    ids: Vec<String>,
    /// Its `identifier`s (a BSN, a message's or a record system's own number), as
    /// `(system, value)`, whose clients it names, found or not.
    identifiers: Vec<(Option<String>, String)>,
}

impl Addressed {
    /// Reads `path` (as sent) and `query` of a request to `route` (the router's template),
    /// naming into `note` the clients they name.
    pub(super) fn read(
        route: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        note: &mut Note,
    ) -> Self {
        let mut addressed = Self::default();
        // The generic routes' type and id as the router hands them to the handlers (decoded;
        // borrowed when nothing was encoded).
        let segment = |n: usize| {
            path.split('/')
                .nth(n)
                .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy())
        };
        let resource_type = route
            .starts_with("/fhir/{type}")
            .then(|| segment(2))
            .flatten();
        let resource_type = resource_type.as_deref();
        if route == "/fhir/{type}/{id}"
            && let Some(id) = segment(3)
        {
            match resource_type {
                // A Patient's read names it, found or not; a refusal before its handler (a
                // method the route does not take) names it again as a refused read does.
                Some("Patient") => {
                    note.name(&id);
                    addressed.target = Some(("Patient".to_string(), id.into_owned()));
                }
                Some(t) if crate::fhir::definitions::is_resource_type(t) => {
                    addressed.target = Some((t.to_string(), id.into_owned()));
                }
                _ => {}
            }
        }
        // The routes of the portal's own objects, and a source's write of one resource.
        let fixed = |kind: &str| (Some(kind.to_string()), 3);
        let (kind, at) = match route {
            "/fhir/Communication/{id}" => fixed("Communication"),
            "/fhir/Task/{id}" => fixed("Task"),
            "/fhir/Consent/{id}" => fixed("Consent"),
            "/fhir/AuditEvent/{id}" => fixed("AuditEvent"),
            "/portal/grants/{id}" => fixed(LINK),
            "/portal/invitations/{id}" => fixed(INVITATION),
            // Only a stored resource's clients: the type is the source's to name.
            "/ingest/{source}/{type}/{id}" => (
                segment(3)
                    .filter(|t| crate::fhir::definitions::is_resource_type(t))
                    .map(|t| format!("{STORED}{t}")),
                4,
            ),
            // A path past a resource's that no route has (`/fhir/Patient/p1/_history`,
            // `/fhir/Observation/o1/_history/2`): still an attempt on that resource.
            "unmatched" if path.starts_with("/fhir/") => (
                segment(2)
                    .filter(|t| crate::fhir::definitions::is_resource_type(t))
                    .map(|t| t.into_owned()),
                3,
            ),
            _ => (None, 0),
        };
        if let (Some(kind), Some(id)) = (kind, segment(at)) {
            addressed.target = Some((kind, id.into_owned()));
        }
        if !names_from_query(route, method, resource_type) {
            return addressed;
        }
        // A search by `_id` of a type that is not Patient: the resources' clients, looked up
        // once the answer is known.
        // A search by `identifier` (of any type), or by `_id` (of a type that is not Patient,
        // whose `_id` names the clients themselves, below).
        let searched = match route {
            "/fhir/Communication" => Some("Communication"),
            "/fhir/Task" => Some("Task"),
            "/fhir/{type}" => resource_type,
            _ => None,
        };
        addressed.searched = searched.unwrap_or_default().to_string();
        let (ids, identifiers) = (&mut addressed.ids, &mut addressed.identifiers);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            // As many as a search takes are looked up; a query with more is refused unread
            // (as one naming too many clients), so that none hides behind made-up ones.
            if key == "_id" && searched.is_some_and(|t| t != "Patient") {
                let valid = value
                    .split(',')
                    .filter(|v| crate::fhir::reference::is_fhir_id(v));
                for id in valid {
                    if ids.len() == MAX_OFFERED {
                        note.overflowed = true;
                        break;
                    }
                    ids.push(id.to_string());
                }
                continue;
            }
            if key == "identifier" && searched.is_some() {
                for v in value.split(',') {
                    let (system, code) = match v.split_once('|') {
                        Some((system, code)) => (Some(system.to_string()), code),
                        None => (None, v),
                    };
                    if code.is_empty() || code.len() > 256 {
                        continue;
                    }
                    if identifiers.len() == MAX_OFFERED {
                        note.overflowed = true;
                        break;
                    }
                    identifiers.push((system, code.to_string()));
                }
                continue;
            }
            let about = match key.as_ref() {
                "patient" | "subject" | "patient:Patient" | "subject:Patient" => true,
                // A search of Patients by id names them.
                "_id" => resource_type == Some("Patient"),
                _ => false,
            };
            if about {
                // A list (`patient=a,b`) names each; a reference as the search reads it
                // (`Patient/p`, an absolute URL ending so).
                for v in value.split(',') {
                    if let Ok(id) = crate::search::params::patient_id(v, &key) {
                        note.name(&id);
                    }
                }
            }
        }
        addressed
    }

    /// Once the request is answered with `status`: names into `note` the clients there are
    /// among the ids kept aside (all of them for a caller no credential vouches for), those
    /// of the object a refusal addressed, and those of the resources a search by `_id` asked
    /// for.
    pub(super) async fn name(self, note: &mut Note, db: &Db, status: StatusCode) {
        // A caller no credential vouches for names only clients there are: a stranger cannot
        // grow the trail with made-up ids.
        if !note.proven {
            let named = std::mem::take(&mut note.patients);
            note.offered.splice(0..0, named);
        }
        note.name_offered(db).await;
        if let Some((kind, id)) = self.target
            && status.is_client_error()
            && crate::fhir::reference::is_fhir_id(&id)
        {
            note.name_owners(db, &kind, &id).await;
        }
        if !self.ids.is_empty() {
            match owners_of(db, &self.searched, &self.ids).await {
                Ok(owners) => owners.into_iter().for_each(|p| note.add(p)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whose resources a search by id was for")
                }
            }
        }
        if !self.identifiers.is_empty() {
            match crate::store::release::owners_by_identifier(db, &self.searched, &self.identifiers)
                .await
            {
                Ok(owners) => owners.into_iter().for_each(|p| note.add(p)),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot tell whose resources a search by identifier was for"
                ),
            }
        }
    }
}

/// Whether the clients a request's query names (`patient`, `subject`; a Patient search's
/// `_id`) are what it is about: on a search or a list (`GET`, or `HEAD`, which runs the same
/// handler), of a type there is
/// (`resource_type`, decoded, on the generic routes). Not on a path no route has, nor where
/// the query takes no client (a read of one resource: its path says what it is; a push; a
/// token request; a write). A method the route does not take drops them too ([`nowhere`]).
fn names_from_query(route: &str, method: &str, resource_type: Option<&str>) -> bool {
    let a_type = !route.starts_with("/fhir/{type}")
        || resource_type.is_some_and(crate::fhir::definitions::is_resource_type);
    a_type
        && (method == "GET" || method == "HEAD")
        && route != "unmatched"
        && route != "/auth/token"
        && !route.starts_with("/ingest/")
        && !route.ends_with("/{id}")
}
