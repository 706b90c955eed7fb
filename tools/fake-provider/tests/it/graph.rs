//! The fake Graph: the token checks, the byte-for-byte record and the 4 MB cap, over real TLS.

use std::sync::Arc;

use base64::Engine as _;
use fake_provider::graph::{GRAPH_AUDIENCE, MAX_REQUEST_BYTES, replies};
use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_USER, IdpConfig};
use fake_provider::{FakeGraph, FakeIdp};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn client(ca_pem: &str) -> reqwest::Client {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    g: &FakeGraph,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let r = http
        .post(format!(
            "{}/v1.0/users/{DEFAULT_USER}/sendMail",
            g.base_url()
        ))
        .bearer_auth(token)
        .header("Content-Type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn graph_checks_the_audience_records_the_mime_and_caps_requests_at_4_mb() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let g = FakeGraph::start(idp.clone()).await.unwrap();
    let http = client(&g.ca_pem());
    let b64 = |m: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(m)
            .into_bytes()
    };
    let mime = b"Subject: x\r\nTo: a@example.org\r\n\r\nhello\r\n";

    // An Outlook (SMTP) token is refused: wrong audience.
    let smtp = idp.issue_access_token(
        DEFAULT_CLIENT_ID,
        DEFAULT_USER,
        "https://outlook.office.com/SMTP.Send",
    );
    let (status, body) = post(&http, &g, &smtp, b64(mime)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    let token = idp.issue_access_token(
        DEFAULT_CLIENT_ID,
        DEFAULT_USER,
        &format!("{GRAPH_AUDIENCE}/Mail.Send"),
    );
    let (status, _) = post(&http, &g, &token, b64(mime)).await;
    assert_eq!(status, 202);
    assert_eq!(g.messages()[0].mime, mime);

    g.inject(replies::SEND_AS_DENIED, 1);
    let (status, body) = post(&http, &g, &token, b64(mime)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("ErrorSendAsDenied"))
    );

    let big = vec![b'A'; MAX_REQUEST_BYTES + 1];
    let (status, _) = post(&http, &g, &token, big).await;
    assert_eq!(status, 413);
    assert_eq!(g.messages().len(), 1);
    assert_eq!(g.counters().requests, 4);
}
