//! The fixture EHR behaves as SMART App Launch, RFC 6749 and RFC 7636 say: PKCE S256 is
//! required and checked, codes are single use, and the redirect URI must match.

use radsight_demo_ehr::{SimClient, s256};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::PATIENT;
use crate::smart_ehr::{CLIENT_ID, SCOPES, SmartEhr, form};

const REDIRECT: &str = "http://127.0.0.1:9/smart/";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more-entropy";

struct Flow {
    ehr: SmartEhr,
    http: reqwest::Client,
}

impl Flow {
    async fn start() -> Flow {
        let ehr = SmartEhr::start().await;
        ehr.sim.register_client(SimClient {
            client_id: CLIENT_ID.into(),
            redirect_uris: vec![REDIRECT.into()],
            launch_url: "http://127.0.0.1:9/smart/launch".into(),
        });
        Flow { ehr, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
    }

    /// Authorises with `params` overriding the defaults; returns the redirect's query pairs.
    async fn authorize(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let launch = self.ehr.sim.create_launch(PATIENT, Some(r#"{"studyInstanceUid":"1.2.3"}"#), false);
        let challenge = s256(VERIFIER);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("launch", &launch),
            ("scope", SCOPES),
            ("state", "a-state-value"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        let iss = self.ehr.sim.iss();
        params.push(("aud", &iss));
        for (k, v) in overrides {
            params.retain(|(n, _)| n != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        let resp = self.http.get(format!("{}/authorize?{}", self.ehr.address, form(&params))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
        let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT));
        location.query_pairs().into_owned().collect()
    }

    async fn code(&self) -> String {
        let q = self.authorize(&[]).await;
        assert!(q.contains(&("state".into(), "a-state-value".into())), "{q:?}");
        q.into_iter().find(|(k, _)| k == "code").expect("a code").1
    }

    async fn token(&self, code: &str, verifier: &str, redirect: &str) -> (StatusCode, Value) {
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", CLIENT_ID),
            ("code_verifier", verifier),
        ]);
        let resp = self
            .http
            .post(format!("{}/token", self.ehr.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status(), serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap())
    }
}

fn error_of(q: &[(String, String)]) -> Option<&str> {
    q.iter().find(|(k, _)| k == "error").map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_fixture_ehr_completes_a_launch_with_pkce_and_answers_introspection() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    let (status, token) = flow.token(&code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["patient"], PATIENT);
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["fhirContext"][0]["identifier"]["value"], "urn:oid:1.2.3");
    assert!(token["id_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    // RFC 7662 introspection, for the registered resource server only.
    let access = token["access_token"].as_str().unwrap();
    let introspect = |user: &str, pass: &str| {
        flow.http
            .post(flow.ehr.sim.introspection_endpoint())
            .basic_auth(user, Some(pass))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", access)]))
            .send()
    };
    assert_eq!(introspect("radsight-resource-server", "wrong").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let answer = flow.ehr.introspect(access).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["patient"], PATIENT);
    assert_eq!(answer["scope"], SCOPES);
    assert_eq!(answer["client_id"], CLIENT_ID);
    assert!(answer["fhirUser"].as_str().is_some_and(|u| u.ends_with("Practitioner/demo-radiologist")));
    assert!(answer["exp"].as_i64().is_some());
    assert_eq!(flow.ehr.introspect("never-issued").await, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn a_wrong_code_verifier_is_rejected() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    let (status, body) = flow.token(&code, "a-different-verifier-that-is-long-enough-to-be-valid-1234", REDIRECT).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn a_reused_code_is_rejected_and_its_token_revoked() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    let (status, first) = flow.token(&code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = flow.token(&code, VERIFIER, REDIRECT).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    // The token from the first exchange no longer introspects as active.
    assert_eq!(flow.ehr.introspect(first["access_token"].as_str().unwrap()).await["active"], false);
}

#[tokio::test]
async fn a_mismatched_redirect_uri_is_rejected() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    let (status, body) = flow.token(&code, VERIFIER, "http://127.0.0.1:9/elsewhere/").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    // And an unregistered redirect_uri is never redirected to.
    let resp = flow
        .http
        .get(format!("{}/authorize?{}", flow.ehr.address, form(&[("client_id", CLIENT_ID), ("redirect_uri", "https://evil.example/cb")])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn authorisation_without_s256_or_with_a_wrong_aud_is_refused() {
    let flow = Flow::start().await;
    assert_eq!(error_of(&flow.authorize(&[("code_challenge_method", "plain")]).await), Some("invalid_request"));
    assert_eq!(error_of(&flow.authorize(&[("code_challenge", ""), ("code_challenge_method", "")]).await), Some("invalid_request"));
    assert_eq!(error_of(&flow.authorize(&[("aud", "https://other.example/fhir")]).await), Some("invalid_request"));
    let denied = flow.ehr.sim.create_launch(PATIENT, None, true);
    assert_eq!(error_of(&flow.authorize(&[("launch", &denied)]).await), Some("access_denied"));
}
