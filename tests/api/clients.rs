//! Clients as config says they are (issue 22, in part): a client disabled, removed or changed
//! in kind is refused with the tokens it already has, from the first request after a restart.

use crate::helpers::*;
use crate::on_both;

const OTHER: (&str, &str) = ("other-portal", "other-portal-secret");

fn other(extra: &str) -> String {
    format!(
        "[[clients]]\nid = \"{}\"\nkind = \"portal\"\nauth = \"client_secret\"\nsecret = \"{}\"\n{extra}",
        OTHER.0, OTHER.1
    )
}

on_both!(
    a_client_disabled_or_removed_in_config_is_refused_with_its_old_token,
    |b| async move {
        let app = TestApp::spawn_with(b, &other("")).await;
        let token = app.token(OTHER).await;
        let get = async |app: &TestApp, token: &str| {
            app.http
                .get(app.url("/fhir/Patient/p1"))
                .bearer_auth(token)
                .header("x-portal-user", "u1")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        // Known, so past the token (a stranger's Patient is 403 or 404, not 401).
        assert_ne!(get(&app, &token).await, 401);
        let token_request = async |app: &TestApp| {
            app.http
                .post(app.url("/auth/token"))
                .basic_auth(OTHER.0, Some(OTHER.1))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        let disabled = app.restart_with(&other("enabled = false\n"), T0).await;
        assert_eq!(get(&disabled, &token).await, 401);
        assert_eq!(token_request(&disabled).await, 401);
        let removed = app.restart_with("", T0).await;
        assert_eq!(get(&removed, &token).await, 401);
        // Its kind changed to source: a portal token no longer reads /fhir.
        let source = app
            .restart_with(
                &format!(
                    "[[clients]]\nid = \"{}\"\nkind = \"source\"\nauth = \"client_secret\"\nsecret = \"{}\"\nsource = \"ons\"\n",
                    OTHER.0, OTHER.1
                ),
                T0,
            )
            .await;
        assert_eq!(get(&source, &token).await, 401);
        // Enabled again, the same token works.
        let again = app.restart_with(&other("enabled = true\n"), T0).await;
        assert_ne!(get(&again, &token).await, 401);
    }
);
