//! The sync client over TLS (`https://`, `wss://`; feature `net-tls`): the responder of
//! tests/sync_client.rs behind a TLS listener that terminates TLS and passes the bytes on, as a
//! reverse proxy in front of a real server does. The certificates are made at test time with
//! rcgen: a CA, and a leaf for `localhost` and 127.0.0.1 signed by it. The device trusts the CA
//! only when it is given as `SyncConfig::extra_root_pem`.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::*;

/// A certificate authority made for one test, and a server certificate it signed.
struct TestCa {
    /// The CA certificate, PEM: what a device is given as `extra_root_pem`.
    pem: String,
    acceptor: TlsAcceptor,
}

impl TestCa {
    /// A CA named `name` and, signed by it, a leaf valid for `localhost` and 127.0.0.1.
    fn new(name: &str) -> Self {
        Self::with_leaf_for(name, &["localhost", "127.0.0.1"])
    }

    /// A CA named `name` and, signed by it, a leaf valid for `leaf_names` only.
    fn with_leaf_for(name: &str, leaf_names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(leaf_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, leaf_names[0]);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        #[allow(deprecated)] // ring, as in the client (ADR 0010)
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        TestCa {
            pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// What the TLS listener saw.
#[derive(Default)]
struct Front {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    refused: AtomicUsize,
    /// The server name each client asked for (SNI; none for an IP address).
    sni: Mutex<Vec<Option<String>>>,
}

struct TlsServer {
    port: u16,
    /// The responder's own plain address (behind the TLS listener).
    plain_url: String,
    state: Shared,
    front: Arc<Front>,
}

/// The responder of `start_server` behind a TLS listener on 127.0.0.1: connection n is served
/// with the certificate of `cas[n]` (the last one for all the rest), decrypted and passed on.
async fn start_tls_server(cas: &[&TestCa]) -> TlsServer {
    let (plain_url, state) = start_server().await;
    let backend = plain_url.trim_start_matches("http://").to_string();
    let acceptors: Vec<TlsAcceptor> = cas.iter().map(|c| c.acceptor.clone()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let front = Arc::new(Front::default());
    let f = front.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let n = f.accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptors[n.min(acceptors.len() - 1)].clone();
            let (f, backend) = (f.clone(), backend.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(_) => {
                        f.refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                f.handshakes.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                f.sni.lock().unwrap().push(sni);
                let Ok(mut plain) = TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsServer {
        port,
        plain_url,
        state,
        front,
    }
}

/// Waits (up to 5 s) for the listener's side of refused handshakes to be counted: the client
/// gives up as soon as it has sent its alert.
async fn settle(counter: &AtomicUsize, expected: usize) {
    for _ in 0..500 {
        if counter.load(Ordering::SeqCst) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter.load(Ordering::SeqCst), expected);
}

fn tls_config(url: &str, extra_root_pem: Option<&str>) -> SyncConfig {
    SyncConfig {
        extra_root_pem: extra_root_pem.map(str::to_string),
        ..config(url)
    }
}

fn network_message(e: SyncError) -> String {
    match e {
        SyncError::Network(m) => m,
        other => panic!("expected a network error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_round_over_https_and_wss_with_the_test_ca() {
    let ca = TestCa::new("FitEdge test CA");
    let server = start_tls_server(&[&ca]).await;
    let port = server.port;
    let clock = now();
    let a = device();
    let workout = record_workout(&a, T0, 3);
    let doc_id = a.workout_document_id(&workout).unwrap();
    a.set_workout_text(&workout, Some("Lake loop"), Some("Windy."), clock.now())
        .unwrap();

    // A by name over https:// (the WebSocket becomes wss://).
    let https = tls_config(&format!("https://localhost:{port}"), Some(&ca.pem));
    let ra = sync_once(&a, &https, &clock).await.unwrap();
    println!("A over TLS: {ra:?}");
    assert_eq!(ra.errors, Vec::<String>::new());
    assert_eq!(
        (ra.docs_sent, ra.blobs_uploaded),
        (2, 2),
        "workout + profile"
    );
    {
        let st = server.state.lock().unwrap();
        assert_eq!(st.docs[&doc_id].get_heads(), heads(&a, &doc_id));
        assert_eq!(st.blobs.len(), 2);
        assert_eq!(st.ws_links, 1);
    }
    // Kept under the server's key, as for a plain server.
    assert!(a
        .sync_state(&format!("localhost:{port}"), &doc_id)
        .unwrap()
        .is_some());
    // Both connections (the kept-alive HTTP one and the WebSocket) were TLS, named localhost.
    assert_eq!(server.front.handshakes.load(Ordering::SeqCst), 2);
    assert_eq!(server.front.refused.load(Ordering::SeqCst), 0);
    assert_eq!(
        *server.front.sni.lock().unwrap(),
        [Some("localhost".to_string()), Some("localhost".to_string())]
    );

    // B by IP address over wss://: the certificate is checked against 127.0.0.1 (and no SNI is
    // sent for an address).
    let b = device();
    let wss = tls_config(&format!("wss://127.0.0.1:{port}"), Some(&ca.pem));
    let rb = sync_once(&b, &wss, &clock).await.unwrap();
    println!("B over TLS: {rb:?}");
    assert_eq!(rb.errors, Vec::<String>::new());
    assert_eq!((rb.workouts_added, rb.blobs_downloaded), (1, 2));
    assert_eq!(heads(&b, &doc_id), heads(&a, &doc_id));
    assert_eq!(
        b.summary(&workout).unwrap().title.as_deref(),
        Some("Lake loop")
    );
    assert_eq!(a.samples(&workout).unwrap(), b.samples(&workout).unwrap());
    assert_eq!(server.front.handshakes.load(Ordering::SeqCst), 4);
    assert_eq!(server.front.sni.lock().unwrap()[2..], [None, None]);

    // The outbox goes the same way.
    let cmd = a
        .outbox_enqueue("POST", "/api/v1/kudos", Some("{}"), clock.now())
        .unwrap();
    let r = outbox_flush(&a, &https, &clock).await.unwrap();
    assert_eq!((r.sent, r.failed, r.pending), (1, 0, 0));
    let seen = server.state.lock().unwrap().commands.clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].2, cmd.idempotency_key);
}

#[tokio::test]
async fn a_server_whose_ca_is_not_trusted_is_refused_and_nothing_is_synced() {
    let ca = TestCa::new("FitEdge test CA");
    let stranger = TestCa::new("Another CA");
    let server = start_tls_server(&[&ca]).await;
    let port = server.port;
    let clock = now();
    let a = device();
    let workout = record_workout(&a, T0, 3);
    a.outbox_enqueue("POST", "/api/v1/kudos", Some("{}"), clock.now())
        .unwrap();

    // Mozilla's roots alone, or with another CA added: the test CA is unknown either way.
    for (url, pem) in [
        (format!("https://localhost:{port}"), None),
        (format!("wss://127.0.0.1:{port}"), None),
        (
            format!("https://localhost:{port}"),
            Some(stranger.pem.as_str()),
        ),
    ] {
        let err = sync_once(&a, &tls_config(&url, pem), &clock)
            .await
            .unwrap_err();
        let m = network_message(err);
        println!("{url}: {m}");
        let authority = url.split("://").nth(1).unwrap();
        assert!(
            m.contains(&format!("TLS handshake with {authority} failed"))
                && m.contains("UnknownIssuer"),
            "{m}"
        );
    }
    let r = outbox_flush(
        &a,
        &tls_config(&format!("https://localhost:{port}"), None),
        &clock,
    )
    .await
    .unwrap();
    assert_eq!((r.sent, r.failed, r.pending), (0, 0, 1));
    let cmd = &a.outbox_list().unwrap()[0];
    assert_eq!(cmd.status, OutboxStatus::Pending);
    assert!(
        cmd.last_error
            .as_deref()
            .is_some_and(|e| e.contains("UnknownIssuer")),
        "{cmd:?}"
    );

    // Nothing went over: no request reached the responder, nothing is kept as synced.
    settle(&server.front.refused, 4).await;
    assert_eq!(server.front.handshakes.load(Ordering::SeqCst), 0);
    {
        let st = server.state.lock().unwrap();
        assert!(st.docs.is_empty() && st.blobs.is_empty() && st.commands.is_empty());
        assert_eq!(st.ws_links, 0);
    }
    for key in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        for d in a.documents().unwrap() {
            let id: DocumentId = d.doc_id.parse().unwrap();
            assert!(a.sync_state(&key, &id).unwrap().is_none());
        }
    }

    // With the right root the same device then sends everything: nothing had been marked as
    // sent or uploaded by the refused rounds.
    let ok = tls_config(&format!("https://localhost:{port}"), Some(&ca.pem));
    let r = sync_once(&a, &ok, &clock).await.unwrap();
    assert_eq!((r.docs_sent, r.blobs_uploaded), (2, 2), "{r:?}");
    let doc_id = a.workout_document_id(&workout).unwrap();
    assert_eq!(
        server.state.lock().unwrap().docs[&doc_id].get_heads(),
        heads(&a, &doc_id)
    );
}

/// A trusted CA is not enough: the certificate must name the host asked for (what stops a
/// machine in the middle that holds any certificate from that CA).
#[tokio::test]
async fn a_trusted_certificate_for_another_name_is_refused() {
    let ca = TestCa::with_leaf_for("FitEdge test CA", &["other.example"]);
    let server = start_tls_server(&[&ca]).await;
    let clock = now();
    let a = device();
    record_workout(&a, T0, 3);
    let url = format!("https://localhost:{}", server.port);
    let err = sync_once(&a, &tls_config(&url, Some(&ca.pem)), &clock)
        .await
        .unwrap_err();
    let m = network_message(err);
    println!("{url}: {m}");
    assert!(
        m.contains("TLS handshake with localhost")
            && m.contains("not valid for name \"localhost\""),
        "{m}"
    );
    assert_eq!(server.front.handshakes.load(Ordering::SeqCst), 0);
    assert!(
        server.state.lock().unwrap().docs.is_empty(),
        "nothing synced"
    );
}

#[tokio::test]
async fn the_websocket_checks_the_certificate_too() {
    // The first connection (the HTTP requests) shows the trusted certificate; every later one
    // (the WebSocket) a certificate for the same names from a CA the device does not trust.
    let ca = TestCa::new("FitEdge test CA");
    let impostor = TestCa::new("Impostor CA");
    let server = start_tls_server(&[&ca, &impostor]).await;
    let clock = now();
    let a = device();
    record_workout(&a, T0, 3);
    let https = tls_config(&format!("https://localhost:{}", server.port), Some(&ca.pem));
    let m = network_message(sync_once(&a, &https, &clock).await.unwrap_err());
    println!("{m}");
    assert!(m.contains("UnknownIssuer"), "{m}");
    settle(&server.front.refused, 1).await;
    assert_eq!(server.front.handshakes.load(Ordering::SeqCst), 1);
    let st = server.state.lock().unwrap();
    // The blobs went over the verified HTTP connection; no document went anywhere.
    assert_eq!(st.blobs.len(), 2);
    assert_eq!((st.ws_links, st.docs.len()), (0, 0));
    let key = format!("localhost:{}", server.port);
    for d in a.documents().unwrap() {
        let id: DocumentId = d.doc_id.parse().unwrap();
        assert!(a.sync_state(&key, &id).unwrap().is_none());
    }
}

#[tokio::test]
async fn an_extra_root_that_is_not_a_certificate_is_a_configuration_error() {
    let ca = TestCa::new("FitEdge test CA");
    let server = start_tls_server(&[&ca]).await;
    let clock = now();
    let a = device();
    record_workout(&a, T0, 2);
    a.outbox_enqueue("POST", "/api/v1/kudos", Some("{}"), clock.now())
        .unwrap();
    // The CA certificate cut after its first lines: still PEM and base64, no longer a
    // certificate.
    let lines: Vec<&str> = ca.pem.lines().collect();
    let cut = format!("{}\n-----END CERTIFICATE-----\n", lines[..4].join("\n"));
    let key = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";
    let urls = [
        format!("https://localhost:{}", server.port),
        server.plain_url.clone(),
    ];
    for pem in ["", "not a certificate", key, cut.as_str()] {
        for url in &urls {
            let c = tls_config(url, Some(pem));
            for r in [
                sync_once(&a, &c, &clock).await.map(|_| ()),
                outbox_flush(&a, &c, &clock).await.map(|_| ()),
            ] {
                match r {
                    Err(SyncError::Config(m)) => assert!(m.contains("extra_root_pem"), "{m}"),
                    other => panic!("{url} with {pem:?}: {other:?}"),
                }
            }
        }
    }
    // Refused before any connection was made, to either listener.
    assert_eq!(server.front.accepted.load(Ordering::SeqCst), 0);
    let st = server.state.lock().unwrap();
    assert!(st.commands.is_empty() && st.blobs.is_empty() && st.docs.is_empty());
    assert_eq!(a.outbox_list().unwrap()[0].attempts, 0);
}
