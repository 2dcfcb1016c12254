//! Several processes on one database (issue 24): a second `sluis serve`, the real binary in a
//! process of its own, beside the test's adapter. They answer the same, and what must hold
//! across processes does: grant changes and blocks act on the next request in the other
//! process, a client assertion is redeemed once in all, and the request limits are shared.
//! (Pull leases and the outbox have their own two-process tests in `pull.rs` and
//! `writeback.rs`.)

use crate::clients::private_key_jwt;
use crate::helpers::*;
use crate::on_both;
use crate::writeback::{Process, until};
use serde_json::json;

/// `user` as seen through the other process.
fn through(process: &Process, user: &User) -> User {
    User {
        base: process.base.clone(),
        ..user.clone()
    }
}

/// How many live processes `base`'s `/metrics` counts.
async fn processes_seen(http: &reqwest::Client, base: &str) -> Option<u32> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("sluis_processes "))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|n| n as u32)
}

on_both!(
    two_processes_answer_the_same_and_share_what_must_be_shared,
    |b| async move {
        let extra = format!(
            "{}\n[limits]\nuser_requests_per_minute = 40\ntoken_requests_per_minute = 100000\nfailed_auth_per_minute = 100000\n",
            private_key_jwt::vendor()
        );
        let one = TestApp::spawn_with(b, &extra).await;
        let two = Process::start(&one.database_url, &extra).await;
        // Both on the test's moment.
        let (status, _) = two
            .admin(reqwest::Method::PUT, "/admin/clock", &json!({"now": T0}))
            .await;
        assert_eq!(status, 200);
        one.push_ok(&transaction(&[
            patient("p1"),
            appointment("a1", "p1", "2026-03-10T10:00:00Z"),
            appointment("a2", "p1", "2026-03-11T10:00:00Z"),
        ]))
        .await;
        let holder = one.holder("h", "p1").await;
        let member = one
            .member(&holder, "m", "p1", &["agenda", "berichten"], false)
            .await;
        // The same answers from both.
        for u in [&holder, &member] {
            let (s1, b1) = u.get("/fhir/Appointment?patient=p1").await;
            let (s2, b2) = through(&two, u).get("/fhir/Appointment?patient=p1").await;
            assert_eq!((s1, s2), (200, 200), "{b2}");
            assert_eq!(entry_ids(&b1), entry_ids(&b2));
            assert_eq!(b1["total"], b2["total"]);
        }
        // A grant changed in one process acts on the next request in the other.
        let (_, grants) = holder.get("/portal/grants?patient=Patient/p1").await;
        let grant = grants["grants"][0]["id"].as_str().unwrap().to_string();
        let (status, body) = holder
            .patch(
                &format!("/portal/grants/{grant}"),
                &json!({"sections": ["berichten"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, found) = through(&two, &member)
            .get("/fhir/Appointment?patient=p1")
            .await;
        assert_eq!((status, found["total"].as_i64()), (200, Some(0)), "{found}");
        // A block made in the other process acts on the next request here.
        let (status, body) = two
            .admin_post("/admin/users/caren/m/block", &json!({"reason": "misbruik"}))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = member.get("/fhir/Appointment?patient=p1").await;
        assert_eq!((status, reason(&body)), (403, "user-blocked"), "{body}");
        // A client assertion is redeemed once, whichever process sees it first.
        let good = private_key_jwt::assertion(
            jsonwebtoken::Algorithm::RS384,
            "portal-rs384",
            "portal-rs384",
            json!({}),
        );
        let (status, body) = private_key_jwt::request(&one, &good).await;
        assert_eq!(status, 200, "{body}");
        let r = reqwest::Client::new()
            .post(format!("{}/auth/token", two.base))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", good.as_str()),
                ("scope", "system/*.rs"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a replay through the other process");
        // The request limit is shared: once both know of each other, each allows half, and a
        // user spread over both gets the limit in all, not twice it.
        let http = reqwest::Client::new();
        let both_count_two = async || {
            processes_seen(&http, &one.base).await == Some(2)
                && processes_seen(&http, &two.base).await == Some(2)
        };
        until(30, "both processes count two", both_count_two).await;
        // A user who has sent nothing yet (each answer counts, a refusal too), 30 requests
        // through each process at once. The buckets refill while they are answered (40 a
        // minute in all), so what a slow machine takes longer over may add to the 40; a limit
        // that was not shared would let all 60 through.
        let reader = one.user("fresh").await;
        let other = through(&two, &reader);
        // Again just before the burst: a process whose heartbeat is late past `ALIVE` (a
        // machine loaded by the other tests) is counted out by the other, which then allows
        // the whole limit, as it should; that is not what this part tests.
        until(30, "both processes still count two", both_count_two).await;
        let started = std::time::Instant::now();
        let mut sent = Vec::new();
        for i in 0..60 {
            let u = if i % 2 == 0 {
                reader.clone()
            } else {
                other.clone()
            };
            sent.push(tokio::spawn(async move {
                u.get("/fhir/Appointment?patient=p1").await.0
            }));
        }
        let mut taken = 0;
        for s in sent {
            if s.await.unwrap() != 429 {
                taken += 1;
            }
        }
        let took = started.elapsed().as_secs_f64();
        let refilled = (40.0 * took / 60.0).ceil() as usize;
        assert!(
            took < 20.0,
            "60 requests took {took:.1} s: too slow to tell a shared limit from refill"
        );
        assert!(
            (39..=41 + refilled).contains(&taken),
            "{taken} of 60 taken with a limit of 40 over two processes in {took:.1} s \
             (the processes count {:?} and {:?} now)",
            processes_seen(&http, &one.base).await,
            processes_seen(&http, &two.base).await
        );
        drop(two);
        // The survivor sees it go at once (a stop takes it off) or once it falls silent.
    }
);
