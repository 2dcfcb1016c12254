//! The test that proves nothing leaks (issue 4, acceptance 2): random worlds of clients, links,
//! grants, blocks, care periods, deaths, terms, embargoed and released versions and clock
//! moments are built through the real API; then, for every user, what search (all pages and
//! `total`), read, `_include` and `_history` return is compared, resource by resource, with what
//! the pure decision (`access::decision::decide`) says of the stored facts and the versions'
//! stored release moments. Worlds: `SLUIS_DIFF_WORLDS` (default 6); a failure names its seed.

use crate::helpers::*;
use crate::on_both;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
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
const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u4"];
const CLIENTS: &[&str] = &["c0", "c1", "c2"];
const TYPES: &[&str] = &[
    "Observation",
    "Appointment",
    "Condition",
    "DocumentReference",
    "Communication",
    "Patient",
    "EpisodeOfCare",
];

/// A timed step of a world.
enum Step {
    Ingest(Vec<Value>),
    Delete(String, String),
    Api(&'static str, String, Value),
    Patch(String, String, Value),
    Revoke(String, String),
    Check,
}

fn resource(ty: &str, id: &str, client: &str, version: u32, performer: &str) -> Value {
    let subject = json!({"reference": format!("Patient/{client}")});
    match ty {
        "Observation" => {
            let mut o = observation(id, client, "29463-7", "2026-02-01");
            o["valueQuantity"]["value"] = json!(60 + version);
            o["performer"] = json!([{"reference": format!("Practitioner/{performer}")}]);
            o
        }
        "Appointment" => appointment(id, client, "2026-04-01T10:00:00Z"),
        "Condition" => json!({"resourceType": "Condition", "id": id, "subject": subject,
            "code": {"text": format!("aandoening {version}")}}),
        "DocumentReference" => {
            json!({"resourceType": "DocumentReference", "id": id, "status": "current", "subject": subject,
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "UmFwcG9ydGFnZQ=="}}], "description": format!("v{version}")})
        }
        _ => {
            json!({"resourceType": "Communication", "id": id, "status": "completed", "subject": subject,
            "payload": [{"contentString": format!("bericht {version}")}]})
        }
    }
}

/// What the test knows of a resource without asking the serving code.
#[derive(Default, Clone)]
struct Known {
    client: Option<String>,
    /// The performer of each version (Observations), in version order.
    performers: Vec<String>,
}

struct World {
    steps: Vec<(DateTime<Utc>, Step)>,
    known: BTreeMap<(String, String), Known>,
}

fn build(seed: u64) -> World {
    let mut rng = Rng(seed);
    let t0 = sluis::time::parse_instant(T0).unwrap();
    let at = |day: u64, hour: u64| {
        t0 + Duration::days(day as i64) + Duration::hours(hour as i64) + Duration::minutes(1)
    };
    let mut steps: Vec<(DateTime<Utc>, Step)> = Vec::new();
    let mut known: BTreeMap<(String, String), Known> = BTreeMap::new();
    // Day 0: practitioners, clients, their care, and the links.
    let mut first = Vec::new();
    for k in 0..4 {
        first.push(json!({"resourceType": "Practitioner", "id": format!("pr{k}"), "name": [{"family": format!("Arts {k}")}]}));
        known.insert(("Practitioner".into(), format!("pr{k}")), Known::default());
    }
    for c in CLIENTS {
        first.push(patient(c));
        known.insert(
            ("Patient".into(), c.to_string()),
            Known {
                client: Some(c.to_string()),
                ..Default::default()
            },
        );
        if !rng.chance(15) {
            let id = format!("eoc-{c}");
            first.push(episode(&id, c, "active", "2025-01-01", None));
            known.insert(
                ("EpisodeOfCare".into(), id),
                Known {
                    client: Some(c.to_string()),
                    ..Default::default()
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
    for c in CLIENTS {
        let holder = *rng.pick(USERS);
        linked.entry(c).or_default().insert(holder);
        steps.push((
            t0,
            Step::Api(
                "holder",
                holder.to_string(),
                json!({"patient": c, "relationship": "self"}),
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
        if rng.chance(25) {
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
            let end = at(rng.below(30), 0).date_naive().to_string();
            steps.push((
                at(rng.below(30), 6),
                Step::Ingest(vec![episode(
                    &format!("eoc-{c}"),
                    c,
                    "finished",
                    "2025-01-01",
                    Some(&end),
                )]),
            ));
            known.insert(
                ("EpisodeOfCare".into(), format!("eoc-{c}")),
                Known {
                    client: Some(c.to_string()),
                    ..Default::default()
                },
            );
        }
        if rng.chance(15) {
            let mut died = patient(c);
            died["deceasedDateTime"] = json!(sluis::time::instant(at(rng.below(30), 2)));
            steps.push((at(rng.below(30), 7), Step::Ingest(vec![died])));
        }
        if rng.chance(10) {
            steps.push((
                at(rng.below(30), 8),
                Step::Api("end-link", c.to_string(), json!({})),
            ));
        }
        // The dossier: entries arriving over a month, some changed, withdrawn, held or released.
        for (ty, n) in [
            ("Observation", 4),
            ("Appointment", 3),
            ("Condition", 2),
            ("DocumentReference", 2),
            ("Communication", 1),
        ] {
            for k in 0..n {
                let id = format!("{c}-{}-{k}", ty.to_lowercase());
                let mut day = rng.below(30);
                let mut entry = Known {
                    client: Some(c.to_string()),
                    ..Default::default()
                };
                let versions = 1 + u32::from(rng.chance(30)) + u32::from(rng.chance(10));
                for v in 1..=versions {
                    let performer = format!("pr{}", rng.below(4));
                    let mut r = resource(ty, &id, c, v, &performer);
                    if v == versions && rng.chance(8) {
                        r["status"] = json!(if ty == "Appointment" {
                            "entered-in-error"
                        } else if ty == "Condition" {
                            ""
                        } else {
                            "entered-in-error"
                        });
                        if ty == "Condition" {
                            r.as_object_mut().unwrap().remove("status");
                            r["verificationStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]});
                        }
                    }
                    entry.performers.push(performer);
                    steps.push((at(day, rng.below(24)), Step::Ingest(vec![r])));
                    day += 1 + rng.below(12);
                }
                if rng.chance(10) {
                    steps.push((at(day, 1), Step::Delete(ty.to_string(), id.clone())));
                }
                if rng.chance(10) {
                    let until = if rng.chance(50) {
                        Value::Null
                    } else {
                        json!(sluis::time::instant(at(rng.below(40), 0)))
                    };
                    steps.push((
                        at(rng.below(30), 4),
                        Step::Api("hold", format!("{ty}/{id}"), json!({"until": until})),
                    ));
                }
                if rng.chance(10) {
                    steps.push((
                        at(rng.below(35), 9),
                        Step::Api("release", format!("{ty}/{id}"), json!({})),
                    ));
                }
                known.insert((ty.to_string(), id), entry);
            }
        }
    }
    steps.push((at(18, 7), Step::Check));
    steps.push((at(40, 11), Step::Check));
    steps.sort_by_key(|(t, _)| *t);
    World { steps, known }
}

/// The served version of a resource now, from its stored versions (via /admin/explain):
/// `(version, section, withdrawn, release)` of the newest released version, and whether an
/// earlier version had been released before it.
struct Stored {
    newest_released: Option<(i64, Option<String>, bool, DateTime<Utc>)>,
    shown_before: bool,
}

async fn stored(app: &TestApp, ty: &str, id: &str, now: DateTime<Utc>) -> Stored {
    let r = app
        .http
        .get(app.url(&format!("/admin/explain?resource={ty}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    let versions = e["versions"].as_array().cloned().unwrap_or_default();
    let released: Vec<(i64, Option<String>, bool, DateTime<Utc>)> = versions
        .iter()
        .filter_map(|v| {
            let at = sluis::time::parse_instant(v["release_at"].as_str()?)?;
            (at <= now).then(|| {
                (
                    v["version"].as_i64().unwrap(),
                    v["section"].as_str().map(str::to_string),
                    v["state"] == "withdrawn",
                    at,
                )
            })
        })
        .collect();
    let newest = released.iter().max_by_key(|v| v.0).cloned();
    let shown_before = newest
        .as_ref()
        .is_some_and(|n| released.iter().any(|v| v.0 < n.0 && !v.2 && v.3 <= n.3));
    Stored {
        newest_released: newest,
        shown_before,
    }
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

async fn check(app: &TestApp, world: &World, now: DateTime<Utc>, since: DateTime<Utc>, seed: u64) {
    // The stored state of every resource, independent of the serving code.
    let mut state: BTreeMap<(String, String), Stored> = BTreeMap::new();
    for (ty, id) in world.known.keys() {
        state.insert((ty.clone(), id.clone()), stored(app, ty, id, now).await);
    }
    let policy = app.state.policy();
    let mut seen = (0usize, 0usize, 0usize);
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
                for path in ["/fhir/Observation", "/fhir/Patient/c0", "/fhir/_history"] {
                    let (status, outcome) = u.get(path).await;
                    assert_eq!(
                        (status, crate::helpers::reason(&outcome)),
                        (403, reason.code()),
                        "{ctx}: {path}"
                    );
                }
                continue;
            }
            Ok(d) => d,
        };
        // What the decision says each user sees: the served version of each visible resource.
        let visible = |ty: &str, id: &str| -> Option<String> {
            let known = &world.known[&(ty.to_string(), id.to_string())];
            let s = &state[&(ty.to_string(), id.to_string())];
            let (version, section, withdrawn, _) = s.newest_released.as_ref()?;
            if *withdrawn {
                return None;
            }
            if ty == "Practitioner" {
                return None; // decided below, by reference
            }
            d.may_see(ty, known.client.as_deref(), section.as_deref())
                .then(|| version.to_string())
        };
        let mut expected_obs_performers: BTreeSet<String> = BTreeSet::new();
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
                        if *ty == "Observation" {
                            let n: usize = v.parse().unwrap();
                            expected_obs_performers.insert(
                                world.known[&(t.clone(), id.clone())].performers[n - 1].clone(),
                            );
                        }
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
                    let want = world
                        .known
                        .keys()
                        .filter(|(t, id)| {
                            t == "Observation"
                                && world.known[&(t.clone(), id.clone())].client.as_deref()
                                    == Some(c)
                                && visible(t, id).is_some()
                        })
                        .count();
                    assert_eq!(body["total"], json!(want), "{ctx}: Observations of {c}");
                }
            }
        }
        // _include: the practitioners of the visible observations, and only those.
        let (_, bundle) = u
            .get("/fhir/Observation?_include=Observation:performer&_count=500")
            .await;
        let included: BTreeSet<String> = bundle_ids(&bundle, "include")
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(included, expected_obs_performers, "{ctx}: _include");
        for k in 0..4 {
            let (status, _) = u.get(&format!("/fhir/Practitioner/pr{k}")).await;
            assert_eq!(
                status == 200,
                expected_obs_performers.contains(&format!("pr{k}")),
                "{ctx}: read Practitioner/pr{k}"
            );
        }
        // _history since the previous check.
        let mut want_history: BTreeSet<(String, String, String)> = BTreeSet::new();
        for ((ty, id), s) in &state {
            let known = &world.known[&(ty.clone(), id.clone())];
            let Some((version, section, withdrawn, at)) = &s.newest_released else {
                continue;
            };
            if *at <= since
                || known.client.is_none()
                || !d.may_see(ty, known.client.as_deref(), section.as_deref())
            {
                continue;
            }
            if !withdrawn {
                want_history.insert((ty.clone(), id.clone(), format!("PUT {version}")));
            } else if s.shown_before {
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
                    _ => format!(
                        "PUT {}",
                        e["resource"]["meta"]["versionId"].as_str().unwrap()
                    ),
                };
                got_history.insert((ty.to_string(), id.to_string(), what));
            }
            next = bundle["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
        }
        assert_eq!(got_history, want_history, "{ctx}: _history");
        seen.0 += 1;
        seen.1 += expected_obs_performers.len();
        seen.2 += want_history.len();
    }
    eprintln!(
        "seed {seed} at {now}: {} of {} users allowed; {} practitioners included; {} history entries",
        seen.0,
        USERS.len(),
        seen.1,
        seen.2
    );
}

async fn run(app: &TestApp, seed: u64) {
    let world = build(seed);
    let mut since = sluis::time::parse_instant("2000-01-01T00:00:00Z").unwrap();
    let mut holders: BTreeMap<(String, String), User> = BTreeMap::new();
    for (at, step) in &world.steps {
        app.set_clock(&sluis::time::instant(*at)).await;
        match step {
            Step::Ingest(resources) => {
                let (status, out) = app.push(&transaction(resources)).await;
                assert_eq!(status, 200, "seed {seed}: {out}");
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
                    let (status, _) = u
                        .post(
                            "/portal/link",
                            &json!({"code": code["code"], "birth_date": "1970-01-01"}),
                        )
                        .await;
                    if status == 201 {
                        holders.insert((patient.to_string(), who.clone()), u);
                    }
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
                "hold" => {
                    app.admin_post(
                        "/admin/hold",
                        &json!({"resource": who, "until": body["until"]}),
                    )
                    .await;
                }
                "release" => {
                    app.admin_post("/admin/release", &json!({"resource": who}))
                        .await;
                }
                other => panic!("unknown step {other}"),
            },
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
                check(app, &world, *at, since, seed).await;
                since = *at;
            }
        }
    }
    assert!(!holders.is_empty() || seed == u64::MAX);
}

on_both!(
    search_read_include_total_and_history_equal_the_decision,
    |b| async move {
        let worlds: u64 = std::env::var("SLUIS_DIFF_WORLDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6);
        for seed in 0..worlds {
            let app = TestApp::spawn_with(
            b.clone(),
            "[organization]\nterms_version = \"2026-01\"\ncare_end_grace = \"P3D\"\n[embargo]\non_update = \"delay\"\n",
        )
        .await;
            run(&app, 1000 + seed).await;
        }
    }
);
