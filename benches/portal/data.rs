//! The benchmark's dossier: seeded, Synthea-shaped, made here. About 500 clients and 100,000
//! resources; one heavy client with 20,000 Observations; vital signs measured in panels that
//! share their timestamps; a tenth of the Bundles arriving recently (still embargoed); a tenth
//! of the clients with a network member who sees only `metingen` and `agenda`.

use serde_json::{Value, json};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One client's Bundles and the facts the benchmark needs about it.
pub struct Client {
    pub id: String,
    pub bundles: Vec<Vec<u8>>,
    pub recent: Vec<bool>,
    pub observations: usize,
    pub has_member: bool,
}

pub struct Dataset {
    pub clients: Vec<Client>,
    /// Practitioners and organisations, pushed first.
    pub shared: Vec<u8>,
    pub resources: usize,
    pub bytes: usize,
    /// Every resource's own JSON, for the ceilings.
    pub resource_bytes: Vec<Vec<u8>>,
}

const VITALS: &[(&str, &str, &str, f64)] = &[
    ("8867-4", "Heart rate", "/min", 72.0),
    ("9279-1", "Respiratory rate", "/min", 16.0),
    ("8310-5", "Body temperature", "Cel", 37.0),
    ("29463-7", "Body weight", "kg", 70.0),
    ("8302-2", "Body height", "cm", 170.0),
    ("59408-5", "Oxygen saturation", "%", 97.0),
];
const LABS: &[(&str, &str, &str, f64)] = &[
    ("2339-0", "Glucose", "mg/dL", 90.0),
    ("2093-3", "Cholesterol", "mg/dL", 180.0),
    ("718-7", "Hemoglobin", "g/dL", 14.0),
    ("2160-0", "Creatinine", "mg/dL", 1.0),
];

fn day(base: i64) -> String {
    // A date in 2024–2026 from a day number.
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
        + chrono::Duration::days(base.rem_euclid(1000));
    d.to_string()
}

fn observation(
    id: String,
    patient: &str,
    category: &str,
    code: (&str, &str, &str, f64),
    when: &str,
    performer: &str,
    rng: &mut Rng,
) -> Value {
    let value = code.3 * (0.8 + (rng.below(400) as f64) / 1000.0);
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category, "display": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code.0, "display": code.1}], "text": code.1},
        "subject": {"reference": format!("Patient/{patient}")},
        "encounter": {"reference": format!("Encounter/{patient}-enc-{}", rng.below(8))},
        "effectiveDateTime": when, "issued": when,
        "performer": [{"reference": format!("Practitioner/{performer}")}],
        "valueQuantity": {"value": (value * 10.0).round() / 10.0, "unit": code.2, "system": "http://unitsofmeasure.org", "code": code.2}
    })
}

fn entry(r: Value) -> Value {
    let url = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    json!({"fullUrl": format!("urn:uuid:{}", uuid_of(&url)), "resource": r, "request": {"method": "PUT", "url": url}})
}

fn uuid_of(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let h2 = h.rotate_left(17) ^ 0x5555_aaaa_5555_aaaa;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        h2 & 0xfff,
        h2 >> 16 & 0xffff_ffff_ffff
    )
}

fn bundle(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
        .unwrap()
}

/// Generates the dataset. `clients` regular clients plus one heavy client.
pub fn generate(
    seed: u64,
    clients: usize,
    heavy_observations: usize,
    bundle_size: usize,
) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut resource_bytes = Vec::new();
    let mut shared = Vec::new();
    for k in 0..50 {
        shared.push(
            json!({"resourceType": "Practitioner", "id": format!("pr{k}"), "active": true,
            "name": [{"family": format!("Arts{k}"), "given": ["Jan"], "prefix": ["dr."]}],
            "telecom": [{"system": "phone", "value": format!("030-{k:07}"), "use": "work"}]}),
        );
    }
    for k in 0..5 {
        shared.push(json!({"resourceType": "Organization", "id": format!("org{k}"), "active": true, "name": format!("Zorggroep {k}")}));
    }
    for r in &shared {
        resource_bytes.push(serde_json::to_vec(r).unwrap());
    }
    let shared_bundle = bundle(shared.into_iter().map(entry).collect());
    let mut out = Vec::new();
    for c in 0..=clients {
        let id = if c == 0 {
            "heavy".to_string()
        } else {
            format!("c{c:04}")
        };
        let mut resources: Vec<Value> = Vec::new();
        resources.push(json!({"resourceType": "Patient", "id": id, "active": true,
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": format!("9999{:05}", c)}],
            "name": [{"use": "official", "family": format!("Achternaam{c}"), "given": ["Voornaam"]}],
            "telecom": [{"system": "phone", "value": "06-12345678", "use": "mobile"}],
            "gender": if c % 2 == 0 { "female" } else { "male" }, "birthDate": day(-(rng.below(20000) as i64)),
            "address": [{"line": ["Dorpsstraat 1"], "city": "Utrecht", "postalCode": "3511AA", "country": "NL"}]}));
        resources.push(json!({"resourceType": "EpisodeOfCare", "id": format!("{id}-eoc"), "status": "active",
            "patient": {"reference": format!("Patient/{id}")}, "managingOrganization": {"reference": format!("Organization/org{}", c % 5)},
            "period": {"start": "2024-01-01"}}));
        for e in 0..8 {
            resources.push(json!({"resourceType": "Encounter", "id": format!("{id}-enc-{e}"), "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}]}],
                "subject": {"reference": format!("Patient/{id}")}, "period": {"start": format!("{}T09:00:00+01:00", day(e * 30)), "end": format!("{}T09:30:00+01:00", day(e * 30))}}));
        }
        // Observations in panels sharing their moment.
        let wanted = if c == 0 {
            heavy_observations
        } else {
            100 + rng.below(40) as usize
        };
        let mut n = 0;
        let mut panel = 0i64;
        while n < wanted {
            let when = format!(
                "{}T{:02}:{:02}:00+01:00",
                day(panel / 3),
                8 + panel % 3 * 4,
                rng.below(4) * 15
            );
            let performer = format!("pr{}", rng.below(50));
            let set: &[(&str, &str, &str, f64)] = if panel % 4 == 3 { LABS } else { VITALS };
            let category = if panel % 4 == 3 {
                "laboratory"
            } else {
                "vital-signs"
            };
            for code in set {
                if n == wanted {
                    break;
                }
                resources.push(observation(
                    format!("{id}-obs-{n}"),
                    &id,
                    category,
                    *code,
                    &when,
                    &performer,
                    &mut rng,
                ));
                n += 1;
            }
            panel += 1;
        }
        let observations = n;
        for k in 0..6 {
            resources.push(json!({"resourceType": "Condition", "id": format!("{id}-cond-{k}"),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": format!("{}", 44054006 + k)}], "text": "Aandoening"},
                "subject": {"reference": format!("Patient/{id}")}, "onsetDateTime": format!("{}T10:00:00+01:00", day(k as i64 * 40))}));
            resources.push(json!({"resourceType": "MedicationRequest", "id": format!("{id}-med-{k}"), "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": format!("{}", 310965 + k)}], "text": "Medicatie"},
                "subject": {"reference": format!("Patient/{id}")}, "authoredOn": format!("{}T10:00:00+01:00", day(k as i64 * 50)),
                "requester": {"reference": format!("Practitioner/pr{}", rng.below(50))},
                "dosageInstruction": [{"text": "1x per dag 1 tablet"}]}));
        }
        for k in 0..4 {
            resources.push(json!({"resourceType": "Procedure", "id": format!("{id}-proc-{k}"), "status": "completed",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430193006"}], "text": "Behandeling"},
                "subject": {"reference": format!("Patient/{id}")}, "performedDateTime": format!("{}T11:00:00+01:00", day(k as i64 * 70))}));
            resources.push(json!({"resourceType": "DocumentReference", "id": format!("{id}-rap-{k}"), "status": "current",
                "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
                "subject": {"reference": format!("Patient/{id}")}, "date": format!("{}T12:00:00+01:00", day(k as i64 * 20)),
                "author": [{"reference": format!("Practitioner/pr{}", rng.below(50))}],
                "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                    "data": "TWV2cm91dyBoZWVmdCBnb2VkIGdlc2xhcGVuIGVuIGhlZWZ0IHNhbWVuIG1ldCBkZSBhbmRlcmUgYmV3b25lcnMgb250Ynl0ZW4u"}}]}));
        }
        for k in 0..6 {
            resources.push(json!({"resourceType": "Appointment", "id": format!("{id}-afs-{k}"), "status": "booked",
                "start": format!("{}T10:00:00+01:00", day(900 + k as i64 * 7)), "end": format!("{}T10:30:00+01:00", day(900 + k as i64 * 7)),
                "participant": [{"actor": {"reference": format!("Patient/{id}")}, "status": "accepted"},
                                {"actor": {"reference": format!("Practitioner/pr{}", rng.below(50))}, "status": "accepted"}]}));
        }
        for k in 0..2 {
            resources.push(json!({"resourceType": "Communication", "id": format!("{id}-msg-{k}"), "status": "completed",
                "subject": {"reference": format!("Patient/{id}")}, "sent": format!("{}T15:00:00+01:00", day(k as i64 * 100)),
                "payload": [{"contentString": "Goedemiddag, de afspraak van volgende week gaat door."}]}));
        }
        for r in &resources {
            resource_bytes.push(serde_json::to_vec(r).unwrap());
        }
        // The Patient and its episode come first, in the first (never recent) Bundle.
        let chunks: Vec<Vec<Value>> = resources.chunks(bundle_size).map(|c| c.to_vec()).collect();
        let recent: Vec<bool> = (0..chunks.len()).map(|_| rng.below(10) == 0).collect();
        let bundles = chunks
            .into_iter()
            .map(|c| bundle(c.into_iter().map(entry).collect()))
            .collect();
        out.push(Client {
            id,
            bundles,
            recent,
            observations,
            has_member: c % 10 == 5,
        });
    }
    let resources = resource_bytes.len();
    let bytes = resource_bytes.iter().map(Vec::len).sum();
    Dataset {
        clients: out,
        shared: shared_bundle,
        resources,
        bytes,
        resource_bytes,
    }
}
