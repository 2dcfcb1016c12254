//! The test that proves nothing leaks: random worlds of clients, links, grants, open
//! invitations, role changes, blocks, care periods, deaths, terms, two sources, versions under
//! rules of every kind (P14D, P90D, manual, never), moves between clients and sections, holds
//! and releases, shared and other types outside the compartment, references from redacted
//! elements, and clock moments are built through the real API. Then, for every user, what
//! search (all pages and `total`), read, `_include` and `_history` return is compared, resource
//! by resource, with the pure decision (`access::decision::decide`) over the stored facts and
//! the versions' stored release moments; and what is served is checked against what the world
//! itself says, independently of the store: never a version earlier than its own rule allows,
//! never under `never`, never during a hold, never in a client or section the resource has
//! left, never after a withdrawal, never another source's write.
//! Worlds: `SLUIS_DIFF_WORLDS` (default 6); a failure names its seed.

use crate::helpers::*;
use crate::on_both;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sluis::access::Role;
use sluis::access::decision::{self, Decision, Refusal};
use std::collections::{BTreeMap, BTreeSet};

/// SplitMix64: small, seeded, good enough to shuffle worlds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const SECTIONS: &[&str] = &[
    "dossier",
    "zorgplan",
    "rapportages",
    "metingen",
    "medicatie",
    "agenda",
    "berichten",
    "documenten",
];
const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5"];
const CLIENTS: &[&str] = &["c0", "c1", "c2"];
/// The types searched and read one by one in the patient compartment.
const TYPES: &[&str] = &[
    "Observation",
    "Appointment",
    "Condition",
    "DocumentReference",
    "Communication",
    "Patient",
    "EpisodeOfCare",
];
/// The worlds' own embargo rules, before the shipped ones.
const EMBARGO: &str = "[[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|2708-6\"\ndelay = \"P90D\"\n\
     [[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|8867-4\"\ndelay = \"never\"\n\
     [[rule]]\nsection = \"metingen\"\ncode = \"http://loinc.org|8310-5\"\ndelay = \"manual\"\n";
/// Observation codes and how often each is drawn for a first version: the default P14D,
/// P90D, never, manual.
const CODES: &[(&str, u64)] = &[
    ("29463-7", 64),
    ("2708-6", 16),
    ("8867-4", 10),
    ("8310-5", 10),
];
/// The same for later versions, where a stricter rule than the first one's matters most.
const LATER_CODES: &[(&str, u64)] = &[
    ("29463-7", 40),
    ("2708-6", 25),
    ("8867-4", 20),
    ("8310-5", 15),
];
const VERSION_SYSTEM: &str = "urn:sluis-test:version";

/// What a world version's rule allows, as the world itself knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Immediate,
    Days(i64),
    Manual,
    Never,
}

/// A version the world sent (or a delete), with what it means independently of the store.
#[derive(Debug, Clone)]
struct WorldVersion {
    at: DateTime<Utc>,
    /// Deleted or entered-in-error.
    withdrawn: bool,
    rule: Rule,
    client: Option<String>,
    section: Option<String>,
    /// Outside-compartment resources it refers to: `(Type/id, element)`.
    refs: Vec<(String, String)>,
}

/// What the test knows of a resource without asking the serving code.
#[derive(Default, Clone)]
struct Known {
    versions: Vec<WorldVersion>,
}

impl Known {
    /// The newest version that has arrived by `now`.
    fn newest(&self, now: DateTime<Utc>) -> Option<&WorldVersion> {
        self.versions.iter().rev().find(|v| v.at <= now)
    }
}

/// A timed step of a world.
enum Step {
    Ingest(Vec<Value>),
    /// The other source writes a resource of `ons`: refused with 409.
    Foreign(Value),
    /// The other source deletes a resource of `ons`: refused with 409.
    ForeignDelete(String, String),
    /// The other source pushes its own resources.
    IngestOther(Vec<Value>),
    Delete(String, String),
    Api(&'static str, String, Value),
    Patch(String, String, Value),
    Revoke(String, String),
    /// A holder makes an invitation that stays open: `(holder, patient, name)`.
    Invite(String, String, String),
    /// Someone redeems the open invitation `name`.
    RedeemOpen(String, String),
    /// The holder withdraws the open invitation `name`.
    Uninvite(String, String),
    Check,
}

fn marked(mut r: Value, version: usize) -> Value {
    r["identifier"] = json!([{"system": VERSION_SYSTEM, "value": version.to_string()}]);
    r
}

fn world_patient(c: &str) -> Value {
    let mut p = patient(c);
    p["managingOrganization"] = json!({"reference": format!("Organization/org-m-{c}")});
    p["contact"] = json!([{"name": {"text": "Buurvrouw"}, "organization": {"reference": format!("Organization/org-c-{c}")}}]);
    p
}

/// A version of a resource of `client`; its section follows from `code` where the type has
/// rules by code.
fn resource(
    ty: &str,
    id: &str,
    client: &str,
    version: usize,
    performer: &str,
    code: &str,
) -> Value {
    let subject = json!({"reference": format!("Patient/{client}")});
    let r = match ty {
        "Observation" => {
            let mut o = observation(id, client, code, "2026-02-01");
            o["valueQuantity"]["value"] = json!(60 + version);
            o["performer"] = json!([{"reference": format!("Practitioner/{performer}")}]);
            o
        }
        "Appointment" => {
            let mut a = appointment(id, client, "2026-04-01T10:00:00Z");
            a["comment"] = json!(format!("v{version}"));
            // A type outside the compartment that is not shared: never served, also when a
            // visible resource refers to it.
            a["supportingInformation"] = json!([{"reference": format!("Task/task-{client}")}]);
            a
        }
        "Condition" => json!({"resourceType": "Condition", "id": id, "subject": subject,
            "code": {"text": format!("aandoening {version}")}}),
        "DocumentReference" => {
            json!({"resourceType": "DocumentReference", "id": id, "status": "current", "subject": subject,
            "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "UmFwcG9ydGFnZQ=="}}], "description": format!("v{version}")})
        }
        _ => {
            json!({"resourceType": "Communication", "id": id, "status": "completed", "subject": subject,
            "payload": [{"contentString": format!("bericht {version}")}]})
        }
    };
    marked(r, version)
}

/// The section and rule of a version, as the shipped mappings and [`EMBARGO`] say.
fn placement(ty: &str, code: &str) -> (&'static str, Rule) {
    match ty {
        "Observation" => (
            "metingen",
            match code {
                "2708-6" => Rule::Days(90),
                "8867-4" => Rule::Never,
                "8310-5" => Rule::Manual,
                _ => Rule::Days(14),
            },
        ),
        "Appointment" => ("agenda", Rule::Immediate),
        "Communication" => ("berichten", Rule::Immediate),
        "Condition" => ("dossier", Rule::Days(14)),
        "DocumentReference" if code == "11506-3" => ("rapportages", Rule::Days(14)),
        "DocumentReference" => ("documenten", Rule::Days(14)),
        _ => ("dossier", Rule::Immediate),
    }
}

struct World {
    steps: Vec<(DateTime<Utc>, Step)>,
    known: BTreeMap<(String, String), Known>,
}

fn live(at: DateTime<Utc>, client: &str, section: &str, rule: Rule) -> WorldVersion {
    WorldVersion {
        at,
        withdrawn: false,
        rule,
        client: Some(client.to_string()),
        section: Some(section.to_string()),
        refs: Vec::new(),
    }
}

fn build(seed: u64) -> World {
    let mut rng = Rng(seed);
    let t0 = sluis::time::parse_instant(T0).unwrap();
    let at = |day: u64, hour: u64| {
        t0 + Duration::days(day as i64) + Duration::hours(hour as i64) + Duration::minutes(1)
    };
    let mut steps: Vec<(DateTime<Utc>, Step)> = Vec::new();
    let mut known: BTreeMap<(String, String), Known> = BTreeMap::new();
    let key = |ty: &str, id: &str| (ty.to_string(), id.to_string());
    // Day 0: practitioners, organizations, tasks, clients, their care, and the links.
    let mut first = Vec::new();
    for k in 0..4 {
        first.push(json!({"resourceType": "Practitioner", "id": format!("pr{k}"), "name": [{"family": format!("Arts {k}")}]}));
    }
    for c in CLIENTS {
        for (id, name) in [
            (format!("org-m-{c}"), "Zorgcentrum"),
            (format!("org-c-{c}"), "Buurtzorg"),
        ] {
            first.push(json!({"resourceType": "Organization", "id": id, "name": name}));
        }
        first.push(json!({"resourceType": "Task", "id": format!("task-{c}"), "status": "requested", "intent": "order",
            "for": {"reference": format!("Patient/{c}")}, "partOf": [{"reference": "Task/task-c0"}],
            "owner": {"reference": format!("Organization/org-m-{c}")}}));
        first.push(world_patient(c));
        let mut p = live(t0, c, "dossier", Rule::Immediate);
        p.refs = vec![
            (
                format!("Organization/org-m-{c}"),
                "managingOrganization".into(),
            ),
            (
                format!("Organization/org-c-{c}"),
                "contact.organization".into(),
            ),
        ];
        known.insert(key("Patient", c), Known { versions: vec![p] });
        if !rng.chance(15) {
            let id = format!("eoc-{c}");
            first.push(episode(&id, c, "active", "2025-01-01", None));
            known.insert(
                key("EpisodeOfCare", &id),
                Known {
                    versions: vec![live(t0, c, "dossier", Rule::Immediate)],
                },
            );
        }
    }
    steps.push((t0, Step::Ingest(first)));
    for u in USERS {
        if rng.chance(90) {
            steps.push((t0, Step::Api("terms", u.to_string(), json!({}))));
        }
    }
    let mut linked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut invitations = 0;
    for c in CLIENTS {
        let first_contact = rng.chance(40);
        let holder = *rng.pick(USERS);
        linked.entry(c).or_default().insert(holder);
        steps.push((
            t0,
            Step::Api(
                "holder",
                holder.to_string(),
                json!({"patient": c, "relationship": if first_contact { "first-contact" } else { "self" }}),
            ),
        ));
        for _ in 0..1 + rng.below(3) {
            let member = *rng.pick(USERS);
            if !linked.entry(c).or_default().insert(member) {
                continue;
            }
            let sections: Vec<&str> = SECTIONS
                .iter()
                .copied()
                .filter(|_| rng.chance(40))
                .collect();
            steps.push((t0, Step::Api("member", member.to_string(), json!({"patient": c, "holder": holder, "sections": sections, "can_post": rng.chance(50)}))));
            if rng.chance(30) {
                let s: Vec<&str> = SECTIONS
                    .iter()
                    .copied()
                    .filter(|_| rng.chance(50))
                    .collect();
                steps.push((
                    at(rng.below(30), rng.below(24)),
                    Step::Patch(
                        holder.to_string(),
                        member.to_string(),
                        json!({"patient": c, "sections": s}),
                    ),
                ));
            }
            if rng.chance(20) {
                steps.push((
                    at(rng.below(30), rng.below(24)),
                    Step::Revoke(holder.to_string(), member.to_string()),
                ));
            }
        }
        // Open invitations, redeemed later: after a role change they must be dead.
        for _ in 0..1 + rng.below(3) {
            invitations += 1;
            let name = format!("open{invitations}");
            let made = rng.below(15);
            steps.push((
                at(made, 1),
                Step::Invite(holder.to_string(), c.to_string(), name.clone()),
            ));
            if rng.chance(25) {
                steps.push((
                    at(made + rng.below(5), 2),
                    Step::Uninvite(holder.to_string(), name.clone()),
                ));
            }
            steps.push((
                at(made + 1 + rng.below(20), 12),
                Step::RedeemOpen(name, rng.pick(USERS).to_string()),
            ));
        }
        if rng.chance(50) {
            let curator = *rng.pick(USERS);
            if linked.entry(c).or_default().insert(curator) {
                steps.push((
                    at(rng.below(20), 3),
                    Step::Api(
                        "holder",
                        curator.to_string(),
                        json!({"patient": c, "relationship": "curator"}),
                    ),
                ));
            }
        }
    }
    for u in USERS {
        if rng.chance(15) {
            let until = if rng.chance(50) {
                Some(sluis::time::instant(at(rng.below(40), 0)))
            } else {
                None
            };
            steps.push((
                at(rng.below(30), rng.below(24)),
                Step::Api(
                    "block-user",
                    u.to_string(),
                    json!({"reason": "test", "until": until}),
                ),
            ));
        }
    }
    for c in CLIENTS {
        if rng.chance(15) {
            steps.push((
                at(rng.below(30), 5),
                Step::Api("block-patient", c.to_string(), json!({})),
            ));
        }
        if rng.chance(25) {
            let when = at(rng.below(30), 6);
            let end = at(rng.below(30), 0).date_naive().to_string();
            steps.push((
                when,
                Step::Ingest(vec![episode(
                    &format!("eoc-{c}"),
                    c,
                    "finished",
                    "2025-01-01",
                    Some(&end),
                )]),
            ));
            known
                .entry(key("EpisodeOfCare", &format!("eoc-{c}")))
                .or_default()
                .versions
                .push(live(when, c, "dossier", Rule::Immediate));
        }
        if rng.chance(15) {
            let when = at(rng.below(30), 7);
            let mut died = world_patient(c);
            died["deceasedDateTime"] = json!(sluis::time::instant(at(rng.below(30), 2)));
            steps.push((when, Step::Ingest(vec![died])));
            let k = known.get_mut(&key("Patient", c)).unwrap();
            let mut v = k.versions[0].clone();
            v.at = when;
            k.versions.push(v);
        }
        if rng.chance(10) {
            steps.push((
                at(rng.below(30), 8),
                Step::Api("end-link", c.to_string(), json!({})),
            ));
        }
        // The other source's own entries for this client: served like any other.
        let other_id = format!("{c}-other");
        let when = at(rng.below(20), 13);
        let mut theirs = appointment(&other_id, c, "2026-05-01T10:00:00Z");
        theirs = marked(theirs, 1);
        steps.push((when, Step::IngestOther(vec![theirs])));
        known.insert(
            key("Appointment", &other_id),
            Known {
                versions: vec![live(when, c, "agenda", Rule::Immediate)],
            },
        );
        // The dossier: entries arriving over a month, some changed (also moved to another
        // client or section, or put under a stricter rule), withdrawn, held or released.
        for (ty, n) in [
            ("Observation", 5),
            ("Appointment", 3),
            ("Condition", 2),
            ("DocumentReference", 3),
            ("Communication", 1),
        ] {
            for k in 0..n {
                let id = format!("{c}-{}-{k}", ty.to_lowercase());
                let mut day = rng.below(30);
                let first_day = day;
                let mut entry = Known::default();
                let versions = 1
                    + usize::from(rng.chance(45))
                    + usize::from(rng.chance(25))
                    + usize::from(ty == "Observation" && rng.chance(25));
                let mut client = c.to_string();
                for v in 1..=versions {
                    if v > 1 && matches!(ty, "Observation" | "Appointment") && rng.chance(15) {
                        client = rng.pick(CLIENTS).to_string();
                    }
                    let code = match ty {
                        "Observation" => {
                            let roll = rng.below(100);
                            let mut sum = 0;
                            if v == 1 { CODES } else { LATER_CODES }
                                .iter()
                                .find(|(_, w)| {
                                    sum += w;
                                    roll < sum
                                })
                                .map_or("29463-7", |(c, _)| *c)
                        }
                        "DocumentReference" if rng.chance(30) => "34133-9",
                        _ => "11506-3",
                    };
                    let performer = format!("pr{}", rng.below(4));
                    let mut r = resource(ty, &id, &client, v, &performer, code);
                    let when = at(day, rng.below(24));
                    let (section, rule) = placement(ty, code);
                    let mut wv = live(when, &client, section, rule);
                    if ty == "Observation" {
                        wv.refs = vec![(format!("Practitioner/{performer}"), "performer".into())];
                    }
                    if v == versions && rng.chance(8) {
                        wv.withdrawn = true;
                        if ty == "Condition" {
                            r["verificationStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]});
                        } else {
                            r["status"] = json!("entered-in-error");
                        }
                    }
                    entry.versions.push(wv);
                    steps.push((when, Step::Ingest(vec![r.clone()])));
                    if v == 1 && rng.chance(12) {
                        // The other source tries to write over it, or to delete it.
                        let later = when + Duration::hours(1 + rng.below(200) as i64);
                        if rng.chance(50) {
                            let mut foreign = r.clone();
                            foreign["identifier"] =
                                json!([{"system": VERSION_SYSTEM, "value": "foreign"}]);
                            steps.push((later, Step::Foreign(foreign)));
                        } else {
                            steps.push((later, Step::ForeignDelete(ty.to_string(), id.clone())));
                        }
                    }
                    day += 1 + rng.below(if ty == "Observation" { 30 } else { 12 });
                }
                if rng.chance(10) {
                    let when = at(day, 1);
                    steps.push((when, Step::Delete(ty.to_string(), id.clone())));
                    let last = entry.versions.last().cloned().unwrap();
                    entry.versions.push(WorldVersion {
                        at: when,
                        withdrawn: true,
                        ..last
                    });
                }
                if rng.chance(25) {
                    // Held at any moment, often once it is shown (after the usual delay).
                    let held = if rng.chance(60) {
                        first_day + 15 + rng.below(15)
                    } else {
                        rng.below(40)
                    };
                    let until = if rng.chance(50) {
                        Value::Null
                    } else {
                        json!(sluis::time::instant(at(held + 1 + rng.below(30), 0)))
                    };
                    steps.push((
                        at(held, 4),
                        Step::Api("hold", format!("{ty}/{id}"), json!({"until": until})),
                    ));
                }
                if rng.chance(15) {
                    steps.push((
                        at(rng.below(50), 9),
                        Step::Api("release", format!("{ty}/{id}"), json!({})),
                    ));
                }
                known.insert(key(ty, &id), entry);
            }
        }
    }
    steps.push((at(18, 7), Step::Check));
    steps.push((at(40, 11), Step::Check));
    steps.push((at(100, 11), Step::Check));
    steps.sort_by_key(|(t, _)| *t);
    World { steps, known }
}

/// One stored version, as `/admin/explain` tells it.
#[derive(Debug, Clone)]
struct StoredVersion {
    version: i64,
    client: Option<String>,
    section: Option<String>,
    withdrawn: bool,
    release: Option<DateTime<Utc>>,
}

/// Every stored version of a resource, in version order.
async fn stored(app: &TestApp, ty: &str, id: &str) -> Vec<StoredVersion> {
    let r = app
        .http
        .get(app.url(&format!("/admin/explain?resource={ty}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    e["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| StoredVersion {
            version: v["version"].as_i64().unwrap(),
            client: v["client"]
                .as_str()
                .map(|c| c.trim_start_matches("Patient/").to_string()),
            section: v["section"].as_str().map(str::to_string),
            withdrawn: v["state"] == "withdrawn",
            release: v["release_at"]
                .as_str()
                .and_then(sluis::time::parse_instant),
        })
        .collect()
}

/// The served version now: the newest one released.
fn served(versions: &[StoredVersion], now: DateTime<Utc>) -> Option<&StoredVersion> {
    versions
        .iter()
        .filter(|v| v.release.is_some_and(|r| r <= now))
        .max_by_key(|v| v.version)
}

fn bundle_ids(bundle: &Value, mode: &str) -> BTreeSet<(String, String, String)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            let r = &e["resource"];
            (
                r["resourceType"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
                r["meta"]["versionId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// An accepted staff action: when, whether a release (else a hold), and a hold's end.
type StaffAction = (DateTime<Utc>, bool, Option<DateTime<Utc>>);

/// What the run learned: accepted staff actions per resource.
#[derive(Default)]
struct Journal {
    actions: BTreeMap<String, Vec<StaffAction>>,
}

/// The client a served body names.
fn body_client(body: &Value) -> Option<String> {
    let reference = body["subject"]["reference"]
        .as_str()
        .or_else(|| body["patient"]["reference"].as_str())
        .or_else(|| body["participant"][0]["actor"]["reference"].as_str());
    match body["resourceType"].as_str() {
        Some("Patient") => body["id"].as_str().map(str::to_string),
        _ => reference.map(|r| r.trim_start_matches("Patient/").to_string()),
    }
}

/// The section of a served body, as the world's mappings give it.
fn body_section(body: &Value) -> &'static str {
    let ty = body["resourceType"].as_str().unwrap_or("");
    let code = body["code"]["coding"][0]["code"]
        .as_str()
        .or_else(|| body["type"]["coding"][0]["code"].as_str())
        .unwrap_or("");
    placement(ty, code).0
}

/// Checks what the world itself says of a resource served to someone at `now`, whatever the
/// store holds: its newest version is not a withdrawal or under `never`; the served body is in
/// the client and section of the newest version; it is not served before its own rule allows
/// (counted from the resource's first arrival), unless staff released it; and it is not held.
fn world_allows(
    ctx: &str,
    known: &Known,
    journal: &Journal,
    ty: &str,
    id: &str,
    body: &Value,
    now: DateTime<Utc>,
) {
    let Some(newest) = known.newest(now) else {
        panic!("{ctx}: {ty}/{id} served before it arrived");
    };
    assert!(
        !newest.withdrawn,
        "{ctx}: {ty}/{id} served after its withdrawal: {body}"
    );
    assert_ne!(
        newest.rule,
        Rule::Never,
        "{ctx}: {ty}/{id} served after a version under `never` arrived: {body}"
    );
    assert_eq!(
        body_client(body),
        newest.client,
        "{ctx}: {ty}/{id} served in a client it has left: {body}"
    );
    if matches!(ty, "Patient" | "EpisodeOfCare") {
        return;
    }
    assert_eq!(
        Some(body_section(body)),
        newest.section.as_deref(),
        "{ctx}: {ty}/{id} served in a section it has left: {body}"
    );
    let marker = body["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["system"] == VERSION_SYSTEM)
        .and_then(|i| i["value"].as_str())
        .unwrap_or_else(|| panic!("{ctx}: {ty}/{id} without its version marker: {body}"));
    assert_ne!(
        marker, "foreign",
        "{ctx}: another source's write is served: {body}"
    );
    let index: usize = marker.parse().unwrap();
    let version = &known.versions[index - 1];
    let first = known.versions[0].at;
    let by_rule = match version.rule {
        Rule::Immediate => Some(version.at),
        Rule::Days(d) => Some(first + Duration::days(d)),
        Rule::Manual => None,
        Rule::Never => panic!("{ctx}: {ty}/{id} served a version under `never`: {body}"),
    };
    let actions = journal
        .actions
        .get(&format!("{ty}/{id}"))
        .map_or(&[][..], Vec::as_slice);
    let released = actions
        .iter()
        .filter(|(at, release, _)| *release && *at >= version.at && *at <= now)
        .map(|(at, _, _)| *at)
        .min();
    let earliest = match (by_rule, released) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(DateTime::<Utc>::MAX_UTC),
    };
    assert!(
        now >= earliest,
        "{ctx}: {ty}/{id} version {index} served before its rule allows ({earliest}): {body}"
    );
    // A version not shown before a newer one arrived is superseded: it never shows.
    if let Some(newer) = known.versions.get(index)
        && newer.at <= now
    {
        assert!(
            earliest <= newer.at,
            "{ctx}: {ty}/{id} version {index} served, though it could not show before version {} arrived: {body}",
            index + 1
        );
    }
    if let Some((_, false, until)) = actions.iter().rfind(|(at, _, _)| *at <= now) {
        assert!(
            until.is_some_and(|u| u <= now),
            "{ctx}: {ty}/{id} served during a hold: {body}"
        );
    }
}

async fn check(
    app: &TestApp,
    world: &World,
    journal: &Journal,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    seed: u64,
) {
    // The stored versions of every resource, independent of the serving code.
    let mut state: BTreeMap<(String, String), Vec<StoredVersion>> = BTreeMap::new();
    for (ty, id) in world.known.keys() {
        state.insert((ty.clone(), id.clone()), stored(app, ty, id).await);
    }
    let policy = app.state.policy();
    let mut seen = (0usize, 0usize, 0usize, 0usize);
    for user in USERS {
        let ctx = format!("seed {seed}, {now}, user {user}");
        let (facts, links) = sluis::access::facts::user_and_links(&app.state.db, PORTAL.0, user)
            .await
            .unwrap();
        let patients: Vec<&str> = links
            .iter()
            .filter(|l| !l.ended)
            .map(|l| l.patient_id.as_str())
            .collect();
        let clients = sluis::access::facts::clients(&app.state.db, &patients)
            .await
            .unwrap();
        let verdict = decision::decide(facts.as_ref(), &links, &clients, &policy, now);
        let u = app.user(user).await;
        let d: Decision = match verdict {
            Err(Refusal(reason)) => {
                for path in [
                    "/fhir/Observation",
                    "/fhir/Patient/c0",
                    "/fhir/_history",
                    "/fhir/Organization",
                ] {
                    let (status, outcome) = u.get(path).await;
                    assert_eq!(
                        (status, crate::helpers::reason(&outcome)),
                        (403, reason.code()),
                        "{ctx}: {path}"
                    );
                }
                for c in CLIENTS {
                    for (status, outcome) in writes_back(&u, c).await {
                        assert_eq!(
                            (status, crate::helpers::reason(&outcome)),
                            (403, reason.code()),
                            "{ctx}: writing back about {c}"
                        );
                    }
                }
                continue;
            }
            Ok(d) => d,
        };
        // Who may post a message, ask for a correction and read the requests of each client
        // (the answers are refusals of bodies that are not valid, so the world does not change).
        for c in CLIENTS {
            let access = d.access(c);
            let refused = d.refused.get(*c).map(|r| r.code());
            let holder = access.is_some_and(|a| a.role == Role::Holder);
            let refusal = |other: (u16, &'static str)| match refused {
                Some(code) => (403, code),
                None => other,
            };
            let want_post = match access {
                Some(a) if a.can_post || a.role == Role::Holder => (400, "invalid-resource"),
                Some(_) => (403, "no-post-right"),
                None => refusal((400, "invalid-resource")),
            };
            let want_request = match access {
                Some(_) if holder => (400, "invalid-resource"),
                Some(_) => (403, "not-holder"),
                None => refusal((403, "not-linked")),
            };
            let want_read = match access {
                Some(_) if holder => (200, ""),
                Some(_) => (403, "not-holder"),
                None => refusal((403, "not-linked")),
            };
            let got: Vec<(u16, String)> = writes_back(&u, c)
                .await
                .into_iter()
                .map(|(s, o)| {
                    (
                        s,
                        if s == 200 {
                            String::new()
                        } else {
                            crate::helpers::reason(&o).to_string()
                        },
                    )
                })
                .collect();
            let want: Vec<(u16, String)> = [want_post, want_request, want_read]
                .into_iter()
                .map(|(s, r)| (s, r.to_string()))
                .collect();
            assert_eq!(got, want, "{ctx}: message, request, requests of {c}");
        }
        let may_see =
            |ty: &str, v: &StoredVersion| d.may_see(ty, v.client.as_deref(), v.section.as_deref());
        // What the decision says the user sees: the served version of each visible resource.
        let visible = |ty: &str, id: &str| -> Option<String> {
            let versions = &state[&(ty.to_string(), id.to_string())];
            let s = served(versions, now)?;
            (!s.withdrawn && may_see(ty, s)).then(|| s.version.to_string())
        };
        let mut bodies: BTreeMap<(String, String), Value> = BTreeMap::new();
        for ty in TYPES {
            let want: BTreeSet<(String, String, String)> = world
                .known
                .keys()
                .filter(|(t, _)| t == ty)
                .filter_map(|(t, id)| visible(t, id).map(|v| (t.clone(), id.clone(), v)))
                .collect();
            // Search, all pages, and total.
            let mut got = BTreeSet::new();
            let mut next = Some(format!("/fhir/{ty}?_count=4"));
            while let Some(url) = next.take() {
                let (status, bundle) = u.get(&url.replacen("http://sluis.test", &u.base, 1)).await;
                assert_eq!(status, 200, "{ctx}: {url}: {bundle}");
                assert_eq!(bundle["total"], json!(want.len()), "{ctx}: total of {ty}");
                for x in bundle_ids(&bundle, "match") {
                    assert!(got.insert(x.clone()), "{ctx}: {x:?} on two pages");
                }
                next = bundle["link"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["relation"] == "next")
                    .map(|l| l["url"].as_str().unwrap().to_string());
            }
            assert_eq!(got, want, "{ctx}: search {ty}");
            // Read, one by one: 200 with the served version, or 404.
            for (t, id) in world.known.keys().filter(|(t, _)| t == ty) {
                let (status, body) = u.get(&format!("/fhir/{t}/{id}")).await;
                match visible(t, id) {
                    Some(v) => {
                        assert_eq!(status, 200, "{ctx}: read {t}/{id}: {body}");
                        assert_eq!(
                            body["meta"]["versionId"],
                            v.as_str(),
                            "{ctx}: read {t}/{id}"
                        );
                        world_allows(
                            &ctx,
                            &world.known[&(t.clone(), id.clone())],
                            journal,
                            t,
                            id,
                            &body,
                            now,
                        );
                        bodies.insert((t.clone(), id.clone()), body);
                    }
                    None => assert_eq!(status, 404, "{ctx}: read {t}/{id} must be hidden: {body}"),
                }
            }
        }
        // Per client: refused clients answer with their reason.
        for c in CLIENTS {
            let (status, body) = u
                .get(&format!("/fhir/Observation?patient={c}&_summary=count"))
                .await;
            match d.refused.get(*c) {
                Some(reason) => assert_eq!(
                    (status, crate::helpers::reason(&body)),
                    (403, reason.code()),
                    "{ctx}: {c}"
                ),
                None => {
                    assert_eq!(status, 200, "{ctx}: {c}: {body}");
                    let want = bodies
                        .iter()
                        .filter(|((t, _), b)| {
                            t == "Observation" && body_client(b).as_deref() == Some(c)
                        })
                        .count();
                    assert_eq!(body["total"], json!(want), "{ctx}: Observations of {c}");
                }
            }
        }
        // Shared types: a Practitioner when a visible Observation names it; an Organization
        // when a visible Patient names it, from `contact` only for roles that get `contact`.
        let mut practitioners: BTreeSet<String> = BTreeSet::new();
        let mut managing: BTreeSet<String> = BTreeSet::new();
        let mut organizations: BTreeSet<String> = BTreeSet::new();
        for ((t, id), body) in &bodies {
            if t == "Observation" {
                for p in body["performer"].as_array().into_iter().flatten() {
                    if let Some(r) = p["reference"].as_str() {
                        practitioners.insert(r.trim_start_matches("Practitioner/").to_string());
                    }
                }
            }
            if t == "Patient" {
                let role = d.access(id).map(|a| a.role);
                let known = &world.known[&(t.clone(), id.clone())];
                for (target, element) in &known.versions[0].refs {
                    let org = target.trim_start_matches("Organization/").to_string();
                    if element == "managingOrganization" {
                        managing.insert(org.clone());
                        organizations.insert(org);
                    } else if role != Some(Role::Member) {
                        organizations.insert(org);
                    }
                }
            }
        }
        let (_, bundle) = u
            .get("/fhir/Observation?_include=Observation:performer&_count=500")
            .await;
        let included: BTreeSet<String> = bundle_ids(&bundle, "include")
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(included, practitioners, "{ctx}: _include of performers");
        let (_, bundle) = u
            .get("/fhir/Patient?_include=Patient:organization&_count=500")
            .await;
        let included: BTreeSet<String> = bundle_ids(&bundle, "include")
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(included, managing, "{ctx}: _include of organizations");
        for (ty, want) in [
            ("Practitioner", &practitioners),
            ("Organization", &organizations),
        ] {
            let (status, bundle) = u.get(&format!("/fhir/{ty}?_count=500")).await;
            assert_eq!(status, 200, "{ctx}: {bundle}");
            let got: BTreeSet<String> = bundle_ids(&bundle, "match")
                .into_iter()
                .map(|(_, id, _)| id)
                .collect();
            assert_eq!(&got, want, "{ctx}: search {ty}");
            assert_eq!(bundle["total"], json!(want.len()), "{ctx}: total of {ty}");
        }
        for k in 0..4 {
            let (status, _) = u.get(&format!("/fhir/Practitioner/pr{k}")).await;
            assert_eq!(
                status == 200,
                practitioners.contains(&format!("pr{k}")),
                "{ctx}: read Practitioner/pr{k}"
            );
        }
        for c in CLIENTS {
            for org in [format!("org-m-{c}"), format!("org-c-{c}")] {
                let (status, _) = u.get(&format!("/fhir/Organization/{org}")).await;
                assert_eq!(
                    status == 200,
                    organizations.contains(&org),
                    "{ctx}: read Organization/{org}"
                );
            }
            // Types outside the compartment that are not shared are never served.
            let (status, _) = u.get(&format!("/fhir/Task/task-{c}")).await;
            assert_eq!(status, 404, "{ctx}: Task/task-{c}");
        }
        let (status, bundle) = u.get("/fhir/Task?_include=Task:part-of").await;
        assert_eq!(
            (status, &bundle["total"]),
            (200, &json!(0)),
            "{ctx}: {bundle}"
        );
        // _history since the previous check: per resource the user's last word on it.
        let mut want_history: BTreeSet<(String, String, String)> = BTreeSet::new();
        for ((ty, id), versions) in &state {
            if !TYPES.contains(&ty.as_str()) {
                continue;
            }
            if let Some(s) = served(versions, now)
                && !s.withdrawn
                && may_see(ty, s)
            {
                if s.release.is_some_and(|r| r > since) {
                    want_history.insert((ty.clone(), id.clone(), format!("PUT {}", s.version)));
                }
                continue;
            }
            let last = versions
                .iter()
                .filter(|v| v.release.is_some_and(|r| r <= now) && may_see(ty, v))
                .max_by_key(|v| v.version);
            if let Some(t) = last
                && t.withdrawn
                && t.release.is_some_and(|r| r > since)
                && versions.iter().any(|p| {
                    p.version < t.version
                        && !p.withdrawn
                        && p.release.is_some_and(|r| Some(r) <= t.release)
                        && may_see(ty, p)
                })
            {
                want_history.insert((ty.clone(), id.clone(), "DELETE".into()));
            }
        }
        let mut got_history = BTreeSet::new();
        let mut next = Some(format!(
            "/fhir/_history?_since={}&_count=9",
            sluis::time::instant(since)
        ));
        while let Some(url) = next.take() {
            let (status, bundle) = u.get(&url.replacen("http://sluis.test", &u.base, 1)).await;
            assert_eq!(status, 200, "{ctx}: {bundle}");
            assert_eq!(
                bundle["total"],
                json!(want_history.len()),
                "{ctx}: _history total"
            );
            for e in bundle["entry"].as_array().into_iter().flatten() {
                let (ty, id) = e["request"]["url"]
                    .as_str()
                    .unwrap()
                    .split_once('/')
                    .unwrap();
                let what = match e["request"]["method"].as_str().unwrap() {
                    "DELETE" => "DELETE".to_string(),
                    _ => {
                        world_allows(
                            &ctx,
                            &world.known[&(ty.to_string(), id.to_string())],
                            journal,
                            ty,
                            id,
                            &e["resource"],
                            now,
                        );
                        format!(
                            "PUT {}",
                            e["resource"]["meta"]["versionId"].as_str().unwrap()
                        )
                    }
                };
                assert!(
                    got_history.insert((ty.to_string(), id.to_string(), what)),
                    "{ctx}: {ty}/{id} twice in _history"
                );
            }
            next = bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
        }
        assert_eq!(got_history, want_history, "{ctx}: _history");
        // A third of the users, chosen afresh at every check, also through a narrower scope.
        let mut pick = Rng(seed ^ now.timestamp() as u64 ^ (user.as_bytes()[1] as u64) << 32);
        if pick.chance(35) {
            scoped(app, &u, world, &ctx, pick.next()).await;
        }
        seen.0 += 1;
        seen.1 += practitioners.len() + organizations.len();
        seen.2 += want_history.len();
        seen.3 += want_history.iter().filter(|e| e.2 == "DELETE").count();
    }
    eprintln!(
        "seed {seed} at {now}: {} of {} users allowed; {} shared resources seen; {} history entries, {} of them withdrawals",
        seen.0,
        USERS.len(),
        seen.1,
        seen.2,
        seen.3
    );
}

/// The same user through a token of a random narrower scope (issue 22): what a type's scope
/// allows is answered exactly as with the whole scope, what it does not is 403, `_include`
/// brings only types the scope reads, and `_history` needs every type.
/// A message without payload, a request without description, and the client's requests, as
/// `u` sends them about client `c`: what the rules for writing back answer before the body.
async fn writes_back(u: &User, c: &str) -> Vec<(u16, Value)> {
    let message = json!({"resourceType": "Communication",
        "subject": {"reference": format!("Patient/{c}")}, "payload": []});
    let request = json!({"resourceType": "Task", "for": {"reference": format!("Patient/{c}")},
        "code": {"coding": [{"system": "urn:sluis:request", "code": "addition"}]}});
    vec![
        u.post("/fhir/Communication", &message).await,
        u.post("/fhir/Task", &request).await,
        u.get(&format!("/fhir/Task?patient={c}")).await,
    ]
}

async fn scoped(app: &TestApp, u: &User, world: &World, ctx: &str, seed: u64) {
    let mut rng = Rng(seed);
    let mut types: Vec<&str> = TYPES.to_vec();
    types.extend(["Practitioner", "Organization", "Patient"]);
    types.sort_unstable();
    types.dedup();
    let mut scope: Vec<String> = Vec::new();
    if rng.chance(15) {
        scope.push("system/*.rs".into());
    }
    for ty in &types {
        if rng.chance(50) {
            scope.push(format!("system/{ty}.{}", rng.pick(&["r", "s", "rs"])));
        }
    }
    if scope.is_empty() {
        scope.push("system/Observation.s".into());
    }
    let scope = scope.join(" ");
    let r = app
        .http
        .post(app.url("/auth/token"))
        .basic_auth(PORTAL.0, Some(PORTAL.1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let narrow = User {
        token: body["access_token"].as_str().unwrap().to_string(),
        ..u.clone()
    };
    let allows = |ty: &str, letter: char| {
        scope.split(' ').any(|s| {
            let (t, letters) = s.trim_start_matches("system/").split_once('.').unwrap();
            (t == "*" || t == ty) && letters.contains(letter)
        })
    };
    let ctx = format!("{ctx}, scope {scope}");
    for ty in &types {
        let (full, want) = u.get(&format!("/fhir/{ty}?_count=500")).await;
        let (status, got) = narrow.get(&format!("/fhir/{ty}?_count=500")).await;
        if allows(ty, 's') {
            assert_eq!(
                (status, &got["total"]),
                (full, &want["total"]),
                "{ctx}: search {ty}"
            );
            assert_eq!(
                bundle_ids(&got, "match"),
                bundle_ids(&want, "match"),
                "{ctx}: search {ty}"
            );
        } else {
            assert_eq!(status, 403, "{ctx}: search {ty} beyond the scope: {got}");
        }
        for (t, id) in world.known.keys().filter(|(t, _)| t == ty) {
            let (full, want) = u.get(&format!("/fhir/{t}/{id}")).await;
            let (status, got) = narrow.get(&format!("/fhir/{t}/{id}")).await;
            if allows(ty, 'r') {
                assert_eq!((status, &got), (full, &want), "{ctx}: read {t}/{id}");
            } else {
                assert_eq!(status, 403, "{ctx}: read {t}/{id} beyond the scope");
            }
        }
    }
    if allows("Observation", 's') {
        let path = "/fhir/Observation?_include=Observation:performer&_count=500";
        let (_, want) = u.get(path).await;
        let (_, got) = narrow.get(path).await;
        let want = if allows("Practitioner", 'r') {
            bundle_ids(&want, "include")
        } else {
            BTreeSet::new()
        };
        assert_eq!(bundle_ids(&got, "include"), want, "{ctx}: _include");
    }
    let (status, _) = narrow.get("/fhir/_history").await;
    assert_eq!(status == 200, allows("*", 'r'), "{ctx}: _history");
}

/// The link id of `user`'s active holder link to `patient`, if any.
async fn holder_link(app: &TestApp, user: &str, patient: &str) -> Option<String> {
    let (_, me) = app.user(user).await.get("/portal/me").await;
    me["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["patient"] == format!("Patient/{patient}") && c["role"] == "holder")
        .and_then(|c| c["link"].as_str().map(str::to_string))
}

/// Whether the link `id` of `patient` is still an active holder link.
async fn still_holder(app: &TestApp, patient: &str, id: &str) -> bool {
    let r = app
        .http
        .get(app.url(&format!("/admin/links?patient={patient}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let links: Value = r.json().await.unwrap();
    links["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["id"] == id && l["role"] == "holder" && l["ended_at"].is_null())
}

async fn run(app: &TestApp, seed: u64) {
    let world = build(seed);
    let mut journal = Journal::default();
    let mut since = sluis::time::parse_instant("2000-01-01T00:00:00Z").unwrap();
    // Open invitations: name → (patient, code, inviting holder link, withdrawn).
    let mut open: BTreeMap<String, (String, String, String, bool)> = BTreeMap::new();
    let mut outcomes = (0usize, 0usize);
    let other = || app.token(("other-push", "other-push-secret-1"));
    for (at, step) in &world.steps {
        app.set_clock(&sluis::time::instant(*at)).await;
        match step {
            Step::Ingest(resources) => {
                let (status, out) = app.push(&transaction(resources)).await;
                assert_eq!(status, 200, "seed {seed}: {out}");
            }
            Step::IngestOther(resources) => {
                let r = app
                    .http
                    .post(app.url("/ingest/other"))
                    .bearer_auth(other().await)
                    .json(&transaction(resources))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "seed {seed}");
            }
            Step::Foreign(resource) => {
                let path = format!(
                    "/ingest/other/{}/{}",
                    resource["resourceType"].as_str().unwrap(),
                    resource["id"].as_str().unwrap()
                );
                let r = app
                    .http
                    .put(app.url(&path))
                    .bearer_auth(other().await)
                    .json(resource)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 409, "seed {seed}: {path}");
            }
            Step::ForeignDelete(ty, id) => {
                let r = app
                    .http
                    .delete(app.url(&format!("/ingest/other/{ty}/{id}")))
                    .bearer_auth(other().await)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 409, "seed {seed}: delete {ty}/{id}");
            }
            Step::Delete(ty, id) => {
                app.delete_resource(ty, id).await;
            }
            Step::Api(kind, who, body) => match *kind {
                "holder" => {
                    let patient = body["patient"].as_str().unwrap();
                    let (status, code) = app
                        .admin_post(
                            "/admin/activation-codes",
                            &json!({"patient": patient, "relationship": body["relationship"]}),
                        )
                        .await;
                    assert_eq!(status, 201, "seed {seed}: {code}");
                    let u = app.user(who).await;
                    u.post(
                        "/portal/link",
                        &json!({"code": code["code"], "birth_date": "1970-01-01"}),
                    )
                    .await;
                }
                "member" => {
                    let patient = body["patient"].as_str().unwrap();
                    let holder = app.user(body["holder"].as_str().unwrap()).await;
                    let (status, inv) = holder
                        .post("/portal/invitations", &json!({"patient": patient, "sections": body["sections"], "can_post": body["can_post"], "name": who, "relationship": "DAUC"}))
                        .await;
                    if status == 201 {
                        let u = app.user(who).await;
                        u.post(
                            "/portal/link",
                            &json!({"code": inv["code"], "birth_date": "1970-01-01"}),
                        )
                        .await;
                    }
                }
                "terms" => {
                    app.user(who)
                        .await
                        .post("/portal/terms", &json!({"version": "2026-01"}))
                        .await;
                }
                "block-user" => {
                    app.admin_post(&format!("/admin/users/caren/{who}/block"), body)
                        .await;
                }
                "block-patient" => {
                    app.admin_post(&format!("/admin/patients/{who}/block"), body)
                        .await;
                }
                "end-link" => {
                    let r = app
                        .http
                        .get(app.url(&format!("/admin/links?patient={who}")))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap();
                    let links: Value = r.json().await.unwrap();
                    if let Some(l) = links["links"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|l| l["ended_at"].is_null())
                    {
                        app.http
                            .delete(app.url(&format!("/admin/links/{}", l["id"].as_str().unwrap())))
                            .bearer_auth(ADMIN)
                            .send()
                            .await
                            .unwrap();
                    }
                }
                "hold" | "release" => {
                    let request = if *kind == "hold" {
                        json!({"resource": who, "until": body["until"]})
                    } else {
                        json!({"resource": who})
                    };
                    let (status, _) = app.admin_post(&format!("/admin/{kind}"), &request).await;
                    if status == 200 {
                        let until = body["until"].as_str().and_then(sluis::time::parse_instant);
                        journal.actions.entry(who.clone()).or_default().push((
                            *at,
                            *kind == "release",
                            until,
                        ));
                    }
                }
                other => panic!("unknown step {other}"),
            },
            Step::Invite(holder, patient, name) => {
                let h = app.user(holder).await;
                let (status, inv) = h
                    .post("/portal/invitations", &json!({"patient": patient, "sections": SECTIONS, "can_post": true, "name": name, "relationship": "SONC"}))
                    .await;
                if status == 201
                    && let Some(link) = holder_link(app, holder, patient).await
                {
                    open.insert(
                        name.clone(),
                        (
                            patient.clone(),
                            inv["code"].as_str().unwrap().to_string(),
                            link,
                            false,
                        ),
                    );
                }
            }
            Step::Uninvite(holder, name) => {
                if let Some((patient, _, _, withdrawn)) = open.get_mut(name) {
                    let h = app.user(holder).await;
                    let (_, list) = h
                        .get(&format!("/portal/invitations?patient={patient}"))
                        .await;
                    if let Some(i) = list["invitations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|i| i["name"] == name.as_str())
                        && h.delete(&format!(
                            "/portal/invitations/{}",
                            i["id"].as_str().unwrap()
                        ))
                        .await
                            == 204
                    {
                        *withdrawn = true;
                    }
                }
            }
            Step::RedeemOpen(name, user) => {
                if let Some((patient, code, link, withdrawn)) = open.remove(name) {
                    let dead = withdrawn || !still_holder(app, &patient, &link).await;
                    let (facts, _) =
                        sluis::access::facts::user_and_links(&app.state.db, PORTAL.0, user)
                            .await
                            .unwrap();
                    let blocked = facts.is_some_and(|f| decision::is_blocked(&f, *at));
                    let u = app.user(user).await;
                    let (status, out) = u
                        .post(
                            "/portal/link",
                            &json!({"code": code, "birth_date": "1970-01-01"}),
                        )
                        .await;
                    if dead && !blocked {
                        assert_eq!(
                            (status, crate::helpers::reason(&out)),
                            (410, "code-expired"),
                            "seed {seed}: {name}, made by a holder who no longer holds or withdrawn: {out}"
                        );
                        outcomes.0 += 1;
                    } else {
                        outcomes.1 += usize::from(status == 201);
                    }
                }
            }
            Step::Patch(holder, member, body) => {
                let h = app.user(holder).await;
                let patient = body["patient"].as_str().unwrap();
                let (status, grants) = h.get(&format!("/portal/grants?patient={patient}")).await;
                if status == 200
                    && let Some(g) = grants["grants"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|g| g["name"] == member.as_str())
                {
                    h.patch(
                        &format!("/portal/grants/{}", g["id"].as_str().unwrap()),
                        &json!({"sections": body["sections"]}),
                    )
                    .await;
                }
            }
            Step::Revoke(holder, member) => {
                let h = app.user(holder).await;
                for c in CLIENTS {
                    let (status, grants) = h.get(&format!("/portal/grants?patient={c}")).await;
                    if status == 200
                        && let Some(g) = grants["grants"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|g| g["name"] == member.as_str())
                    {
                        h.delete(&format!("/portal/grants/{}", g["id"].as_str().unwrap()))
                            .await;
                    }
                }
            }
            Step::Check => {
                check(app, &world, &journal, *at, since, seed).await;
                since = *at;
            }
        }
    }
    eprintln!(
        "seed {seed}: {} dead invitations refused, {} open ones redeemed",
        outcomes.0, outcomes.1
    );
}

on_both!(
    search_read_include_total_and_history_equal_the_decision,
    |b| async move {
        let worlds: u64 = std::env::var("SLUIS_DIFF_WORLDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6);
        let probe = TestApp::spawn(b.clone()).await;
        let mappings = probe.mappings(EMBARGO);
        for seed in 0..worlds {
            let app = TestApp::spawn_with(
                b.clone(),
                &format!(
                    "[organization]\nterms_version = \"2026-01\"\ncare_end_grace = \"P3D\"\n[embargo]\non_update = \"delay\"\n{mappings}\
                     [limits]\nuser_requests_per_minute = 1000000\ntoken_requests_per_minute = 100000\n"
                ),
            )
            .await;
            run(&app, 1000 + seed).await;
        }
    }
);
