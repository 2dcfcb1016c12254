//! Consent and the account lifecycle (R1–R10, contract §5 and §6): holders, network members
//! and their grants, and everything that ends access by itself.

use crate::helpers::*;
use crate::on_both;
use serde_json::{Value, json};

const IMMEDIATE: &str = "[embargo]\ndefault = \"immediate\"\n";

async fn dossier(app: &TestApp) {
    let mut p1 = patient("p1");
    p1["address"] = json!([{"city": "Utrecht"}]);
    p1["telecom"] = json!([{"system": "phone", "value": "030-1234567"}]);
    let dr = json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Visser"}],
        "telecom": [{"system": "phone", "value": "030-7654321", "use": "work"}, {"system": "phone", "value": "06-12345678", "use": "mobile"}]});
    let mut o1 = observation("o1", "p1", "29463-7", "2026-02-01");
    o1["performer"] = json!([{"reference": "Practitioner/dr"}]);
    app.push_ok(&transaction(&[
        p1,
        patient("p2"),
        dr,
        o1,
        appointment("a1", "p1", "2026-03-10T10:00:00Z"),
        observation("x1", "p2", "29463-7", "2026-02-01"),
    ]))
    .await;
}

on_both!(
    r1_r2_one_holder_and_a_legal_representative_takes_over,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let (_, linked, client) = app.link_as("client", "p1", "self").await;
        assert_eq!(linked["role"], "holder");
        let (_, linked, curator) = app.link_as("curator", "p1", "curator").await;
        assert_eq!(linked["role"], "holder");
        // The client keeps reading, without holder powers.
        assert_eq!(client.get("/fhir/Observation/o1").await.0, 200);
        let (_, me) = client.get("/portal/me").await;
        assert_eq!(me["clients"][0]["role"], "reader");
        // A reader does not post either (found by attacking: the holder link's right stayed).
        assert_eq!(me["clients"][0]["can_post"], false);
        let (status, outcome) = client
            .post(
                "/fhir/Communication",
                &json!({"resourceType": "Communication", "subject": {"reference": "Patient/p1"},
                        "payload": [{"contentString": "mag ik nog schrijven?"}]}),
            )
            .await;
        assert_eq!((status, reason(&outcome)), (403, "no-post-right"));
        let (_, me) = curator.get("/portal/me").await;
        assert_eq!(me["clients"][0]["can_post"], true);
        let (status, outcome) = client
        .post("/portal/invitations", &json!({"patient": "p1", "sections": ["agenda"], "name": "X", "relationship": "SONC"}))
        .await;
        assert_eq!((status, reason(&outcome)), (403, "not-holder"));
        // A designated holder cannot take over from a legal representative.
        let (status, outcome, _) = app.link_as("neighbour", "p1", "first-contact").await;
        assert_eq!((status, reason(&outcome)), (409, "conflict"));
        // A mentor replaces the curator: the curator's link ends.
        let (_, linked, _) = app.link_as("mentor", "p1", "mentor").await;
        assert_eq!(linked["role"], "holder");
        let (status, outcome) = curator.get("/fhir/Observation/o1").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
    }
);

on_both!(
    r1_the_client_designates_and_takes_back_the_first_contact,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let (_, _, client) = app.link_as("client", "p1", "self").await;
        let (_, linked, contact) = app.link_as("contact", "p1", "first-contact").await;
        assert_eq!(linked["role"], "holder");
        let (_, me) = client.get("/portal/me").await;
        assert_eq!(
            me["clients"][0]["role"], "reader",
            "the client keeps reading"
        );
        // The client takes it back with a new code: the first contact's link ends.
        let (_, linked, _) = app.link_as("client-2", "p1", "self").await;
        assert_eq!(linked["role"], "holder");
        assert_eq!(
            reason(&contact.get("/fhir/Patient/p1").await.1),
            "not-linked"
        );
        assert_eq!(
            client.get("/fhir/Patient/p1").await.0,
            403,
            "the old reader account ended too"
        );
    }
);

on_both!(
    r3_the_holder_invites_members_who_see_only_granted_sections,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let daughter = app
            .member(&holder, "daughter", "p1", &["agenda"], false)
            .await;
        assert_eq!(daughter.get("/fhir/Appointment/a1").await.0, 200);
        let (status, hidden) = daughter.get("/fhir/Observation/o1").await;
        let (_, absent) = daughter.get("/fhir/Observation/does-not-exist").await;
        assert_eq!(status, 404);
        assert_eq!(hidden, absent, "hidden and absent answer alike");
        let (_, bundle) = daughter
            .get("/fhir/Observation?patient=p1&_summary=count")
            .await;
        assert_eq!(bundle["total"], 0, "counts do not reveal hidden entries");
        let (_, bundle) = daughter.get("/fhir/_history").await;
        assert!(!bundle.to_string().contains("Observation/"), "{bundle}");
        // The Patient is readable, redacted for members (no BSN, address or phone).
        let (status, p) = daughter.get("/fhir/Patient/p1").await;
        assert_eq!(status, 200);
        assert!(
            p.get("identifier").is_none()
                && p.get("address").is_none()
                && p.get("telecom").is_none(),
            "{p}"
        );
        assert_eq!(p["meta"]["security"][0]["code"], "REDACTED");
        let (_, full) = holder.get("/fhir/Patient/p1").await;
        assert_eq!(full["identifier"][0]["value"], "999911120");
        assert_eq!(full["address"][0]["city"], "Utrecht");
        let (status, outcome) = daughter
            .get("/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|999911120")
            .await;
        assert_eq!(
            (status, reason(&outcome)),
            (400, "unknown-parameter"),
            "no search by a hidden BSN"
        );
        // Members do not invite, and cannot become holder.
        let (status, outcome) = daughter
        .post("/portal/invitations", &json!({"patient": "p1", "sections": ["agenda"], "name": "X", "relationship": "SONC"}))
        .await;
        assert_eq!((status, reason(&outcome)), (403, "not-holder"));
        let (status, code) = app
            .admin_post(
                "/admin/activation-codes",
                &json!({"patient": "p1", "relationship": "self"}),
            )
            .await;
        assert_eq!(status, 201);
        let (status, outcome) = daughter
            .post(
                "/portal/link",
                &json!({"code": code["code"], "birth_date": "1970-01-01"}),
            )
            .await;
        assert_eq!((status, reason(&outcome)), (409, "conflict"));
        // Bad invitations.
        for bad in [
            json!({"patient": "p1", "sections": ["nope"], "name": "X", "relationship": "SONC"}),
            json!({"patient": "p1", "sections": ["agenda"], "name": "", "relationship": "SONC"}),
            json!({"patient": "p1", "sections": ["agenda"], "name": "X", "relationship": "buurman"}),
            json!({"patient": "p1", "sections": "agenda", "name": "X", "relationship": "SONC"}),
        ] {
            let (status, _) = holder.post("/portal/invitations", &bad).await;
            assert_eq!(status, 400, "{bad}");
        }
        let (status, outcome) = holder
        .post("/portal/invitations", &json!({"patient": "p2", "sections": ["agenda"], "name": "X", "relationship": "SONC"}))
        .await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
    }
);

on_both!(
    r3_r9_grant_changes_and_revocations_act_on_the_next_request,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let son = app.member(&holder, "son", "p1", &["agenda"], false).await;
        let (_, before) = son.get("/portal/me").await;
        let (_, grants) = holder.get("/portal/grants?patient=p1").await;
        let grant = grants["grants"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(grants["grants"][0]["sections"], json!(["agenda"]));
        assert_eq!(son.get("/fhir/Observation/o1").await.0, 404);
        app.set_clock("2026-03-02T09:04:00Z").await;
        let (status, changed) = holder
            .patch(
                &format!("/portal/grants/{grant}"),
                &json!({"sections": ["agenda", "metingen"], "can_post": true}),
            )
            .await;
        assert_eq!(status, 200, "{changed}");
        let son = app.user("son").await;
        let holder = app.user("holder").await;
        assert_eq!(
            son.get("/fhir/Observation/o1").await.0,
            200,
            "the very next request"
        );
        let (_, after) = son.get("/portal/me").await;
        assert_ne!(before["grants_changed_at"], after["grants_changed_at"]);
        assert_eq!(after["clients"][0]["can_post"], true);
        // Another holder's grant, or a made-up one, is not there.
        assert_eq!(
            son.patch(&format!("/portal/grants/{grant}"), &json!({"sections": []}))
                .await
                .0,
            404
        );
        assert_eq!(
            holder
                .patch("/portal/grants/999", &json!({"sections": []}))
                .await
                .0,
            404
        );
        assert_eq!(
            holder
                .patch(
                    &format!("/portal/grants/{grant}"),
                    &json!({"sections": ["nope"]})
                )
                .await
                .0,
            400
        );
        assert_eq!(holder.delete(&format!("/portal/grants/{grant}")).await, 204);
        let (status, outcome) = son.get("/fhir/Appointment/a1").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
    }
);

on_both!(
    the_holders_link_ending_leaves_grants_but_no_one_changes_them,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let son = app.member(&holder, "son", "p1", &["agenda"], false).await;
        let (_, links) = app
            .http
            .get(app.url("/admin/links?patient=p1"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .map(|v| (0, v))
            .unwrap();
        let holder_link = links["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["role"] == "holder")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .http
            .delete(app.url(&format!("/admin/links/{holder_link}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            reason(&holder.get("/fhir/Patient/p1").await.1),
            "not-linked",
            "R9: at once"
        );
        assert_eq!(son.get("/fhir/Appointment/a1").await.0, 200, "grants stay");
        let (status, _) = son.get("/portal/grants?patient=p1").await;
        assert_eq!(status, 403, "a member never gets holder powers");
        let r = app
            .http
            .delete(app.url(&format!("/admin/links/{holder_link}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "already ended");
    }
);

on_both!(r5_terms_age_and_their_changes, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    dossier(&app).await;
    let _holder = app.holder("holder", "p1").await;
    let newer = "[embargo]\ndefault = \"immediate\"\n[organization]\nterms_version = \"2026-07\"\nassume_active_care = true\n";
    let app2 = app.restart_with(newer, T0).await;
    let u = app2.user("holder").await;
    let (status, outcome) = u.get("/fhir/Patient/p1").await;
    assert_eq!((status, reason(&outcome)), (403, "terms-not-accepted"));
    let (status, _) = u
        .post("/portal/terms", &json!({"version": "2026-01"}))
        .await;
    assert_eq!(status, 409, "an old version cannot be accepted");
    u.post("/portal/terms", &json!({"version": "2026-07"}))
        .await;
    assert_eq!(u.get("/fhir/Patient/p1").await.0, 200);
    let stricter = "[organization]\nterms_version = \"2026-07\"\nassume_active_care = true\nmin_user_age = 80\n";
    let app3 = app.restart_with(stricter, T0).await;
    let (status, outcome) = app3.user("holder").await.get("/fhir/Patient/p1").await;
    assert_eq!((status, reason(&outcome)), (403, "under-age"));
});

on_both!(
    r6_care_ends_access_after_the_grace_and_death_ends_it,
    |b| async move {
        let app = TestApp::spawn_with(b, "[embargo]\ndefault = \"immediate\"\n[organization]\nterms_version = \"2026-01\"\ncare_end_grace = \"P7D\"\n").await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let (status, outcome) = holder.get("/fhir/Observation?patient=p1").await;
        assert_eq!(
            (status, reason(&outcome)),
            (403, "care-ended"),
            "no EpisodeOfCare: not in care"
        );
        assert_eq!(
            holder.get("/fhir/Observation/o1").await.0,
            404,
            "a resource of such a client: 404"
        );
        app.push_ok(&transaction(&[episode(
            "eoc1",
            "p1",
            "active",
            "2025-01-01",
            None,
        )]))
        .await;
        assert_eq!(holder.get("/fhir/Observation/o1").await.0, 200);
        app.push_ok(&transaction(&[episode(
            "eoc1",
            "p1",
            "finished",
            "2025-01-01",
            Some("2026-03-01"),
        )]))
        .await;
        assert_eq!(
            holder.get("/fhir/Observation/o1").await.0,
            200,
            "within the grace"
        );
        app.set_clock("2026-03-09T00:00:00Z").await;
        let holder = app.user("holder").await;
        let (_, me) = holder.get("/portal/me").await;
        assert_eq!(me["clients"][0]["access"], "care-ended", "{me}");
        assert_eq!(holder.get("/fhir/Observation/o1").await.0, 404);
        // Back in care, then deceased.
        app.push_ok(&transaction(&[episode(
            "eoc2",
            "p1",
            "active",
            "2026-03-08",
            None,
        )]))
        .await;
        assert_eq!(holder.get("/fhir/Observation/o1").await.0, 200);
        let mut died = patient("p1");
        died["deceasedDateTime"] = json!("2026-03-08T22:00:00+01:00");
        app.put_resource(&died).await;
        let (status, outcome) = holder.get("/fhir/Patient?_id=p1&patient=p1").await;
        assert_eq!(status, 400, "Patient has no patient parameter: {outcome}");
        let (status, outcome) = holder.get("/fhir/Observation?patient=p1").await;
        assert_eq!((status, reason(&outcome)), (403, "deceased"));
    }
);

on_both!(r7_r8_blocks_of_users_and_clients, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    dossier(&app).await;
    let holder = app.holder("holder", "p1").await;
    let (status, _) = app
        .admin_post(
            "/admin/users/caren/holder/block",
            &json!({"reason": "twijfel over identiteit", "until": "2026-03-03T09:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, outcome) = holder.get("/fhir/Patient/p1").await;
    assert_eq!((status, reason(&outcome)), (403, "user-blocked"));
    app.set_clock("2026-03-03T09:00:00Z").await;
    let holder = app.user("holder").await;
    assert_eq!(
        holder.get("/fhir/Patient/p1").await.0,
        200,
        "a temporary block ends by itself"
    );
    app.admin_post(
        "/admin/users/caren/holder/block",
        &json!({"reason": "misbruik"}),
    )
    .await;
    assert_eq!(holder.get("/fhir/Patient/p1").await.0, 403);
    app.admin_post("/admin/users/caren/holder/unblock", &json!({}))
        .await;
    assert_eq!(holder.get("/fhir/Patient/p1").await.0, 200);
    let (status, _) = app
        .admin_post("/admin/users/caren/nobody/block", &json!({"reason": "x"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin_post("/admin/users/caren/holder/block", &json!({"reason": ""}))
        .await;
    assert_eq!(status, 400, "a block needs a reason");
    let (status, _) = app
        .admin_post(
            "/admin/patients/p1/block",
            &json!({"reason": "op verzoek van de cliënt"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, outcome) = holder.get("/fhir/Observation?patient=p1").await;
    assert_eq!((status, reason(&outcome)), (403, "patient-blocked"));
    assert_eq!(holder.get("/fhir/Observation/o1").await.0, 404);
    app.admin_post("/admin/patients/p1/unblock", &json!({}))
        .await;
    assert_eq!(holder.get("/fhir/Observation/o1").await.0, 200);
    let (status, _) = app
        .admin_post("/admin/patients/nobody/block", &json!({}))
        .await;
    assert_eq!(status, 404);
});

on_both!(
    r10_nothing_is_shown_before_access_is_granted,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let stranger = app.user("stranger").await;
        let (status, outcome) = stranger.get("/fhir/Observation?patient=p1").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
        let (status, outcome) = stranger.get("/fhir/_history").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
        let (status, outcome) = stranger.get("/fhir/Consent?patient=p1").await;
        assert_eq!((status, reason(&outcome)), (403, "not-linked"));
    }
);

on_both!(
    grants_are_served_as_consent_and_related_person,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let daughter = app
            .member(&holder, "daughter", "p1", &["agenda", "berichten"], true)
            .await;
        let _son = app.member(&holder, "son", "p1", &["agenda"], false).await;
        let (status, bundle) = holder.get("/fhir/Consent?patient=Patient/p1").await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(bundle["total"], 2);
        for e in bundle["entry"].as_array().unwrap() {
            let issues = sluis::fhir::validate::check_resource(&e["resource"]);
            assert!(issues.is_empty(), "{issues:?} in {}", e["resource"]);
        }
        let consent = &bundle["entry"][0]["resource"];
        assert_eq!(consent["resourceType"], "Consent");
        assert_eq!(consent["patient"]["reference"], "Patient/p1");
        let person = consent["provision"]["actor"][0]["reference"]["reference"]
            .as_str()
            .unwrap();
        assert!(
            bundle["entry"].as_array().unwrap().iter().any(|e| format!(
                "RelatedPerson/{}",
                e["resource"]["id"].as_str().unwrap()
            ) == person)
        );
        let (_, own) = daughter.get("/fhir/Consent?patient=p1").await;
        assert_eq!(own["total"], 1, "a member sees their own grant");
        let id = own["entry"][0]["resource"]["id"].as_str().unwrap();
        assert_eq!(daughter.get(&format!("/fhir/Consent/{id}")).await.0, 200);
        assert_eq!(daughter.get("/fhir/Consent/grant-999").await.0, 404);
        assert_eq!(holder.get("/fhir/Consent?foo=1").await.0, 400);
    }
);

on_both!(
    redaction_defaults_hide_private_contact_details_from_members,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        let member = app
            .member(&holder, "member", "p1", &["metingen"], false)
            .await;
        let (_, bundle) = member
            .get("/fhir/Observation?patient=p1&_include=Observation:performer")
            .await;
        let dr = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["resourceType"] == "Practitioner")
            .unwrap();
        assert_eq!(
            dr["resource"]["telecom"],
            json!([{"system": "phone", "value": "030-7654321", "use": "work"}])
        );
        let (_, dr) = holder.get("/fhir/Practitioner/dr").await;
        assert_eq!(
            dr["telecom"].as_array().unwrap().len(),
            2,
            "the holder sees both"
        );
    }
);

on_both!(explain_names_the_consent_reason, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    dossier(&app).await;
    let holder = app.holder("holder", "p1").await;
    app.member(&holder, "member", "p1", &["agenda"], false)
        .await;
    let explain = |user: &'static str, resource: &'static str| {
        let app = &app;
        async move {
            app.http
                .get(app.url(&format!(
                    "/admin/explain?resource={resource}&client=caren&user={user}"
                )))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let e = explain("member", "Observation/o1").await;
    assert_eq!(e["access"]["reason"], "section-denied", "{e}");
    let e = explain("holder", "Observation/o1").await;
    assert_eq!(e["access"]["visible_now"], true, "{e}");
    let e = explain("nobody", "Observation/o1").await;
    assert_eq!(e["access"]["reason"], "not-linked", "{e}");
    app.admin_post("/admin/patients/p1/block", &json!({})).await;
    let e = explain("holder", "Observation/o1").await;
    assert_eq!(e["access"]["reason"], "patient-blocked", "{e}");
});

on_both!(r4_representatives_and_their_ranks, |b| async move {
    let app = TestApp::spawn_with(b, IMMEDIATE).await;
    dossier(&app).await;
    // Written (notarial) authorisation holds on the client's behalf...
    let (_, linked, notarial) = app.link_as("notary", "p1", "notarial").await;
    assert_eq!(linked["role"], "holder");
    // ...until the first contact person is designated instead: one holder at a time.
    let (_, linked, contact) = app.link_as("contact", "p1", "first-contact").await;
    assert_eq!(linked["role"], "holder");
    assert_eq!(
        reason(&notarial.get("/fhir/Patient/p1").await.1),
        "not-linked"
    );
    // A court-appointed curator ends the first contact's link (§6).
    let (_, linked, curator) = app.link_as("curator", "p1", "curator").await;
    assert_eq!(linked["role"], "holder");
    assert_eq!(
        reason(&contact.get("/fhir/Patient/p1").await.1),
        "not-linked"
    );
    assert_eq!(curator.get("/fhir/Patient/p1").await.0, 200);
    // The client links later: reads, without holder powers.
    let (_, linked, _) = app.link_as("client", "p1", "self").await;
    assert_eq!(linked["role"], "reader");
    let (status, _) = app
        .admin_post(
            "/admin/activation-codes",
            &json!({"patient": "p1", "relationship": "buurman"}),
        )
        .await;
    assert_eq!(status, 400, "only the relationships of contract §6");
});

on_both!(
    a_change_made_by_another_process_acts_on_the_next_request,
    |b| async move {
        let app = TestApp::spawn_with(b, IMMEDIATE).await;
        dossier(&app).await;
        let holder = app.holder("holder", "p1").await;
        assert_eq!(holder.get("/fhir/Patient/p1").await.0, 200);
        assert_eq!(
            holder.get("/fhir/Patient/p1").await.0,
            200,
            "read twice, so its facts are known"
        );
        // A second process on the same database (as `sluis import` or a second `serve`).
        let other = app.restart_with(IMMEDIATE, T0).await;
        let (status, _) = other
            .admin_post(
                "/admin/users/caren/holder/block",
                &json!({"reason": "twijfel"}),
            )
            .await;
        assert_eq!(status, 200);
        let (status, outcome) = holder.get("/fhir/Patient/p1").await;
        assert_eq!((status, reason(&outcome)), (403, "user-blocked"));
        other
            .push_ok(&transaction(&[episode(
                "eoc9",
                "p2",
                "active",
                "2025-01-01",
                None,
            )]))
            .await;
        other
            .admin_post("/admin/users/caren/holder/unblock", &json!({}))
            .await;
        assert_eq!(holder.get("/fhir/Patient/p1").await.0, 200);
    }
);
